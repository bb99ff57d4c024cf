import type { KernelPath } from '../paths.ts';
import type { GpuDtype } from '../tensor.ts';

/** What the registry (and docs/ops.md) says about one op. */
export interface OpSpec {
  /** As the model runners call it: 'linear', 'rms_norm', 'attention', ... */
  readonly name: string;
  readonly summary: string;
  /** shaders/<file>.wgsl that implement it. */
  readonly shaders: readonly string[];
  /** Weight layouts read in their stored form (ops with weights only). */
  readonly weightDtypes?: readonly GpuDtype[];
  /** Activation paths it has (f32 always). */
  readonly paths: readonly KernelPath[];
  /** Variants the tests force on one by one (subgroups off, each tile size, ...). */
  readonly variants: readonly string[];
  /** The CPU reference it is tested against: src/kernels/reference/<file>.ts#<export>. */
  readonly reference: string;
}
