import type { KernelRecorder } from '../recorder.ts';
import type { GpuTensor } from '../tensor.ts';
import { allFit, bindingBudget, canUseSubgroups, elementBytes, packUniforms, rangeBinding } from './attention-common.ts';

export interface SoftmaxOptions {
  /** softmax(scale · x). Default 1. */
  readonly scale?: number;
  /** false forces the workgroup-memory reductions on devices with subgroups. */
  readonly subgroups?: boolean;
}

/**
 * Row-wise softmax over the last dimension of x (f32 or f16; f32 arithmetic), numerically
 * stable (running max and rescaled sum, then exp(x − max)/sum). `out` may be x itself (in
 * place). A row of −inf (or below −1e30 after scaling) becomes zeros. Rows spread over a
 * 2-D grid past 65,535; tensors larger than a binding are processed in row chunks.
 */
export async function softmax(rec: KernelRecorder, x: GpuTensor, out: GpuTensor = x, options: SoftmaxOptions = {}): Promise<void> {
  const n = x.shape[x.shape.length - 1] ?? 1;
  const rows = n === 0 ? 0 : x.elements / n;
  if (out.elements !== x.elements) throw new RangeError(`softmax: ${x.elements} elements in, ${out.elements} out`);
  if (x.dtype !== out.dtype || (x.dtype !== 'f32' && x.dtype !== 'f16')) throw new RangeError(`softmax: ${x.dtype} → ${out.dtype}; both f32 or both f16`);
  if (x.dtype === 'f16' && !rec.gpu.hasFeature('shader-f16')) throw new RangeError(`softmax: f16 on ${rec.gpu.name}, which lacks shader-f16`);
  if (rows === 0) return;
  const inPlace = out.buffer === x.buffer;
  if (inPlace && out !== x && out.storage !== x.storage) throw new RangeError('softmax: out overlaps x without being x');
  const subgroups = (options.subgroups ?? true) && canUseSubgroups(rec.gpu);
  const pipeline = await rec.pipeline('softmax', { F16: x.dtype === 'f16', SUBGROUPS: subgroups, INPLACE: inPlace });
  const limits = rec.limits;
  const eb = elementBytes(x);
  const per = allFit([x, out], limits) ? rows : Math.floor(bindingBudget(limits) / (n * eb));
  if (per < 1) throw new RangeError(`softmax: one row of ${n} elements is larger than a binding (${limits.maxStorageBufferBindingSize})`);
  for (let r0 = 0; r0 < rows; r0 += per) {
    const rn = Math.min(per, rows - r0);
    const xr = rangeBinding(x, r0 * n, rn * n, limits);
    const or = inPlace ? xr : rangeBinding(out, r0 * n, rn * n, limits);
    const uniforms = packUniforms([rn, n, xr.base, n, or.base, n, { f32: options.scale ?? 1 }, 0]);
    rec.dispatch(pipeline, inPlace ? [xr.binding] : [xr.binding, or.binding], uniforms, rn, 'softmax');
  }
}
