import type { KernelRecorder } from '../recorder.ts';
import type { GpuTensor } from '../tensor.ts';

const WORKGROUP_SIZE = 256;

/**
 * out = a + b, element-wise, in f32 or (with shader-f16) f16 activations. The pattern every
 * op follows: fetch the (cached) pipeline of the variant, record one dispatch with the shape
 * in the uniforms.
 */
export async function add(rec: KernelRecorder, a: GpuTensor, b: GpuTensor, out: GpuTensor): Promise<void> {
  const n = out.elements;
  if (a.elements !== n || b.elements !== n) throw new RangeError(`add: ${a.elements} + ${b.elements} → ${n} elements`);
  if (a.dtype !== out.dtype || b.dtype !== out.dtype || (out.dtype !== 'f32' && out.dtype !== 'f16')) {
    throw new RangeError(`add: ${a.dtype} + ${b.dtype} → ${out.dtype}; all must be f32 or all f16`);
  }
  const pipeline = await rec.pipeline('add', { F16: out.dtype === 'f16', WORKGROUP_SIZE });
  rec.dispatch(pipeline, [a.buffer, b.buffer, out.buffer], new Uint32Array([n]), Math.ceil(n / WORKGROUP_SIZE));
}
