import type { KernelRecorder } from '../recorder.ts';
import type { GpuTensor } from '../tensor.ts';
import { binary } from './binary.ts';

const WORKGROUP_SIZE = 256;

/**
 * out = a + b, element-wise, in f32 or (with shader-f16) f16 activations. The pattern every
 * op follows: fetch the (cached) pipeline of the variant, record one dispatch with the shape
 * in the uniforms. Operands of out's size and dtype take shaders/add.wgsl; anything else
 * (a bias along rows, a per-channel term, b stored as bf16) goes to binary's broadcast kernel.
 */
export async function add(rec: KernelRecorder, a: GpuTensor, b: GpuTensor, out: GpuTensor): Promise<void> {
  const n = out.elements;
  const plain = a.elements === n && b.elements === n && a.dtype === out.dtype && b.dtype === out.dtype;
  if (!plain) return binary(rec, 'add', a, b, out);
  if (out.dtype !== 'f32' && out.dtype !== 'f16') {
    throw new RangeError(`add: ${a.dtype} + ${b.dtype} → ${out.dtype}; all must be f32 or all f16`);
  }
  const pipeline = await rec.pipeline('add', { F16: out.dtype === 'f16', WORKGROUP_SIZE });
  rec.dispatch(pipeline, [a.buffer, b.buffer, out.buffer], new Uint32Array([n]), Math.ceil(n / WORKGROUP_SIZE));
}
