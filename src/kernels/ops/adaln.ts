import type { KernelRecorder } from '../recorder.ts';
import type { GpuTensor } from '../tensor.ts';
import { activationDtype, checkBindable, expectShape, groupsFor, rowsOf, Uniforms, WORKGROUP_SIZE } from './elementwise-common.ts';

/**
 * A per-batch vector inside a modulation tensor: batch b's vector is
 * tensor[b * stride + offset + c] for c < cols. FLUX's AdaLayerNormZero projects the conditioning
 * to [B, 6 * D] and chunks it: shift_msa is { offset: 0, stride: 6 * D }, scale_msa
 * { offset: D, stride: 6 * D }, gate_msa { offset: 2 * D, stride: 6 * D }, ...
 */
export interface VectorSlice {
  readonly tensor: GpuTensor;
  /** Elements before batch 0's vector (default 0). */
  readonly offset?: number;
  /** Elements between consecutive batches' vectors (default: cols, i.e. a [B, cols] tensor). */
  readonly stride?: number;
}

export interface ModulationOptions {
  /** Rows of x (its leading dimensions flattened) per batch row of the vectors; default: x.shape[0] batches. */
  readonly rowsPerBatch?: number;
}

/** The uniforms' view of a slice, checked against its tensor. */
export function resolveSlice(op: string, what: string, slice: VectorSlice, cols: number, batches: number): { offset: number; stride: number } {
  const offset = slice.offset ?? 0;
  const stride = slice.stride ?? cols;
  if (!Number.isInteger(offset) || !Number.isInteger(stride) || offset < 0 || stride < 0) {
    throw new RangeError(`${op}: ${what} offset ${offset} and stride ${stride} must be non-negative integers`);
  }
  const end = (batches - 1) * stride + offset + cols;
  if (end > slice.tensor.elements) {
    throw new RangeError(`${op}: ${what} reads up to element ${end} of a ${slice.tensor.elements}-element tensor (${batches} batches, offset ${offset}, stride ${stride}, ${cols} columns)`);
  }
  return { offset, stride };
}

/** rows per batch, batches: from the option, else x's first dimension. */
export function batchesOf(op: string, x: GpuTensor, rows: number, options: ModulationOptions): { rowsPerBatch: number; batches: number } {
  const rowsPerBatch = options.rowsPerBatch ?? (x.shape.length >= 3 ? rows / x.shape[0]! : rows);
  if (!Number.isInteger(rowsPerBatch) || rowsPerBatch < 1 || rows % rowsPerBatch !== 0) {
    throw new RangeError(`${op}: rowsPerBatch ${rowsPerBatch} does not divide the ${rows} rows of x`);
  }
  return { rowsPerBatch, batches: rows / rowsPerBatch };
}

/**
 * AdaLN modulation: out = x * (1 + scale[batch]) + shift[batch] over x's last dimension, one
 * vector pair per batch (FLUX's norm layers after their LayerNorm; layerNorm can also fuse it).
 * All tensors in one activation dtype (f32, or f16 with shader-f16).
 */
export async function adaLNModulate(rec: KernelRecorder, x: GpuTensor, shift: VectorSlice, scale: VectorSlice, out: GpuTensor,
  options: ModulationOptions = {}): Promise<void> {
  const op = 'adaln';
  const dtype = activationDtype(op, rec.gpu, x, out, shift.tensor, scale.tensor);
  expectShape(op, 'out', out, x.shape);
  checkBindable(op, rec, x, out, shift.tensor, scale.tensor);
  const { rows, cols } = rowsOf(x);
  if (rows === 0 || cols === 0) return;
  const { rowsPerBatch, batches } = batchesOf(op, x, rows, options);
  const a = resolveSlice(op, 'shift', shift, cols, batches);
  const b = resolveSlice(op, 'scale', scale, cols, batches);
  const n = x.elements;
  const pipeline = await rec.pipeline('adaln', { F16: dtype === 'f16', GATED: false, WORKGROUP_SIZE });
  const u = new Uniforms(7).u32(n, cols, rowsPerBatch, a.offset, a.stride, b.offset, b.stride);
  rec.dispatch(pipeline, [x.buffer, shift.tensor.buffer, scale.tensor.buffer, out.buffer], u.bytes, groupsFor(n), `${op} ${dtype}`);
}

/**
 * Gated residual: out = x + gate[batch] * y over the last dimension (FLUX's
 * `hidden_states + gate_msa.unsqueeze(1) * attn_output`). out may not be x or y (WebGPU forbids a
 * buffer bound for reading and writing at once).
 */
export async function gatedResidual(rec: KernelRecorder, x: GpuTensor, y: GpuTensor, gate: VectorSlice, out: GpuTensor,
  options: ModulationOptions = {}): Promise<void> {
  const op = 'gated_residual';
  const dtype = activationDtype(op, rec.gpu, x, y, out, gate.tensor);
  expectShape(op, 'y', y, x.shape);
  expectShape(op, 'out', out, x.shape);
  checkBindable(op, rec, x, y, out, gate.tensor);
  const { rows, cols } = rowsOf(x);
  if (rows === 0 || cols === 0) return;
  const { rowsPerBatch, batches } = batchesOf(op, x, rows, options);
  const a = resolveSlice(op, 'gate', gate, cols, batches);
  const n = x.elements;
  const pipeline = await rec.pipeline('adaln', { F16: dtype === 'f16', GATED: true, WORKGROUP_SIZE });
  const u = new Uniforms(7).u32(n, cols, rowsPerBatch, a.offset, a.stride, 0, 0);
  rec.dispatch(pipeline, [x.buffer, y.buffer, gate.tensor.buffer, out.buffer], u.bytes, groupsFor(n), `${op} ${dtype}`);
}
