import type { KernelRecorder } from '../recorder.ts';
import type { GpuTensor } from '../tensor.ts';
import { batchesOf, resolveSlice, type VectorSlice } from './adaln.ts';
import {
  activationDtype, checkBindable, expectShape, reductionPipeline, rowsOf, Uniforms, weightDefines, WORKGROUP_SIZE,
  type ReductionOptions,
} from './elementwise-common.ts';

export interface LayerNormOptions extends ReductionOptions {
  readonly eps: number;
  /**
   * AdaLN fused after the norm: out = norm(x) * (1 + scale[batch]) + shift[batch] (FLUX's
   * AdaLayerNormZero / AdaLayerNormContinuous, whose LayerNorm has no weight or bias).
   */
  readonly modulation?: { readonly shift: VectorSlice; readonly scale: VectorSlice; readonly rowsPerBatch?: number };
}

/**
 * LayerNorm over the last dimension (GPT-2, CLIP, FLUX): out = (x - mean) / sqrt(var + eps) *
 * weight + bias, the biased variance computed around the mean (two passes). weight and bias
 * [cols] are optional and stored as f32, f16 or bf16; x and out f32 (or f16 with shader-f16).
 * One workgroup per row.
 */
export async function layerNorm(rec: KernelRecorder, x: GpuTensor, weight: GpuTensor | null, bias: GpuTensor | null, out: GpuTensor,
  options: LayerNormOptions): Promise<void> {
  const op = 'layer_norm' as const;
  const dtype = activationDtype(op, rec.gpu, x, out);
  expectShape(op, 'out', out, x.shape);
  const { rows, cols } = rowsOf(x);
  if (weight) expectShape(op, 'weight', weight, [cols]);
  if (bias) expectShape(op, 'bias', bias, [cols]);
  const mod = options.modulation;
  if (mod) activationDtype(op, rec.gpu, x, mod.shift.tensor, mod.scale.tensor);
  checkBindable(op, rec, x, out, ...[weight, bias, mod?.shift.tensor, mod?.scale.tensor].filter((t): t is GpuTensor => !!t));
  if (rows === 0 || cols === 0) return;
  let rowsPerBatch = rows;
  let shift = { offset: 0, stride: 0 };
  let scale = { offset: 0, stride: 0 };
  if (mod) {
    const b = batchesOf(op, x, rows, mod);
    rowsPerBatch = b.rowsPerBatch;
    shift = resolveSlice(op, 'shift', mod.shift, cols, b.batches);
    scale = resolveSlice(op, 'scale', mod.scale, cols, b.batches);
  }
  const pipeline = await reductionPipeline(rec, op, {
    F16: dtype === 'f16', HAS_WEIGHT: weight !== null, HAS_BIAS: bias !== null, ...weightDefines(op, 'W', weight),
    ...weightDefines(op, 'B', bias), MODULATE: !!mod, WORKGROUP_SIZE,
  }, options);
  const u = new Uniforms(8).u32(rows, cols).f32(options.eps).u32(rowsPerBatch, shift.offset, scale.offset, shift.stride, scale.stride);
  const bindings = [x.buffer, (weight ?? x).buffer, (bias ?? x).buffer, (mod?.shift.tensor ?? x).buffer, (mod?.scale.tensor ?? x).buffer, out.buffer];
  rec.dispatch(pipeline, bindings, u.bytes, rows, `${op} ${dtype}`);
}
