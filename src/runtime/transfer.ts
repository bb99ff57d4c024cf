import type { GpuDevice, TrackedBuffer } from '../devices/gpu-device.ts';

/** A storage buffer holding `data`, on the device's ledger. */
export async function uploadF32(gpu: GpuDevice, label: string, data: Float32Array, extraUsage = 0): Promise<TrackedBuffer> {
  const tracked = await gpu.createBuffer({
    label,
    size: Math.max(4, data.byteLength),
    usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST | GPUBufferUsage.COPY_SRC | extraUsage,
  });
  gpu.device.queue.writeBuffer(tracked.buffer, 0, data.buffer, data.byteOffset, data.byteLength);
  return tracked;
}

/** Copies `count` floats back to the host through a temporary MAP_READ buffer. */
export async function readF32(gpu: GpuDevice, source: GPUBuffer, count: number): Promise<Float32Array> {
  const bytes = count * 4;
  const staging = await gpu.createBuffer({ label: 'readback', size: Math.max(4, bytes), usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
  try {
    const encoder = gpu.device.createCommandEncoder({ label: 'readback' });
    encoder.copyBufferToBuffer(source, 0, staging.buffer, 0, bytes);
    gpu.device.queue.submit([encoder.finish()]);
    await staging.buffer.mapAsync(GPUMapMode.READ, 0, bytes);
    const out = new Float32Array(staging.buffer.getMappedRange(0, bytes).slice(0));
    staging.buffer.unmap();
    return out;
  } finally {
    staging.destroy();
  }
}
