import { MultiGpuError } from '../errors.ts';
import type { GpuDevice } from '../devices/gpu-device.ts';
import { kernelSource, type ShaderDefines, type ShaderName } from './shaders.ts';

export class ShaderCompileError extends MultiGpuError {
  constructor(device: string, shader: string, detail: string) {
    super('E_SHADER_COMPILE', `${device}: shaders/${shader}.wgsl failed to compile: ${detail}`, {
      hint: 'a kernel variant this device cannot build (e.g. f16 without shader-f16); this is a bug if it was chosen automatically',
    });
  }
}

/** Pipelines are built once per device and variant; compiling WGSL is slow. */
const caches = new WeakMap<GPUDevice, Map<string, Promise<GPUComputePipeline>>>();

export function computePipeline(gpu: GpuDevice, shader: ShaderName, defines: ShaderDefines): Promise<GPUComputePipeline> {
  let cache = caches.get(gpu.device);
  if (!cache) caches.set(gpu.device, (cache = new Map()));
  // Call sites build their defines in a fixed order, so the keys' order needs no sorting (an
  // unsorted duplicate would only compile twice); this runs for every dispatch.
  let key: string = shader;
  for (const name in defines) key += `|${name}=${String(defines[name])}`;
  let pipeline = cache.get(key);
  if (!pipeline) {
    pipeline = buildPipeline(gpu, shader, defines);
    cache.set(key, pipeline);
    pipeline.catch(() => cache.delete(key));
  }
  return pipeline;
}

async function buildPipeline(gpu: GpuDevice, shader: ShaderName, defines: ShaderDefines): Promise<GPUComputePipeline> {
  const device = gpu.device;
  const code = kernelSource(shader, defines);
  device.pushErrorScope('validation');
  const module = device.createShaderModule({ label: shader, code });
  const info = await module.getCompilationInfo();
  const errors = info.messages.filter((m) => m.type === 'error');
  if (errors.length > 0) {
    await device.popErrorScope();
    throw new ShaderCompileError(gpu.name, shader, errors.map((m) => `${m.lineNum}:${m.linePos} ${m.message}`).join('; '));
  }
  try {
    return await device.createComputePipelineAsync({ label: shader, layout: 'auto', compute: { module, entryPoint: 'main' } });
  } catch (error) {
    throw new ShaderCompileError(gpu.name, shader, String((error as Error).message ?? error));
  } finally {
    await device.popErrorScope();
  }
}

/** Free the compiled pipelines of a device (freeAll, device loss). */
export function dropPipelines(gpu: GpuDevice): void {
  caches.delete(gpu.device);
}
