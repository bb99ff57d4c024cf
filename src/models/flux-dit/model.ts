import type { RopeSpec, Tensor, VectorSlice } from '../../runtime/backend.ts';
import { fluxRopeTableValues } from '../../kernels/ops/rope.ts';
import type { WeightSet } from '../../formats/weights.ts';
import type { BlockMap } from '../blocks.ts';
import type { HostTensor, ModelDefinition, Step, StepContext } from '../program.ts';
import { bflToDiffusers } from './bfl-names.ts';

/**
 * diffusers' FluxTransformer2DModel (FLUX.1 dev/schnell): the image and text streams are
 * embedded, N double-stream blocks attend jointly over [text, image] with separate weights
 * per stream, M single-stream blocks run on the joined sequence, and the image part goes
 * through the final AdaLN and projection.
 *
 * Shared activations (a plan is a graph): `temb.silu` = SiLU(temb), the conditioning vector
 * (timestep + guidance + pooled text embedding) after the SiLU that every AdaLN applies
 * before its modulation linear, set once by time_text_embed and read by every block and
 * norm_out; the RoPE table is host data built once per forward from txt_ids and img_ids.
 */
export interface FluxDitConfig {
  readonly inChannels: number;
  /** num_attention_heads · attention_head_dim. */
  readonly innerDim: number;
  readonly heads: number;
  readonly headDim: number;
  readonly jointAttentionDim: number;
  readonly pooledProjectionDim: number;
  readonly guidanceEmbeds: boolean;
  /** Rotary dims per id axis (they sum to headDim). */
  readonly axesDims: readonly number[];
  readonly theta: number;
  readonly numLayers: number;
  readonly numSingleLayers: number;
}

/** Every epsilon in the model: AdaLN's LayerNorms, norm2, norm_out and the q/k RMSNorms. */
const EPS = 1e-6;
/** FLUX's timesteps (sigmas in [0, 1]) and guidance are scaled to [0, 1000] before the sinusoids. */
const TIMESTEP = { flipSinToCos: true, downscaleFreqShift: 0, timestepMultiplier: 1000 } as const;

/** Names of the activations steps hand each other. */
const A = {
  img: 'flux.img',
  txt: 'flux.txt',
  /** The joined [text, image] sequence of the single blocks. */
  joint: 'flux.joint',
  temb: 'temb.silu',
  normOut: 'flux.norm_out',
} as const;

const num = (v: unknown): number | undefined => (typeof v === 'number' && Number.isFinite(v) ? v : undefined);

export function configureFluxDit(weights: WeightSet, blockMap: BlockMap): FluxDitConfig {
  const cfg = weights.config ?? {};
  const bfl = blockMap.scheme === 'comfyui';
  const shape = (name: string) => weights.tensors.get(name)?.shape;
  const count = (prefix: string) => blockMap.blocks.filter((b) => b.name.startsWith(prefix)).length;
  const embed = shape(bfl ? 'img_in.weight' : 'x_embedder.weight');
  const context = shape(bfl ? 'txt_in.weight' : 'context_embedder.weight');
  const pooled = shape(bfl ? 'vector_in.in_layer.weight' : 'time_text_embed.text_embedder.linear_1.weight');
  const qNorm = shape(bfl ? 'double_blocks.0.img_attn.norm.query_norm.scale' : 'transformer_blocks.0.attn.norm_q.weight')
    ?? shape(bfl ? 'single_blocks.0.norm.query_norm.scale' : 'single_transformer_blocks.0.attn.norm_q.weight');
  if (!embed || embed.length !== 2 || !context || !pooled || !qNorm) {
    throw new RangeError(`${weights.name}: not a FLUX transformer (the image/text embedders or q norms are missing)`);
  }
  const innerDim = embed[0]!;
  const headDim = num(cfg.attention_head_dim) ?? qNorm[0]!;
  const heads = num(cfg.num_attention_heads) ?? innerDim / headDim;
  if (heads * headDim !== innerDim || !Number.isInteger(heads)) {
    throw new RangeError(`${weights.name}: ${heads} heads × ${headDim} ≠ the model width ${innerDim}`);
  }
  const guidanceWeights = weights.tensors.has(bfl ? 'guidance_in.in_layer.weight' : 'time_text_embed.guidance_embedder.linear_1.weight');
  const guidanceEmbeds = typeof cfg.guidance_embeds === 'boolean' ? cfg.guidance_embeds : guidanceWeights;
  if (guidanceEmbeds && !guidanceWeights) throw new RangeError(`${weights.name}: config says guidance_embeds but the guidance embedder's weights are missing`);
  let axesDims: number[];
  if (Array.isArray(cfg.axes_dims_rope)) axesDims = cfg.axes_dims_rope.map(Number);
  else if (headDim === 128) axesDims = [16, 56, 56]; // FLUX.1's, which BFL checkpoints don't record
  else throw new RangeError(`${weights.name}: head dim ${headDim} without a config.json giving axes_dims_rope`);
  if (axesDims.reduce((a, b) => a + b, 0) !== headDim || axesDims.some((d) => !Number.isInteger(d) || d % 2 !== 0)) {
    throw new RangeError(`${weights.name}: axes_dims_rope ${JSON.stringify(axesDims)} must be even and sum to the head dim ${headDim}`);
  }
  return {
    inChannels: embed[1]!,
    innerDim,
    heads,
    headDim,
    jointAttentionDim: context[1]!,
    pooledProjectionDim: pooled[1]!,
    guidanceEmbeds,
    axesDims,
    theta: 10000,
    numLayers: count('double.'),
    numSingleLayers: count('single.'),
  };
}

/** Ids [L, axes] (or the deprecated [1, L, axes]: its first batch) as rows of axes values. */
function idRows(t: HostTensor, axes: number, name: string): ArrayLike<number> {
  const s = t.shape;
  const rows = s.length === 3 ? s[1]! : s[0]!;
  if ((s.length !== 2 && s.length !== 3) || s[s.length - 1] !== axes) {
    throw new RangeError(`${name} must be [tokens, ${axes}], got [${s.join(', ')}]`);
  }
  return t.data.subarray(0, rows * axes);
}

/** FLUX's rotary table: txt_ids then img_ids (diffusers concatenates them so), one row per token. */
export function fluxRopeSpec(txtIds: HostTensor, imgIds: HostTensor, axesDims: readonly number[], theta = 10000): RopeSpec {
  const axes = axesDims.length;
  const txt = idRows(txtIds, axes, 'txt_ids');
  const img = idRows(imgIds, axes, 'img_ids');
  const ids = new Float64Array(txt.length + img.length);
  ids.set(txt);
  ids.set(img, txt.length);
  return {
    mode: 'interleaved',
    rotaryDim: axesDims.reduce((a, b) => a + b, 0),
    rows: ids.length / axes,
    table: fluxRopeTableValues(ids, axesDims, theta),
  };
}

/** Chunk j of a [B, n·dim] modulation tensor, per batch. */
const chunk = (tensor: Tensor, j: number, n: number, dim: number): VectorSlice => ({ tensor, offset: j * dim, stride: n * dim });

/** Per-batch host values, one per batch row (a single value serves every batch). */
function perBatch(t: HostTensor, batch: number, name: string): number[] {
  const v = Array.from(t.data);
  if (v.length === batch) return v;
  if (v.length === 1) return new Array<number>(batch).fill(v[0]!);
  throw new RangeError(`${name} has ${v.length} values for a batch of ${batch}`);
}

async function linearAct(c: StepContext, x: Tensor, prefix: string): Promise<Tensor> {
  const h = await c.b.linear(x, c.w(`${prefix}.linear_1.weight`), c.w(`${prefix}.linear_1.bias`));
  const a = await c.b.activation('silu', h);
  return c.b.linear(a, c.w(`${prefix}.linear_2.weight`), c.w(`${prefix}.linear_2.bias`));
}

/** The per-head RMSNorm of q or k [B, L, H·D] (torch.nn.RMSNorm over head_dim). */
async function headNorm(c: StepContext, x: Tensor, weight: string, cfg: FluxDitConfig): Promise<Tensor> {
  const [B, L] = x.shape as [number, number, number];
  const y = await c.b.rmsNorm(c.b.reshape(x, [B, L, cfg.heads, cfg.headDim]), c.w(weight), EPS);
  return c.b.reshape(y, [B, L, cfg.heads * cfg.headDim]);
}

async function proj(c: StepContext, x: Tensor, name: string): Promise<Tensor> {
  return c.b.linear(x, c.w(`${name}.weight`), c.has(`${name}.bias`) ? c.w(`${name}.bias`) : null);
}

/** FeedForward(activation_fn="gelu-approximate"): Linear, GELU(tanh), Linear. */
async function feedForward(c: StepContext, x: Tensor, prefix: string): Promise<Tensor> {
  const h = await c.b.activation('gelu_tanh', await proj(c, x, `${prefix}.net.0.proj`));
  return proj(c, h, `${prefix}.net.2`);
}

function forwardSteps(cfg: FluxDitConfig, inputs: ReadonlyMap<string, HostTensor>): Step[] {
  let rope: RopeSpec | undefined;
  const ropeSpec = (): RopeSpec => {
    if (!rope) {
      const txtIds = inputs.get('txt_ids');
      const imgIds = inputs.get('img_ids');
      if (!txtIds || !imgIds) throw new RangeError('FLUX needs txt_ids and img_ids');
      rope = fluxRopeSpec(txtIds, imgIds, cfg.axesDims, cfg.theta);
    }
    return rope;
  };
  const D = cfg.innerDim;
  const attnOpts = { heads: cfg.heads, headDim: cfg.headDim };
  const steps: Step[] = [];

  steps.push({
    block: 'x_embedder',
    async run(c) {
      c.set(A.img, await proj(c, await c.get('hidden_states'), 'x_embedder'));
    },
  });
  steps.push({
    block: 'context_embedder',
    async run(c) {
      c.set(A.txt, await proj(c, await c.get('encoder_hidden_states'), 'context_embedder'));
    },
  });
  steps.push({
    block: 'time_text_embed',
    async run(c) {
      const b = c.b;
      const pooled = await c.get('pooled_projections');
      const batch = pooled.shape[0]!;
      const channels = c.w('time_text_embed.timestep_embedder.linear_1.weight').shape[1]!;
      const tProj = await b.timestepEmbedding(perBatch(c.input('timestep'), batch, 'timestep'), channels, TIMESTEP);
      let temb = await linearAct(c, tProj, 'time_text_embed.timestep_embedder');
      if (cfg.guidanceEmbeds) {
        if (!c.exists('guidance')) throw new RangeError('this FLUX model embeds guidance: the guidance input is required');
        const gProj = await b.timestepEmbedding(perBatch(c.input('guidance'), batch, 'guidance'), channels, TIMESTEP);
        temb = await b.binary('add', temb, await linearAct(c, gProj, 'time_text_embed.guidance_embedder'));
      }
      temb = await b.binary('add', temb, await linearAct(c, pooled, 'time_text_embed.text_embedder'));
      c.set(A.temb, await b.activation('silu', temb));
    },
  });

  for (let i = 0; i < cfg.numLayers; i++) {
    const p = `transformer_blocks.${i}`;
    steps.push({
      block: `double.${i}`,
      async run(c) {
        const b = c.b;
        let img = await c.get(A.img);
        let txt = await c.get(A.txt);
        const temb = await c.get(A.temb);
        const Li = img.shape[1]!;
        const Lt = txt.shape[1]!;
        // AdaLayerNormZero: shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp.
        const mod = await proj(c, temb, `${p}.norm1.linear`);
        const cmod = await proj(c, temb, `${p}.norm1_context.linear`);
        const nImg = await b.layerNorm(img, null, null, EPS, { shift: chunk(mod, 0, 6, D), scale: chunk(mod, 1, 6, D), rowsPerBatch: Li });
        const nTxt = await b.layerNorm(txt, null, null, EPS, { shift: chunk(cmod, 0, 6, D), scale: chunk(cmod, 1, 6, D), rowsPerBatch: Lt });

        const q = await headNorm(c, await proj(c, nImg, `${p}.attn.to_q`), `${p}.attn.norm_q.weight`, cfg);
        const k = await headNorm(c, await proj(c, nImg, `${p}.attn.to_k`), `${p}.attn.norm_k.weight`, cfg);
        const v = await proj(c, nImg, `${p}.attn.to_v`);
        const cq = await headNorm(c, await proj(c, nTxt, `${p}.attn.add_q_proj`), `${p}.attn.norm_added_q.weight`, cfg);
        const ck = await headNorm(c, await proj(c, nTxt, `${p}.attn.add_k_proj`), `${p}.attn.norm_added_k.weight`, cfg);
        const cv = await proj(c, nTxt, `${p}.attn.add_v_proj`);
        const spec = ropeSpec();
        const qj = await b.rope(await b.concat([cq, q], 1), spec, cfg.headDim);
        const kj = await b.rope(await b.concat([ck, k], 1), spec, cfg.headDim);
        const vj = await b.concat([cv, v], 1);
        const attn = await b.attention(qj, kj, vj, attnOpts);
        const attnTxt = await proj(c, await b.slice(attn, 1, 0, Lt), `${p}.attn.to_add_out`);
        const attnImg = await proj(c, await b.slice(attn, 1, Lt, Li), `${p}.attn.to_out.0`);

        img = await b.gatedResidual(img, attnImg, chunk(mod, 2, 6, D), Li);
        const n2 = await b.layerNorm(img, null, null, EPS, { shift: chunk(mod, 3, 6, D), scale: chunk(mod, 4, 6, D), rowsPerBatch: Li });
        img = await b.gatedResidual(img, await feedForward(c, n2, `${p}.ff`), chunk(mod, 5, 6, D), Li);

        txt = await b.gatedResidual(txt, attnTxt, chunk(cmod, 2, 6, D), Lt);
        const c2 = await b.layerNorm(txt, null, null, EPS, { shift: chunk(cmod, 3, 6, D), scale: chunk(cmod, 4, 6, D), rowsPerBatch: Lt });
        txt = await b.gatedResidual(txt, await feedForward(c, c2, `${p}.ff_context`), chunk(cmod, 5, 6, D), Lt);

        c.set(A.img, img);
        c.set(A.txt, txt);
      },
    });
  }

  for (let i = 0; i < cfg.numSingleLayers; i++) {
    const p = `single_transformer_blocks.${i}`;
    steps.push({
      block: `single.${i}`,
      async run(c) {
        const b = c.b;
        // diffusers joins [text, image] at every single block and splits after it; joining once
        // before the first and splitting before norm_out computes the same.
        const x = i === 0 ? await b.concat([await c.get(A.txt), await c.get(A.img)], 1) : await c.get(A.joint);
        const temb = await c.get(A.temb);
        const L = x.shape[1]!;
        // AdaLayerNormZeroSingle: shift, scale, gate.
        const mod = await proj(c, temb, `${p}.norm.linear`);
        const n = await b.layerNorm(x, null, null, EPS, { shift: chunk(mod, 0, 3, D), scale: chunk(mod, 1, 3, D), rowsPerBatch: L });
        const mlp = await b.activation('gelu_tanh', await proj(c, n, `${p}.proj_mlp`));
        const spec = ropeSpec();
        const q = await b.rope(await headNorm(c, await proj(c, n, `${p}.attn.to_q`), `${p}.attn.norm_q.weight`, cfg), spec, cfg.headDim);
        const k = await b.rope(await headNorm(c, await proj(c, n, `${p}.attn.to_k`), `${p}.attn.norm_k.weight`, cfg), spec, cfg.headDim);
        const v = await proj(c, n, `${p}.attn.to_v`);
        const attn = await b.attention(q, k, v, attnOpts);
        const out = await proj(c, await b.concat([attn, mlp], 2), `${p}.proj_out`);
        c.set(A.joint, await b.gatedResidual(x, out, chunk(mod, 2, 3, D), L));
      },
    });
  }

  steps.push({
    block: 'norm_out',
    async run(c) {
      const b = c.b;
      let img: Tensor;
      if (cfg.numSingleLayers > 0) {
        const joint = await c.get(A.joint);
        const Lt = inputs.get('encoder_hidden_states')?.shape[1] ?? 0;
        img = await b.slice(joint, 1, Lt, joint.shape[1]! - Lt);
      } else {
        img = await c.get(A.img);
      }
      // AdaLayerNormContinuous: diffusers orders the projection (scale, shift).
      const emb = await proj(c, await c.get(A.temb), 'norm_out.linear');
      c.set(A.normOut, await b.layerNorm(img, null, null, EPS, { scale: chunk(emb, 0, 2, D), shift: chunk(emb, 1, 2, D), rowsPerBatch: img.shape[1]! }));
    },
  });
  steps.push({
    block: 'proj_out',
    async run(c) {
      c.set('sample', await proj(c, await c.get(A.normOut), 'proj_out'));
    },
  });
  return steps;
}

export const fluxDitModel: ModelDefinition<FluxDitConfig> = {
  family: 'flux-dit',
  configure: configureFluxDit,
  canonical(scheme, weights, config) {
    if (scheme === 'comfyui') return bflToDiffusers(weights.tensors, config.innerDim);
    return new Map();
  },
  entries: {
    forward: {
      inputs: ['hidden_states', 'encoder_hidden_states', 'pooled_projections', 'timestep', 'img_ids', 'txt_ids'],
      optionalInputs: ['guidance'],
      outputs: () => ['sample'],
      steps: forwardSteps,
    },
  },
};
