import type { KernelRecorder } from '../recorder.ts';
import type { GpuTensor } from '../tensor.ts';
import { activationDtype, checkBindable, groupsFor, Uniforms, WORKGROUP_SIZE } from './elementwise-common.ts';

/** out = x * s + b with scalars s and b (f32 arithmetic; x and out f32, or f16 with shader-f16). */
export async function scale(rec: KernelRecorder, x: GpuTensor, out: GpuTensor, s: number, b = 0): Promise<void> {
  const dtype = activationDtype('scale', rec.gpu, x, out);
  if (x.elements !== out.elements) throw new RangeError(`scale: x has ${x.elements} elements, out ${out.elements}`);
  checkBindable('scale', rec, x, out);
  const n = out.elements;
  if (n === 0) return;
  const pipeline = await rec.pipeline('scale', { F16: dtype === 'f16', WORKGROUP_SIZE });
  rec.dispatch(pipeline, [x.buffer, out.buffer], new Uniforms(3).u32(n).f32(s, b).bytes, groupsFor(n), `scale ${dtype}`);
}
