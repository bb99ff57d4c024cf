// Helpers shared by the non-matmul ops (elementwise, norms, layout, conv): dtype checks,
// uniform packing, the subgroup/workgroup choice for reductions, binding-size checks.
import type { GpuDevice } from '../../devices/gpu-device.ts';
import { ShaderCompileError } from '../pipelines.ts';
import type { KernelRecorder } from '../recorder.ts';
import type { ShaderDefines, ShaderName } from '../shaders.ts';
import type { GpuDtype, GpuTensor } from '../tensor.ts';

/** Threads per workgroup of every elementwise and reduction kernel here (WebGPU's guaranteed minimum is 256). */
export const WORKGROUP_SIZE = 256;

/** Activations travel as f32, or as f16 on devices with shader-f16. */
export type ActivationDtype = 'f32' | 'f16';

/** Weights (norm gains, embedding tables, conv filters, biases) are read in their stored form. */
export type WeightDtype = 'f32' | 'f16' | 'bf16';

export const WEIGHT_DTYPES: readonly WeightDtype[] = ['f32', 'f16', 'bf16'];

/** Checks that every tensor has the same activation dtype (f32, or f16 with shader-f16) and returns it. */
export function activationDtype(op: string, gpu: GpuDevice, ...tensors: readonly GpuTensor[]): ActivationDtype {
  const dtype = tensors[0]!.dtype;
  for (const t of tensors) {
    if (t.dtype !== dtype || (dtype !== 'f32' && dtype !== 'f16')) {
      throw new RangeError(`${op}: activations must all be f32 or all f16, got ${tensors.map((x) => x.dtype).join(', ')}`);
    }
    if (t.gpu !== gpu) throw new RangeError(`${op}: every tensor must live on ${gpu.name} (one is on ${t.gpu.name})`);
  }
  if (dtype === 'f16' && !gpu.hasFeature('shader-f16')) {
    throw new RangeError(`${op}: f16 activations need shader-f16, which ${gpu.name} (${gpu.adapterName}) lacks; use f32`);
  }
  return dtype as ActivationDtype;
}

/** Defines that pick how a kernel decodes a weight binding (`array<u32>`: f32 bits, or two f16/bf16 halves per word). */
export function weightDefines(op: string, prefix: string, weight: GpuTensor | null | undefined): Record<string, boolean> {
  const dtype = weight?.dtype ?? 'f32';
  if (!(WEIGHT_DTYPES as readonly GpuDtype[]).includes(dtype)) {
    throw new RangeError(`${op}: weights must be stored as ${WEIGHT_DTYPES.join(', ')}, not ${dtype}`);
  }
  return { [`${prefix}_F16`]: dtype === 'f16', [`${prefix}_BF16`]: dtype === 'bf16' };
}

/** A tensor's shape as `[rows, last]` (rows = product of the leading dimensions). */
export function rowsOf(t: GpuTensor): { rows: number; cols: number } {
  const cols = t.shape[t.shape.length - 1] ?? 1;
  return { rows: cols === 0 ? 0 : t.elements / cols, cols };
}

export function sameShape(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}

export function expectShape(op: string, what: string, t: GpuTensor, shape: readonly number[]): void {
  if (!sameShape(t.shape, shape)) throw new RangeError(`${op}: ${what} must have shape [${shape.join(', ')}], got [${t.shape.join(', ')}]`);
}

/** Workgroups for one thread per item. */
export function groupsFor(items: number, perGroup = WORKGROUP_SIZE): number {
  return Math.ceil(items / perGroup);
}

/** Every index a kernel computes is a u32. */
export function checkU32(op: string, what: string, value: number): void {
  if (!Number.isInteger(value) || value < 0 || value > 0xffffffff) throw new RangeError(`${op}: ${what} = ${value} does not fit a u32 index`);
}

/** Whole-buffer bindings must fit maxStorageBufferBindingSize; ops that can split (embedding, copy) do, the others say so. */
export function checkBindable(op: string, rec: KernelRecorder, ...tensors: readonly GpuTensor[]): void {
  const limit = rec.limits.maxStorageBufferBindingSize;
  for (const t of tensors) {
    if (t.buffer.size > limit) {
      throw new RangeError(`${op}: a ${t.buffer.size}-byte tensor is larger than one binding (${limit} bytes) on ${t.gpu.name}; split it first`);
    }
  }
}

/** Packs a kernel's uniform struct: u32, i32 and f32 fields of 4 bytes each, in declaration order. */
export class Uniforms {
  readonly #view: DataView;
  #offset = 0;

  constructor(fields: number) {
    this.#view = new DataView(new ArrayBuffer(Math.max(16, Math.ceil((fields * 4) / 16) * 16)));
  }

  u32(...values: number[]): this {
    for (const v of values) {
      if (!Number.isInteger(v) || v < 0 || v > 0xffffffff) throw new RangeError(`uniform u32 out of range: ${v}`);
      this.#view.setUint32(this.#offset, v, true);
      this.#offset += 4;
    }
    return this;
  }

  i32(...values: number[]): this {
    for (const v of values) {
      if (!Number.isInteger(v) || v < -0x80000000 || v > 0x7fffffff) throw new RangeError(`uniform i32 out of range: ${v}`);
      this.#view.setInt32(this.#offset, v, true);
      this.#offset += 4;
    }
    return this;
  }

  f32(...values: number[]): this {
    for (const v of values) {
      this.#view.setFloat32(this.#offset, v, true);
      this.#offset += 4;
    }
    return this;
  }

  get bytes(): Uint8Array {
    return new Uint8Array(this.#view.buffer);
  }
}

/** How a reduction kernel combines a workgroup's partial sums. */
export interface ReductionOptions {
  /**
   * true: subgroupAdd, then one partial per subgroup (needs the `subgroups` feature and
   * WGSL's subgroup_id builtin); false: a tree in workgroup memory. Default: subgroups where
   * the device compiles them, else the tree.
   */
  readonly subgroups?: boolean;
}

const subgroupSupport = new WeakMap<GPUDevice, Map<string, boolean>>();

/**
 * The pipeline of a reduction kernel, with `SUBGROUPS` set as asked, or (not asked) to the
 * subgroup variant where this device compiles it: the first compile failure is remembered
 * per device and shader, and the workgroup-memory variant is used from then on.
 */
export async function reductionPipeline(rec: KernelRecorder, shader: ShaderName, defines: ShaderDefines,
  options: ReductionOptions): Promise<GPUComputePipeline> {
  const gpu = rec.gpu;
  if (options.subgroups === false || !gpu.hasFeature('subgroups')) {
    if (options.subgroups === true) throw new RangeError(`${shader}: subgroups were asked for, but ${gpu.name} (${gpu.adapterName}) lacks the subgroups feature`);
    return rec.pipeline(shader, { ...defines, SUBGROUPS: false });
  }
  if (options.subgroups === true) return rec.pipeline(shader, { ...defines, SUBGROUPS: true });
  let known = subgroupSupport.get(gpu.device);
  if (!known) subgroupSupport.set(gpu.device, (known = new Map()));
  if (known.get(shader) !== false) {
    try {
      const pipeline = await rec.pipeline(shader, { ...defines, SUBGROUPS: true });
      known.set(shader, true);
      return pipeline;
    } catch (error) {
      if (!(error instanceof ShaderCompileError)) throw error;
      known.set(shader, false);
    }
  }
  return rec.pipeline(shader, { ...defines, SUBGROUPS: false });
}
