import type { KernelRecorder } from '../recorder.ts';
import type { GpuTensor } from '../tensor.ts';
import {
  activationDtype, checkBindable, expectShape, reductionPipeline, Uniforms, weightDefines, WORKGROUP_SIZE,
  type ReductionOptions,
} from './elementwise-common.ts';

export interface GroupNormOptions extends ReductionOptions {
  /** Number of groups (32 in the SD VAE and UNet); must divide the channels. */
  readonly groups: number;
  readonly eps: number;
  /** Apply SiLU after the affine step (ResnetBlock2D: norm, then nonlinearity). */
  readonly silu?: boolean;
}

/**
 * GroupNorm on NCHW (or any [N, C, ...spatial]): each batch item's channels are split into
 * `groups` groups; each group is normalized by its own mean and biased variance, then
 * out = y * weight[c] + bias[c] (each optional, stored as f32, f16 or bf16), then SiLU if asked.
 * x and out f32 (or f16 with shader-f16). One workgroup per (item, group).
 */
export async function groupNorm(rec: KernelRecorder, x: GpuTensor, weight: GpuTensor | null, bias: GpuTensor | null, out: GpuTensor,
  options: GroupNormOptions): Promise<void> {
  const op = 'group_norm' as const;
  const dtype = activationDtype(op, rec.gpu, x, out);
  expectShape(op, 'out', out, x.shape);
  if (x.shape.length < 2) throw new RangeError(`${op}: x must be [N, C, ...], got [${x.shape.join(', ')}]`);
  const [batch, channels] = x.shape as [number, number];
  const spatial = x.shape.slice(2).reduce((a, b) => a * b, 1);
  const groups = options.groups;
  if (!Number.isInteger(groups) || groups < 1 || channels % groups !== 0) throw new RangeError(`${op}: ${groups} groups do not divide ${channels} channels`);
  if (weight) expectShape(op, 'weight', weight, [channels]);
  if (bias) expectShape(op, 'bias', bias, [channels]);
  checkBindable(op, rec, x, out, ...[weight, bias].filter((t): t is GpuTensor => !!t));
  if (x.elements === 0) return;
  const pipeline = await reductionPipeline(rec, op, {
    F16: dtype === 'f16', HAS_WEIGHT: weight !== null, HAS_BIAS: bias !== null, ...weightDefines(op, 'W', weight),
    ...weightDefines(op, 'B', bias), SILU: options.silu ?? false, WORKGROUP_SIZE,
  }, options);
  const u = new Uniforms(5).u32(batch, channels, spatial, groups).f32(options.eps);
  rec.dispatch(pipeline, [x.buffer, (weight ?? x).buffer, (bias ?? x).buffer, out.buffer], u.bytes, batch * groups, `${op} ${dtype}`);
}
