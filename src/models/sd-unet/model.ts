import type { Tensor } from '../../runtime/backend.ts';
import type { WeightSet } from '../../formats/weights.ts';
import type { BlockMap } from '../blocks.ts';
import type { HostTensor, ModelDefinition, Step } from '../program.ts';
import { convSame, downsample, linear, resnetBlock, spatialSelfAttention, spatialTransformer, upsample, withGegluHalves } from '../sd-common.ts';
import { ldmUnetLayout, type UnetLayout } from './ldm-names.ts';

/**
 * diffusers' UNet2DConditionModel (SD 1.x/2.x, SDXL): `out = unet(sample, timestep,
 * encoder_hidden_states).sample`.
 *
 * time_embedding: the sinusoidal Timesteps(block_out_channels[0], flip_sin_to_cos, freq_shift),
 * linear_1, SiLU, linear_2 (+ SDXL's "text_time" add_embedding); every resnet then projects
 * SiLU(emb), which is computed once and shared as the activation `unet.temb` (a plan is a graph:
 * the scheduler moves it to each resnet's device).
 * conv_in → skip.0; each down level: (resnet, transformer?) pairs, each pair's output a skip,
 * then a Downsample2D (stride 2, padding 1) whose output is a skip too; the mid block:
 * resnet, (transformer, resnet)…; each up level: per resnet, concat [h, the latest unread skip]
 * on channels, resnet, transformer?; then Upsample2D (nearest ×2, conv); finally GroupNorm +
 * SiLU + conv_out → `out`. Skips are the named activations `skip.N`, read by up blocks much
 * later, wherever they run.
 */
export interface UnetLevelConfig {
  readonly resnets: number;
  readonly attentions: number;
  /** Downsampler (down levels) or upsampler (up levels). */
  readonly resample: boolean;
  readonly heads: number;
}

export interface SdUnetConfig {
  readonly groups: number;
  /** The resnets' GroupNorm epsilon (norm_eps). */
  readonly eps: number;
  /** Timesteps' channels (block_out_channels[0]). */
  readonly timeChannels: number;
  readonly flipSinToCos: boolean;
  readonly freqShift: number;
  readonly downsamplePadding: number;
  readonly midScale: number;
  readonly resnetScale: number;
  readonly centerInput: boolean;
  readonly onlyCrossAttention: boolean;
  readonly down: readonly UnetLevelConfig[];
  /**
   * The mid block; `headDim`: UNetMidBlock2D's plain attention (no encoder states) takes
   * attention_head_dim[-1] as the head width (the channels when unset).
   */
  readonly mid: { readonly resnets: number; readonly attentions: number; readonly heads: number; readonly headDim: number | null } | null;
  readonly up: readonly UnetLevelConfig[];
  /** SDXL's "text_time" addition: Timesteps(addition_time_embed_dim) of time_ids, concatenated after text_embeds. */
  readonly addTimeChannels: number | null;
  /** diffusers-form block name (down.0.res.0, mid.attn.0, …) → the block map's name. */
  readonly blocks: Readonly<Record<string, string>>;
}

const A = { h: 'unet.h', temb: 'unet.temb' } as const;

const num = (v: unknown): number | undefined => (typeof v === 'number' && Number.isFinite(v) ? v : undefined);

/** A per-level config value (int or list), down-level order. */
function perLevel(v: unknown, levels: number): (number | undefined)[] {
  if (Array.isArray(v)) return Array.from({ length: levels }, (_, i) => num(v[i]));
  return new Array<number | undefined>(levels).fill(num(v));
}

/** The level structure read off the diffusers block names. */
function diffusersLayout(blockMap: BlockMap): UnetLayout {
  const names = new Set(blockMap.blocks.map((b) => b.name));
  const count = (prefix: string) => {
    let n = 0;
    while (names.has(`${prefix}.${n}`)) n++;
    return n;
  };
  const levels = (prefix: string) => {
    let n = 0;
    while ([...names].some((x) => x.startsWith(`${prefix}.${n}.`))) n++;
    return n;
  };
  const blocks: Record<string, string> = {};
  for (const n of names) blocks[n] = n;
  return {
    down: Array.from({ length: levels('down') }, (_, i) => ({
      resnets: count(`down.${i}.res`), attentions: count(`down.${i}.attn`), resample: names.has(`down.${i}.downsample`),
    })),
    mid: names.has('mid.res.0') ? { resnets: count('mid.res'), attentions: count('mid.attn') } : null,
    up: Array.from({ length: levels('up') }, (_, i) => ({
      resnets: count(`up.${i}.res`), attentions: count(`up.${i}.attn`), resample: names.has(`up.${i}.upsample`),
    })),
    blocks,
    canonical: new Map(),
  };
}

export function configureSdUnet(weights: WeightSet, blockMap: BlockMap): SdUnetConfig {
  const cfg = weights.config ?? {};
  const ldm = blockMap.scheme === 'comfyui';
  const layout = ldm ? ldmUnetLayout(weights.tensors.keys()) : diffusersLayout(blockMap);
  const shape = (name: string) => {
    const source = layout.canonical.get(name)?.source ?? name;
    return weights.tensors.get(source)?.shape;
  };
  const convIn = shape('conv_in.weight');
  const timeIn = shape('time_embedding.linear_1.weight');
  if (!convIn || !timeIn) throw new RangeError(`${weights.name}: not a UNet (conv_in or time_embedding is missing)`);
  const blockOut = Array.isArray(cfg.block_out_channels) ? cfg.block_out_channels.map(Number)
    : layout.down.map((_, i) => shape(`down_blocks.${i}.resnets.0.conv1.weight`)?.[0] ?? 0);
  const L = layout.down.length;
  if (blockOut.length !== L) throw new RangeError(`${weights.name}: ${blockOut.length} block_out_channels for ${L} down levels`);

  // diffusers: num_attention_heads = num_attention_heads or attention_head_dim (a historic
  // naming quirk: SD's attention_head_dim is the number of heads). Without a config
  // (single-file checkpoints) follow ComfyUI: 8 heads for SD1 (conv projections), heads of
  // 64 channels for SD2/SDXL (linear projections).
  const firstAttn = layout.down.findIndex((l) => l.attentions > 0);
  const linearProj = shape(firstAttn >= 0 ? `down_blocks.${firstAttn}.attentions.0.proj_in.weight` : 'mid_block.attentions.0.proj_in.weight')?.length === 2;
  const headsCfg = cfg.num_attention_heads ?? cfg.attention_head_dim ?? (weights.config ? 8 : undefined);
  const heads = headsCfg !== undefined && headsCfg !== null
    ? perLevel(headsCfg, L).map((h, i) => h ?? blockOut[i]!)
    : blockOut.map((ch) => (linearProj ? ch / 64 : 8));
  const onlyCross = cfg.only_cross_attention;
  const onlyCrossAttention = Array.isArray(onlyCross) ? onlyCross.length > 0 && onlyCross.every(Boolean) : onlyCross === true;
  if (Array.isArray(onlyCross) && onlyCross.some(Boolean) && !onlyCrossAttention) {
    // Supported for every level or none; mixed per-level lists are in no SD model.
    throw new RangeError(`${weights.name}: per-level only_cross_attention is not supported`);
  }
  if (cfg.resnet_time_scale_shift !== undefined && cfg.resnet_time_scale_shift !== 'default') {
    throw new RangeError(`${weights.name}: resnet_time_scale_shift "${String(cfg.resnet_time_scale_shift)}" is not supported`);
  }
  if (cfg.time_cond_proj_dim != null) throw new RangeError(`${weights.name}: time_cond_proj_dim (a guidance-conditioned time embedding) is not supported`);
  if (cfg.class_embed_type != null || cfg.num_class_embeds != null) throw new RangeError(`${weights.name}: class embeddings are not supported`);
  if (cfg.time_embedding_type !== undefined && cfg.time_embedding_type !== 'positional') {
    throw new RangeError(`${weights.name}: time_embedding_type "${String(cfg.time_embedding_type)}" is not supported`);
  }
  const addEmbed = cfg.addition_embed_type;
  let addTimeChannels: number | null = null;
  if (addEmbed === 'text_time' || (addEmbed === undefined && layout.blocks['add_embedding'])) {
    addTimeChannels = num(cfg.addition_time_embed_dim) ?? 256;
  } else if (addEmbed != null) {
    throw new RangeError(`${weights.name}: addition_embed_type "${String(addEmbed)}" is not supported`);
  }
  const midType = cfg.mid_block_type;
  if (midType !== undefined && midType !== null && midType !== 'UNetMidBlock2DCrossAttn' && midType !== 'UNetMidBlock2D') {
    throw new RangeError(`${weights.name}: mid_block_type "${String(midType)}" is not supported`);
  }
  const lastHeads = heads[L - 1]!;
  const up = layout.up.map((level, i) => ({ ...level, heads: heads[L - 1 - i]! }));
  return {
    groups: num(cfg.norm_num_groups) ?? 32,
    eps: num(cfg.norm_eps) ?? 1e-5,
    timeChannels: timeIn[1]!,
    flipSinToCos: typeof cfg.flip_sin_to_cos === 'boolean' ? cfg.flip_sin_to_cos : true,
    freqShift: num(cfg.freq_shift) ?? 0,
    downsamplePadding: num(cfg.downsample_padding) ?? 1,
    midScale: num(cfg.mid_block_scale_factor) ?? 1,
    resnetScale: num(cfg.resnet_out_scale_factor) ?? 1,
    centerInput: cfg.center_input_sample === true,
    onlyCrossAttention,
    down: layout.down.map((level, i) => ({ ...level, heads: heads[i]! })),
    mid: layout.mid ? { ...layout.mid, heads: lastHeads, headDim: perLevel(cfg.attention_head_dim, L)[L - 1] ?? null } : null,
    up,
    addTimeChannels,
    blocks: layout.blocks,
  };
}

/** Per-batch host values (a single value serves every batch item), as timesteps.expand(B). */
function perBatch(t: HostTensor, batch: number, name: string): number[] {
  const v = Array.from(t.data);
  if (v.length === batch) return v;
  if (v.length === 1) return new Array<number>(batch).fill(v[0]!);
  throw new RangeError(`${name} has ${v.length} values for a batch of ${batch}`);
}

function forwardSteps(cfg: SdUnetConfig, inputs: ReadonlyMap<string, HostTensor>): Step[] {
  const block = (name: string): string => {
    const b = cfg.blocks[name];
    if (b === undefined) throw new RangeError(`sd-unet: the checkpoint has no block ${name}`);
    return b;
  };
  const sample = inputs.get('sample');
  if (!sample || sample.shape.length !== 4) throw new RangeError('sd-unet: sample must be [B, C, H, W]');
  const batch = sample.shape[0]!;
  const resamples = cfg.down.filter((l) => l.resample).length;
  const factor = 2 ** resamples;
  if (sample.shape[2]! % factor !== 0 || sample.shape[3]! % factor !== 0) {
    // diffusers then passes the skip's size to the upsampler (forward_upsample_size); the
    // nearest resize by a size that is not ×2 is not implemented.
    throw new RangeError(`sd-unet: sample ${sample.shape[2]}×${sample.shape[3]} must be a multiple of ${factor}`);
  }
  const groups = cfg.groups;
  const resnetOptions = (temb: Tensor) => ({ groups, eps: cfg.eps, tembAct: temb, outputScale: cfg.resnetScale });
  const steps: Step[] = [];

  // Time embedding (+ SDXL's add_embedding): SiLU(emb) is what every resnet reads.
  const embSteps: Step[] = [];
  embSteps.push({
    block: block('time_embedding'),
    async run(c) {
      const b = c.b;
      const t = await b.timestepEmbedding(perBatch(c.input('timestep'), batch, 'timestep'), cfg.timeChannels,
        { flipSinToCos: cfg.flipSinToCos, downscaleFreqShift: cfg.freqShift });
      const h = await b.activation('silu', await linear(c, t, 'time_embedding.linear_1'));
      const emb = await linear(c, h, 'time_embedding.linear_2');
      c.set(A.temb, cfg.addTimeChannels === null ? await b.activation('silu', emb) : emb);
    },
  });
  if (cfg.addTimeChannels !== null) {
    const addTime = cfg.addTimeChannels;
    embSteps.push({
      block: block('add_embedding'),
      async run(c) {
        const b = c.b;
        if (!c.exists('text_embeds') || !c.exists('time_ids')) throw new RangeError('this UNet (addition_embed_type "text_time") needs text_embeds and time_ids');
        const ids = c.input('time_ids');
        const timeEmb = await b.timestepEmbedding(Array.from(ids.data), addTime, { flipSinToCos: cfg.flipSinToCos, downscaleFreqShift: cfg.freqShift });
        const perItem = ids.data.length / batch;
        const addEmbeds = await b.concat([await c.get('text_embeds'), b.reshape(timeEmb, [batch, perItem * addTime])], 1);
        const h = await b.activation('silu', await linear(c, addEmbeds, 'add_embedding.linear_1'));
        const aug = await linear(c, h, 'add_embedding.linear_2');
        c.set(A.temb, await b.activation('silu', await b.binary('add', await c.get(A.temb), aug)));
      },
    });
  }
  steps.push(...embSteps);

  let skips = 0;
  steps.push({
    block: block('conv_in'),
    async run(c) {
      let x = await c.get('sample');
      if (cfg.centerInput) x = await c.b.scale(x, 2, -1);
      const h = await convSame(c, x, 'conv_in');
      c.set(A.h, h);
      c.set('skip.0', h);
    },
  });
  skips++;

  const resnetStep = (name: string, prefix: string, opts: { concatSkip?: string; outputScale?: number; setSkip?: string }): Step => ({
    block: block(name),
    async run(c) {
      let x = await c.get(A.h);
      if (opts.concatSkip) x = await c.b.concat([x, await c.get(opts.concatSkip)], 1);
      const o = resnetOptions(await c.get(A.temb));
      const h = await resnetBlock(c, prefix, x, opts.outputScale === undefined ? o : { ...o, outputScale: opts.outputScale });
      c.set(A.h, h);
      if (opts.setSkip) c.set(opts.setSkip, h);
    },
  });
  const transformerStep = (name: string, prefix: string, heads: number, setSkip?: string, headDim?: number | null): Step => ({
    block: block(name),
    async run(c) {
      const x = await c.get(A.h);
      const h = c.has(`${prefix}.proj_in.weight`)
        ? await spatialTransformer(c, prefix, x, await c.get('encoder_hidden_states'), { groups, heads, layerNormEps: 1e-5, onlyCrossAttention: cfg.onlyCrossAttention })
        : await spatialSelfAttention(c, prefix, x, { groups, eps: cfg.eps, headDim: headDim ?? x.shape[1]!, outputScale: cfg.midScale });
      c.set(A.h, h);
      if (setSkip) c.set(setSkip, h);
    },
  });

  cfg.down.forEach((level, i) => {
    for (let j = 0; j < level.resnets; j++) {
      const hasAttn = j < level.attentions;
      steps.push(resnetStep(`down.${i}.res.${j}`, `down_blocks.${i}.resnets.${j}`, { setSkip: hasAttn ? undefined : `skip.${skips}` }));
      if (hasAttn) steps.push(transformerStep(`down.${i}.attn.${j}`, `down_blocks.${i}.attentions.${j}`, level.heads, `skip.${skips}`));
      skips++;
    }
    if (level.resample) {
      const skip = `skip.${skips++}`;
      steps.push({
        block: block(`down.${i}.downsample`),
        async run(c) {
          const h = await downsample(c, `down_blocks.${i}.downsamplers.0`, await c.get(A.h), cfg.downsamplePadding);
          c.set(A.h, h);
          c.set(skip, h);
        },
      });
    }
  });

  if (cfg.mid) {
    const mid = cfg.mid;
    for (let j = 0; j < mid.resnets; j++) {
      if (j > 0 && j - 1 < mid.attentions) steps.push(transformerStep(`mid.attn.${j - 1}`, `mid_block.attentions.${j - 1}`, mid.heads, undefined, mid.headDim));
      steps.push(resnetStep(`mid.res.${j}`, `mid_block.resnets.${j}`, { outputScale: cfg.midScale }));
    }
  }

  cfg.up.forEach((level, i) => {
    for (let j = 0; j < level.resnets; j++) {
      if (skips === 0) throw new RangeError('sd-unet: the up blocks read more skip connections than the down blocks made');
      steps.push(resnetStep(`up.${i}.res.${j}`, `up_blocks.${i}.resnets.${j}`, { concatSkip: `skip.${--skips}` }));
      if (j < level.attentions) steps.push(transformerStep(`up.${i}.attn.${j}`, `up_blocks.${i}.attentions.${j}`, level.heads));
    }
    if (level.resample) {
      steps.push({
        block: block(`up.${i}.upsample`),
        async run(c) {
          c.set(A.h, await upsample(c, `up_blocks.${i}.upsamplers.0`, await c.get(A.h)));
        },
      });
    }
  });
  if (skips !== 0) throw new RangeError(`sd-unet: ${skips} skip connection(s) left unread by the up blocks`);

  steps.push({
    block: block('conv_out'),
    async run(c) {
      const x = await c.get(A.h);
      const n = await c.b.groupNorm(x, c.w('conv_norm_out.weight'), c.w('conv_norm_out.bias'), { groups, eps: cfg.eps, silu: true });
      c.set('out', await convSame(c, n, 'conv_out'));
    },
  });
  return steps;
}

export const sdUnetModel: ModelDefinition<SdUnetConfig> = {
  family: 'sd-unet',
  configure: configureSdUnet,
  canonical(scheme, weights) {
    const names = scheme === 'comfyui' ? ldmUnetLayout(weights.tensors.keys()).canonical : new Map();
    return withGegluHalves(weights.tensors, names);
  },
  entries: {
    forward: {
      inputs: ['sample', 'timestep', 'encoder_hidden_states'],
      optionalInputs: ['text_embeds', 'time_ids'],
      outputs: () => ['out'],
      steps: forwardSteps,
    },
  },
};
