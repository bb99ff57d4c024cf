import type { KernelRecorder } from '../recorder.ts';
import type { GpuTensor } from '../tensor.ts';
import { scratchBuffer } from './attention-common.ts';
import {
  activationDtype, checkBindable, expectShape, reductionPipeline, Uniforms, weightDefines, WORKGROUP_SIZE,
  type ReductionOptions,
} from './elementwise-common.ts';

/** Values of one group a workgroup takes (64 per invocation): a VAE layer at 1024² has 256 chunks a group. */
export const GROUP_NORM_CHUNK = 16384;

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
 * x and out f32 (or f16 with shader-f16). Two dispatches: chunk statistics
 * (group_norm_stats.wgsl, a workgroup per GROUP_NORM_CHUNK values of a group), then the merge
 * and normalization (group_norm.wgsl, a workgroup per chunk), so a large layer fills the GPU.
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
  const count = (channels / groups) * spatial;
  const chunks = Math.ceil(count / GROUP_NORM_CHUNK);
  const runs = batch * groups;
  // Partials live in the kernel library's per-device scratch (reused by every later call: the
  // next dispatch that writes it is ordered after this call's reads).
  const partials = await scratchBuffer(rec.gpu, runs * chunks * 8);
  const stats = await reductionPipeline(rec, 'group_norm_stats', { F16: dtype === 'f16', WORKGROUP_SIZE, CHUNK: GROUP_NORM_CHUNK }, options);
  rec.dispatch(stats, [x.buffer, partials.buffer], new Uniforms(3).u32(runs, count, chunks).bytes, runs * chunks, `${op} stats ${dtype}`);
  const pipeline = await reductionPipeline(rec, op, {
    F16: dtype === 'f16', HAS_WEIGHT: weight !== null, HAS_BIAS: bias !== null, ...weightDefines(op, 'W', weight),
    ...weightDefines(op, 'B', bias), SILU: options.silu ?? false, WORKGROUP_SIZE, CHUNK: GROUP_NORM_CHUNK,
  }, options);
  const u = new Uniforms(6).u32(batch, channels, spatial, groups).f32(options.eps).u32(chunks);
  rec.dispatch(pipeline, [x.buffer, (weight ?? x).buffer, (bias ?? x).buffer, partials.buffer, out.buffer], u.bytes, runs * chunks, `${op} ${dtype}`);
}
