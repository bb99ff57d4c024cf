import type { KernelRecorder } from '../recorder.ts';
import { GPU_DTYPE_LAYOUT, type GpuTensor } from '../tensor.ts';
import { checkBindable, groupsFor, Uniforms, WORKGROUP_SIZE } from './elementwise-common.ts';

/**
 * Whether elements of this dtype move as u32 bits (4-byte dtypes) or through f16 (f16
 * activations, with shader-f16). Layout ops copy bits; they never convert.
 */
export function layoutElement(op: string, rec: KernelRecorder, dtype: GpuTensor['dtype']): { HALF: boolean } {
  const { blockElements, blockBytes } = GPU_DTYPE_LAYOUT[dtype];
  if (blockElements === 1 && blockBytes === 4) return { HALF: false };
  if (dtype === 'f16') {
    if (!rec.gpu.hasFeature('shader-f16')) throw new RangeError(`${op}: f16 tensors need shader-f16, which ${rec.gpu.name} lacks (copyBytes moves any bytes)`);
    return { HALF: true };
  }
  throw new RangeError(`${op}: moves 4-byte elements (f32, i32, u32) and f16, not ${dtype}; copyBytes moves any bytes`);
}

/**
 * Concatenates tensors along `axis` (negative counts from the end) into out: FLUX's text +
 * image tokens, the UNet's skip connections along channels. Every input has out's shape except
 * along the axis and out's dtype (f32, i32, u32, or f16 with shader-f16). One dispatch per input.
 */
export async function concat(rec: KernelRecorder, inputs: readonly GpuTensor[], out: GpuTensor, axis: number): Promise<void> {
  const op = 'concat';
  const rank = out.shape.length;
  const ax = axis < 0 ? axis + rank : axis;
  if (!Number.isInteger(ax) || ax < 0 || ax >= rank) throw new RangeError(`${op}: axis ${axis} is outside a rank-${rank} tensor`);
  const defines = layoutElement(op, rec, out.dtype);
  let along = 0;
  for (const t of inputs) {
    if (t.dtype !== out.dtype) throw new RangeError(`${op}: an input is ${t.dtype}, out is ${out.dtype}`);
    if (t.shape.length !== rank || t.shape.some((d, k) => k !== ax && d !== out.shape[k])) {
      throw new RangeError(`${op}: input [${t.shape.join(', ')}] does not match out [${out.shape.join(', ')}] outside axis ${ax}`);
    }
    along += t.shape[ax]!;
  }
  if (along !== out.shape[ax]) throw new RangeError(`${op}: the inputs add up to ${along} along axis ${ax}, out has ${out.shape[ax]}`);
  checkBindable(op, rec, out, ...inputs);
  const inner = out.shape.slice(ax + 1).reduce((a, b) => a * b, 1);
  const outRow = out.shape[ax]! * inner;
  const pipeline = await rec.pipeline('concat', { ...defines, SLICE: false, WORKGROUP_SIZE });
  let offset = 0;
  for (const t of inputs) {
    const n = t.elements;
    const inRow = t.shape[ax]! * inner;
    if (n > 0) rec.dispatch(pipeline, [t.buffer, out.buffer], new Uniforms(4).u32(n, inRow, outRow, offset).bytes, groupsFor(n), `${op} ${out.dtype}`);
    offset += inRow;
  }
}

/**
 * The inverse of one concat input: out = x[..., start : start + out.shape[axis], ...] along
 * `axis` (negative counts from the end); one dispatch, whatever the axis.
 */
export async function sliceAlong(rec: KernelRecorder, x: GpuTensor, out: GpuTensor, axis: number, start: number): Promise<void> {
  const op = 'slice';
  const rank = x.shape.length;
  const ax = axis < 0 ? axis + rank : axis;
  if (!Number.isInteger(ax) || ax < 0 || ax >= rank) throw new RangeError(`${op}: axis ${axis} is outside a rank-${rank} tensor`);
  if (out.dtype !== x.dtype) throw new RangeError(`${op}: out is ${out.dtype}, x is ${x.dtype}`);
  const length = out.shape[ax] ?? 0;
  if (out.shape.length !== rank || out.shape.some((d, k) => k !== ax && d !== x.shape[k]) || !Number.isInteger(start) || start < 0 || start + length > x.shape[ax]!) {
    throw new RangeError(`${op}: out [${out.shape.join(', ')}] is not a slice of x [${x.shape.join(', ')}] from ${start} along axis ${ax}`);
  }
  const defines = layoutElement(op, rec, x.dtype);
  checkBindable(op, rec, x, out);
  const inner = x.shape.slice(ax + 1).reduce((a, b) => a * b, 1);
  const n = out.elements;
  if (n === 0) return;
  const pipeline = await rec.pipeline('concat', { ...defines, SLICE: true, WORKGROUP_SIZE });
  rec.dispatch(pipeline, [x.buffer, out.buffer], new Uniforms(4).u32(n, x.shape[ax]! * inner, length * inner, start * inner).bytes, groupsFor(n), `${op} ${x.dtype}`);
}
