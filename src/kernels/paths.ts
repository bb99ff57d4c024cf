import type { GpuDevice } from '../devices/gpu-device.ts';

/**
 * The three ways matmul and attention can run, best last: f32 is always there (the
 * reference, and all SwiftShader has); f16 needs shader-f16; subgroup-matrix (tensor cores:
 * f16 16×16 operands, f32 accumulation, subgroup size 32) needs Dawn's
 * chromium-experimental-subgroup-matrix.
 */
export type KernelPath = 'f32' | 'f16' | 'subgroup-matrix';

export interface PathSupport {
  readonly f16: boolean;
  readonly subgroups: boolean;
  readonly subgroupMatrix: boolean;
}

export function pathSupport(gpu: GpuDevice): PathSupport {
  const f16 = gpu.hasFeature('shader-f16');
  const subgroups = gpu.hasFeature('subgroups');
  return { f16, subgroups, subgroupMatrix: f16 && subgroups && gpu.hasFeature('chromium-experimental-subgroup-matrix') };
}

/** The fastest path the device offers, unless the caller asks for a slower one. */
export function bestPath(gpu: GpuDevice, wanted?: KernelPath): KernelPath {
  const s = pathSupport(gpu);
  if (wanted === 'f32') return 'f32';
  if (wanted === 'f16') return s.f16 ? 'f16' : 'f32';
  return s.subgroupMatrix ? 'subgroup-matrix' : s.f16 ? 'f16' : 'f32';
}
