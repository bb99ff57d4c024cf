import { DEFAULT_COST_MODEL, type CostModel } from '../allocation/cost-model.ts';
import type { CpuKernels } from '../cpu/kernels.ts';
import type { DeviceSet } from '../devices/device-set.ts';
import type { GpuDevice } from '../devices/gpu-device.ts';
import { linear } from '../kernels/ops/matmul.ts';
import { KernelRecorder } from '../kernels/recorder.ts';
import { emptyTensor } from '../kernels/tensor.ts';

/**
 * The figures auto mode decides with, measured on this machine once per device set: the
 * host-visible → GPU copy rate (what a streamed block pays), the GPU → GPU rate through the
 * host, f32 linear throughput of the compute GPU and of the cpu device, and the cost of a hop.
 */
export interface MeasuredCostModel extends CostModel {
  readonly measured: true;
  readonly compute: string;
}

const cache = new WeakMap<DeviceSet, Map<string, Promise<MeasuredCostModel>>>();

async function time(fn: () => Promise<void>, repeats: number): Promise<number> {
  await fn(); // warm: pipelines compiled, buffers touched
  const t0 = performance.now();
  for (let i = 0; i < repeats; i++) await fn();
  return (performance.now() - t0) / 1000 / repeats;
}

async function hostToGpu(gpu: GpuDevice, bytes: number): Promise<number> {
  const src = await gpu.createBuffer({ label: 'measure.host', size: bytes, usage: GPUBufferUsage.MAP_WRITE | GPUBufferUsage.COPY_SRC, mappedAtCreation: true });
  src.buffer.unmap();
  const dst = await gpu.createBuffer({ label: 'measure.device', size: bytes, usage: GPUBufferUsage.COPY_DST });
  try {
    const s = await time(async () => {
      const e = gpu.device.createCommandEncoder();
      e.copyBufferToBuffer(src.buffer, 0, dst.buffer, 0, bytes);
      gpu.device.queue.submit([e.finish()]);
      await gpu.device.queue.onSubmittedWorkDone();
    }, 3);
    return bytes / s;
  } finally {
    src.destroy();
    dst.destroy();
  }
}

async function gpuFlops(gpu: GpuDevice, m: number, n: number, k: number): Promise<number> {
  const x = await emptyTensor(gpu, [m, k], 'f32', 'measure.x');
  const w = await emptyTensor(gpu, [n, k], 'f32', 'measure.w');
  const out = await emptyTensor(gpu, [m, n], 'f32', 'measure.out');
  try {
    const s = await time(async () => {
      const rec = new KernelRecorder(gpu);
      await linear(rec, x, w, null, out);
      await rec.submit();
      await gpu.device.queue.onSubmittedWorkDone();
    }, 2);
    return (2 * m * n * k) / s;
  } finally {
    x.destroy();
    w.destroy();
    out.destroy();
  }
}

async function cpuFlops(kernels: CpuKernels, m: number, n: number, k: number): Promise<number> {
  const w = await kernels.loadWeight(new Float32Array(n * k).fill(0.5), [n, k], 'f32', { label: 'measure.w' });
  const x = new Float32Array(m * k).fill(1);
  try {
    const s = await time(async () => {
      await kernels.linear(x, m, w);
    }, 2);
    return (2 * m * n * k) / s;
  } finally {
    await kernels.freeWeight(w);
  }
}

async function hop(gpu: GpuDevice): Promise<number> {
  return time(async () => {
    gpu.device.queue.submit([gpu.device.createCommandEncoder().finish()]);
    await gpu.device.queue.onSubmittedWorkDone();
  }, 5);
}

async function gpuToGpu(from: GpuDevice, to: GpuDevice, bytes: number): Promise<number> {
  const src = await from.createBuffer({ label: 'measure.src', size: bytes, usage: GPUBufferUsage.COPY_SRC | GPUBufferUsage.STORAGE });
  const read = await from.createBuffer({ label: 'measure.read', size: bytes, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
  const dst = await to.createBuffer({ label: 'measure.dst', size: bytes, usage: GPUBufferUsage.COPY_DST | GPUBufferUsage.STORAGE });
  try {
    const s = await time(async () => {
      const e = from.device.createCommandEncoder();
      e.copyBufferToBuffer(src.buffer, 0, read.buffer, 0, bytes);
      from.device.queue.submit([e.finish()]);
      await read.buffer.mapAsync(GPUMapMode.READ);
      const data = new Uint8Array(read.buffer.getMappedRange()).slice();
      read.buffer.unmap();
      to.device.queue.writeBuffer(dst.buffer, 0, data);
      await to.device.queue.onSubmittedWorkDone();
    }, 2);
    return bytes / s;
  } finally {
    src.destroy();
    read.destroy();
    dst.destroy();
  }
}

/** Measures (once per device set and compute device) what auto mode weighs; a few hundred ms, mostly compiling one kernel. */
export function measuredCostModel(devices: DeviceSet, compute: string, kernels: () => Promise<CpuKernels>, tokensPerPass = DEFAULT_COST_MODEL.tokensPerPass): Promise<MeasuredCostModel> {
  let perSet = cache.get(devices);
  if (!perSet) cache.set(devices, (perSet = new Map()));
  const key = `${compute}/${tokensPerPass}`;
  let m = perSet.get(key);
  if (!m) {
    m = (async () => {
      const gpu = devices.get(compute) as GpuDevice;
      const other = devices.gpus.find((g) => g !== gpu);
      const d = DEFAULT_COST_MODEL;
      // A device declared too small for a probe keeps the written-down figure for it.
      const free = (g: GpuDevice) => g.capacity.bytes - g.ledger.used;
      const probe = (g: GpuDevice) => Math.min(8 << 20, Math.floor(free(g) / 4 / 256) * 256);
      const fits = (g: GpuDevice, bytes: number) => bytes >= 64 << 10 && bytes <= free(g);
      return {
        measured: true as const,
        compute,
        hostToGpuBytesPerSecond: fits(gpu, 2 * probe(gpu)) ? await hostToGpu(gpu, probe(gpu)) : d.hostToGpuBytesPerSecond,
        gpuToGpuBytesPerSecond: other && fits(other, 2 * probe(other)) && fits(gpu, probe(other)) ? await gpuToGpu(other, gpu, probe(other)) : d.gpuToGpuBytesPerSecond,
        gpuFlopsPerSecond: fits(gpu, 4 * (256 * 512 * 2 + 512 * 512) + (64 << 10)) ? await gpuFlops(gpu, 256, 512, 512) : d.gpuFlopsPerSecond,
        cpuFlopsPerSecond: await cpuFlops(await kernels(), 64, 512, 512),
        hopSeconds: await hop(gpu),
        tokensPerPass,
      };
    })();
    perSet.set(key, m);
    m.catch(() => perSet!.delete(key));
  }
  return m;
}
