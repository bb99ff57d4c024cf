import type { GpuDevice, TrackedBuffer } from '../devices/gpu-device.ts';
import { computePipeline } from './pipelines.ts';
import { dispatchGrid } from './grid.ts';

const WORKGROUP_SIZE = 256;

/** out[i] = a[i] + b[i] for i < n, f32. */
export async function addF32(gpu: GpuDevice, a: TrackedBuffer, b: TrackedBuffer, out: TrackedBuffer, n: number): Promise<void> {
  const pipeline = await computePipeline(gpu, 'add', { F16: false, WORKGROUP_SIZE });
  const params = await gpu.createBuffer({ label: 'add.params', size: 16, usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST });
  try {
    gpu.device.queue.writeBuffer(params.buffer, 0, new Uint32Array([n, 0, 0, 0]));
    const bindGroup = gpu.device.createBindGroup({
      layout: pipeline.getBindGroupLayout(0),
      entries: [a, b, out, params].map((t, binding) => ({ binding, resource: { buffer: t.buffer } })),
    });
    const encoder = gpu.device.createCommandEncoder({ label: 'add' });
    const pass = encoder.beginComputePass({ label: 'add' });
    pass.setPipeline(pipeline);
    pass.setBindGroup(0, bindGroup);
    const [x, y] = dispatchGrid(Math.ceil(n / WORKGROUP_SIZE), gpu.limits.maxComputeWorkgroupsPerDimension);
    pass.dispatchWorkgroups(x, y);
    pass.end();
    gpu.device.queue.submit([encoder.finish()]);
    await gpu.device.queue.onSubmittedWorkDone();
  } finally {
    params.destroy();
  }
}
