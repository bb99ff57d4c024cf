import type { Tensor, Weight } from '../runtime/backend.ts';
import type { CanonicalTensor, StepContext } from './program.ts';

/**
 * The pieces diffusers' AutoencoderKL and UNet2DConditionModel share, written once in terms of
 * the Backend: ResnetBlock2D, the single-head mid-block Attention of the VAE (the deprecated
 * "attention block" form), Transformer2DModel with its BasicTransformerBlocks (the UNet's
 * spatial transformer), Downsample2D and Upsample2D. Every function reads the weights of one
 * diffusers module prefix (e.g. `down_blocks.0.resnets.0`) through the step's context.
 */

/** A weight when the block has it (optional biases), else null. */
export const optional = (c: StepContext, name: string): Weight | null => (c.has(name) ? c.w(name) : null);

/** Conv2d with its PyTorch "same" padding for odd kernels (3×3 → 1, 1×1 → 0), stride 1. */
export async function convSame(c: StepContext, x: Tensor, prefix: string): Promise<Tensor> {
  const w = c.w(`${prefix}.weight`);
  const k = w.shape[2] ?? 1;
  return c.b.conv2d(x, w, optional(c, `${prefix}.bias`), { padding: (k - 1) >> 1 });
}

/** A Linear (bias optional). */
export async function linear(c: StepContext, x: Tensor, prefix: string): Promise<Tensor> {
  return c.b.linear(x, c.w(`${prefix}.weight`), optional(c, `${prefix}.bias`));
}

export interface ResnetOptions {
  /** GroupNorm groups (norm_num_groups, 32 in SD). */
  readonly groups: number;
  /** The resnets' GroupNorm epsilon: 1e-6 in the VAE, norm_eps (1e-5) in the UNet. */
  readonly eps: number;
  /** SiLU(temb) [B, temb_channels], shared by every resnet of the UNet; none in the VAE. */
  readonly tembAct?: Tensor | null;
  /** output_scale_factor: (shortcut + h) / factor. */
  readonly outputScale?: number;
}

/**
 * ResnetBlock2D (time_embedding_norm "default", no up/down sampling inside):
 * h = conv1(SiLU(norm1(x))); h += time_emb_proj(SiLU(temb))[:, :, None, None];
 * h = conv2(SiLU(norm2(h))) (dropout is the identity); out = (shortcut(x) + h) / output_scale_factor,
 * shortcut = conv_shortcut (1×1, when channels change) or the identity.
 */
export async function resnetBlock(c: StepContext, p: string, x: Tensor, o: ResnetOptions): Promise<Tensor> {
  const b = c.b;
  const norm = { groups: o.groups, eps: o.eps, silu: true } as const;
  let h = await b.groupNorm(x, c.w(`${p}.norm1.weight`), c.w(`${p}.norm1.bias`), norm);
  h = await convSame(c, h, `${p}.conv1`);
  if (c.has(`${p}.time_emb_proj.weight`)) {
    if (!o.tembAct) throw new RangeError(`${p}: this resnet projects a time embedding but none was given`);
    const t = await linear(c, o.tembAct, `${p}.time_emb_proj`);
    if (t.shape[1] !== h.shape[1]) {
      throw new RangeError(`${p}: time_emb_proj gives ${t.shape[1]} channels for ${h.shape[1]} (scale_shift resnets are not supported)`);
    }
    h = await b.binary('add', h, b.reshape(t, [t.shape[0]!, t.shape[1]!, 1, 1]));
  }
  h = await b.groupNorm(h, c.w(`${p}.norm2.weight`), c.w(`${p}.norm2.bias`), norm);
  h = await convSame(c, h, `${p}.conv2`);
  const shortcut = c.has(`${p}.conv_shortcut.weight`) ? await convSame(c, x, `${p}.conv_shortcut`) : x;
  const out = await b.binary('add', shortcut, h);
  const s = o.outputScale ?? 1;
  return s === 1 ? out : b.scale(out, 1 / s);
}

/**
 * Downsample2D with a conv: stride 2, 3×3. diffusers' padding 0 (the VAE encoder) pads
 * (0, 1, 0, 1) — one zero row at the bottom and one column on the right — before an unpadded
 * conv; padding 1 (the UNet) pads symmetrically.
 */
export async function downsample(c: StepContext, p: string, x: Tensor, padding: number): Promise<Tensor> {
  const pad = padding === 0 ? ([0, 1, 0, 1] as const) : padding;
  return c.b.conv2d(x, c.w(`${p}.conv.weight`), optional(c, `${p}.conv.bias`), { stride: 2, padding: pad });
}

/** Upsample2D with a conv: nearest ×2, then a 3×3 conv, padding 1. */
export async function upsample(c: StepContext, p: string, x: Tensor): Promise<Tensor> {
  return convSame(c, await c.b.upsampleNearest(x, 2), `${p}.conv`);
}

/** [B, C, H, W] → [B, H·W, C] tokens. */
export async function toTokens(c: StepContext, x: Tensor): Promise<Tensor> {
  const [B, C, H, W] = x.shape as [number, number, number, number];
  return c.b.permute(c.b.reshape(x, [B, C, H * W]), [0, 2, 1]);
}

/** [B, H·W, C] tokens → [B, C, H, W]. */
export async function fromTokens(c: StepContext, x: Tensor, H: number, W: number): Promise<Tensor> {
  const [B, , C] = x.shape as [number, number, number];
  return c.b.reshape(await c.b.permute(x, [0, 2, 1]), [B, C, H, W]);
}

export interface SpatialAttentionOptions {
  /** GroupNorm groups of attn.group_norm (norm_num_groups). */
  readonly groups: number;
  /** Its epsilon (resnet_eps: 1e-6 in the VAE). */
  readonly eps: number;
  /** attention_head_dim: the channels in the VAE, so a single head. */
  readonly headDim: number;
  /** rescale_output_factor. */
  readonly outputScale?: number;
}

/**
 * The mid-block Attention of UNetMidBlock2D (the VAE's, over H·W tokens): GroupNorm on the
 * NCHW input, q/k/v/out Linear with biases over the tokens, softmax(q·kᵀ/√d)·v, then
 * + residual and / rescale_output_factor.
 */
export async function spatialSelfAttention(c: StepContext, p: string, x: Tensor, o: SpatialAttentionOptions): Promise<Tensor> {
  const b = c.b;
  const [, C, H, W] = x.shape as [number, number, number, number];
  const n = c.has(`${p}.group_norm.weight`)
    ? await b.groupNorm(x, c.w(`${p}.group_norm.weight`), c.w(`${p}.group_norm.bias`), { groups: o.groups, eps: o.eps })
    : x;
  // LDM checkpoints store q/k/v/proj_out as 1×1 convs ([C, C, 1, 1]): the same projection,
  // applied before the tokens are formed (and after, for the output).
  const conv = c.w(`${p}.to_q.weight`).shape.length === 4;
  let q: Tensor, k: Tensor, v: Tensor;
  if (conv) {
    q = await toTokens(c, await convSame(c, n, `${p}.to_q`));
    k = await toTokens(c, await convSame(c, n, `${p}.to_k`));
    v = await toTokens(c, await convSame(c, n, `${p}.to_v`));
  } else {
    const t = await toTokens(c, n);
    q = await linear(c, t, `${p}.to_q`);
    k = await linear(c, t, `${p}.to_k`);
    v = await linear(c, t, `${p}.to_v`);
  }
  const inner = c.w(`${p}.to_q.weight`).shape[0]!;
  if (inner % o.headDim !== 0) throw new RangeError(`${p}: ${inner} channels are not heads of ${o.headDim}`);
  const a = await b.attention(q, k, v, { heads: inner / o.headDim, headDim: o.headDim });
  const y = conv
    ? await convSame(c, await fromTokens(c, a, H, W), `${p}.to_out.0`)
    : await fromTokens(c, await linear(c, a, `${p}.to_out.0`), H, W);
  if (y.shape[1] !== C) throw new RangeError(`${p}: to_out gives ${y.shape[1]} channels for ${C}`);
  const out = await b.binary('add', y, x);
  const s = o.outputScale ?? 1;
  return s === 1 ? out : b.scale(out, 1 / s);
}

export interface TransformerOptions {
  /** GroupNorm groups of the Transformer2DModel's norm. */
  readonly groups: number;
  readonly heads: number;
  /** BasicTransformerBlock's LayerNorm epsilon (norm_eps, 1e-5). */
  readonly layerNormEps?: number;
  /** attn1 attends to the encoder states too (only_cross_attention). */
  readonly onlyCrossAttention?: boolean;
}

/** Transformer2DModel's GroupNorm epsilon: fixed at 1e-6 whatever the UNet's norm_eps. */
const TRANSFORMER_GROUP_NORM_EPS = 1e-6;

/** Attention (diffusers' Attention with AttnProcessor2_0) on token sequences; context = x for self-attention. */
async function attention(c: StepContext, p: string, x: Tensor, context: Tensor, heads: number): Promise<Tensor> {
  const q = await linear(c, x, `${p}.to_q`);
  const k = await linear(c, context, `${p}.to_k`);
  const v = await linear(c, context, `${p}.to_v`);
  const inner = q.shape[q.shape.length - 1]!;
  if (inner % heads !== 0) throw new RangeError(`${p}: ${inner} channels are not ${heads} heads`);
  const a = await c.b.attention(q, k, v, { heads, headDim: inner / heads });
  return linear(c, a, `${p}.to_out.0`);
}

/**
 * GEGLU's projection cut in two at load: `….ff.net.0.proj.hidden.*` are the first half of
 * net.0.proj's rows and `….gate.*` the second (diffusers chunks the output [hidden, gate]), so
 * the feed-forward runs two Linears instead of one and two slices of its last axis (a GPU
 * slice off the last axis is two transposes). Added to `base` (canonical → stored, from the
 * naming scheme; names absent there are stored as they are) for every GEGLU feed-forward.
 */
export function withGegluHalves(tensors: ReadonlyMap<string, { readonly shape: readonly number[] }>,
  base: ReadonlyMap<string, CanonicalTensor>): Map<string, CanonicalTensor> {
  const out = new Map(base);
  const sources = new Set([...base.values()].map((t) => t.source));
  const canonicalNames = [...base.keys(), ...[...tensors.keys()].filter((n) => !sources.has(n) && !base.has(n))];
  const sourceOf = (name: string) => base.get(name)?.source ?? name;
  for (const name of canonicalNames) {
    const m = /^(.*\.ff\.net\.0\.proj)\.weight$/.exec(name);
    if (!m) continue;
    const proj = tensors.get(sourceOf(name))?.shape;
    const down = tensors.get(sourceOf(`${m[1]!.slice(0, -'0.proj'.length)}2.weight`))?.shape;
    if (!proj || !down || down.length !== 2 || proj[0] !== 2 * down[1]!) continue;
    const inner = down[1]!;
    for (const s of ['weight', 'bias']) {
      const full = `${m[1]}.${s}`;
      if (s === 'bias' && !tensors.has(sourceOf(full))) continue;
      const source = sourceOf(full);
      out.delete(full);
      out.set(`${m[1]}.hidden.${s}`, { source, rows: { count: inner, rowOf: (i) => i } });
      out.set(`${m[1]}.gate.${s}`, { source, rows: { count: inner, rowOf: (i) => inner + i } });
    }
  }
  return out;
}

/**
 * FeedForward: "geglu" (net.0.proj gives [hidden, gate] halves, hidden · GELU(gate), exact
 * erf GELU) or "gelu" (net.0.proj then GELU), then net.2. Which one is read off net.0.proj's
 * width against net.2's input (or the halves withGegluHalves cut at load).
 */
async function feedForward(c: StepContext, p: string, x: Tensor): Promise<Tensor> {
  const b = c.b;
  if (c.has(`${p}.net.0.proj.hidden.weight`)) {
    const hidden = await linear(c, x, `${p}.net.0.proj.hidden`);
    const gate = await linear(c, x, `${p}.net.0.proj.gate`);
    return linear(c, await b.gated('gelu', gate, hidden), `${p}.net.2`);
  }
  const h = await linear(c, x, `${p}.net.0.proj`);
  const width = h.shape[h.shape.length - 1]!;
  const inner = c.w(`${p}.net.2.weight`).shape[1]!;
  let g: Tensor;
  if (width === 2 * inner) {
    const axis = h.shape.length - 1;
    g = await b.gated('gelu', await b.slice(h, axis, inner, inner), await b.slice(h, axis, 0, inner));
  } else if (width === inner) {
    g = await b.activation('gelu', h);
  } else {
    throw new RangeError(`${p}: net.0.proj gives ${width} features for net.2's ${inner}`);
  }
  return linear(c, g, `${p}.net.2`);
}

/**
 * BasicTransformerBlock (norm_type "layer_norm"): x += attn1(norm1(x)); x += attn2(norm2(x),
 * encoder states); x += ff(norm3(x)).
 */
async function basicTransformerBlock(c: StepContext, p: string, x: Tensor, context: Tensor, o: TransformerOptions): Promise<Tensor> {
  const b = c.b;
  const eps = o.layerNormEps ?? 1e-5;
  const ln = (t: Tensor, name: string) => b.layerNorm(t, optional(c, `${p}.${name}.weight`), optional(c, `${p}.${name}.bias`), eps);
  let n = await ln(x, 'norm1');
  x = await b.binary('add', await attention(c, `${p}.attn1`, n, o.onlyCrossAttention ? context : n, o.heads), x);
  if (c.has(`${p}.attn2.to_q.weight`)) {
    n = await ln(x, 'norm2');
    x = await b.binary('add', await attention(c, `${p}.attn2`, n, context, o.heads), x);
  }
  n = await ln(x, 'norm3');
  return b.binary('add', await feedForward(c, `${p}.ff`, n), x);
}

/**
 * Transformer2DModel on continuous inputs: GroupNorm (eps 1e-6), proj_in (1×1 conv, or a
 * Linear on the tokens when use_linear_projection — told by the weight's rank), the
 * BasicTransformerBlocks, proj_out the same way back, + residual.
 */
export async function spatialTransformer(c: StepContext, p: string, x: Tensor, context: Tensor, o: TransformerOptions): Promise<Tensor> {
  const b = c.b;
  const [, , H, W] = x.shape as [number, number, number, number];
  const n = await b.groupNorm(x, c.w(`${p}.norm.weight`), c.w(`${p}.norm.bias`), { groups: o.groups, eps: TRANSFORMER_GROUP_NORM_EPS });
  const linearIn = c.w(`${p}.proj_in.weight`).shape.length === 2;
  let h = linearIn ? await linear(c, await toTokens(c, n), `${p}.proj_in`) : await toTokens(c, await convSame(c, n, `${p}.proj_in`));
  for (let i = 0; c.has(`${p}.transformer_blocks.${i}.norm1.weight`) || c.has(`${p}.transformer_blocks.${i}.attn1.to_q.weight`); i++) {
    h = await basicTransformerBlock(c, `${p}.transformer_blocks.${i}`, h, context, o);
  }
  const linearOut = c.w(`${p}.proj_out.weight`).shape.length === 2;
  const y = linearOut ? await fromTokens(c, await linear(c, h, `${p}.proj_out`), H, W) : await convSame(c, await fromTokens(c, h, H, W), `${p}.proj_out`);
  return b.binary('add', y, x);
}
