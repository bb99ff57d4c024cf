import type { KernelRecorder } from '../recorder.ts';
import type { GpuTensor } from '../tensor.ts';
import {
  activationDtype, checkBindable, expectShape, reductionPipeline, rowsOf, Uniforms, weightDefines, WORKGROUP_SIZE,
  type ReductionOptions,
} from './elementwise-common.ts';

export interface RmsNormOptions extends ReductionOptions {
  /** Added to the mean square (Llama's rms_norm_eps, T5's layer_norm_epsilon). */
  readonly eps: number;
}

/**
 * RMSNorm over the last dimension (Llama, Qwen2, T5's T5LayerNorm): out = x / sqrt(mean(x²) +
 * eps) * weight, no mean subtraction and no bias. x and out f32 (or f16 with shader-f16);
 * weight [cols] stored as f32, f16 or bf16, or null for none. One workgroup per row.
 */
export async function rmsNorm(rec: KernelRecorder, x: GpuTensor, weight: GpuTensor | null, out: GpuTensor, options: RmsNormOptions): Promise<void> {
  const op = 'rms_norm' as const;
  const dtype = activationDtype(op, rec.gpu, x, out);
  expectShape(op, 'out', out, x.shape);
  const { rows, cols } = rowsOf(x);
  if (weight) expectShape(op, 'weight', weight, [cols]);
  checkBindable(op, rec, x, out, ...(weight ? [weight] : []));
  if (rows === 0 || cols === 0) return;
  const pipeline = await reductionPipeline(rec, op, {
    F16: dtype === 'f16', HAS_WEIGHT: weight !== null, ...weightDefines(op, 'W', weight), WORKGROUP_SIZE,
  }, options);
  const u = new Uniforms(3).u32(rows, cols).f32(options.eps);
  rec.dispatch(pipeline, [x.buffer, (weight ?? x).buffer, out.buffer], u.bytes, rows, `${op} ${dtype}`);
}
