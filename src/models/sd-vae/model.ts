import type { Tensor } from '../../runtime/backend.ts';
import type { WeightSet } from '../../formats/weights.ts';
import type { BlockMap } from '../blocks.ts';
import type { CanonicalTensor, ModelDefinition, Step, StepContext } from '../program.ts';
import { convSame, downsample, resnetBlock, spatialSelfAttention, upsample } from '../sd-common.ts';
import { ldmVaeToDiffusers } from './ldm-names.ts';

/**
 * diffusers' AutoencoderKL (SD 1.x/2.x, SDXL, FLUX VAEs).
 *
 * encode: Encoder (conv_in; per level resnets and, except the last, a Downsample2D with
 * padding 0 = asymmetric (0, 1, 0, 1) pad and stride 2; UNetMidBlock2D = resnet, attention,
 * resnet; GroupNorm + SiLU + conv_out), then quant_conv → moments; `encoded_mean` is the
 * first latent_channels channels of the moments (latent_dist.mean). No scaling_factor.
 *
 * decode: post_quant_conv, then Decoder (conv_in; the mid block; per level layers_per_block + 1
 * resnets and, except the last, Upsample2D = nearest ×2 and a conv; GroupNorm + SiLU +
 * conv_out) → `decoded`. The latents are used as given (vae.decode(latents): no scaling_factor).
 *
 * Every GroupNorm in the VAE has eps 1e-6; the mid attention is single-headed
 * (attention_head_dim = the channels).
 */
export interface SdVaeConfig {
  readonly groups: number;
  readonly latentChannels: number;
  /** Resnets per encoder level (layers_per_block). */
  readonly encoderLevels: readonly { readonly resnets: number; readonly downsample: boolean }[];
  /**
   * Resnets per decoder level (layers_per_block + 1), in execution order (diffusers'
   * up_blocks order); `block` is the level's index in the block names.
   */
  readonly decoderLevels: readonly { readonly block: number; readonly resnets: number; readonly upsample: boolean }[];
  readonly encoderMid: { readonly resnets: number; readonly attention: boolean };
  readonly decoderMid: { readonly resnets: number; readonly attention: boolean };
  readonly quantConv: boolean;
  readonly postQuantConv: boolean;
}

const EPS = 1e-6;

const A = { enc: 'vae.encoder.h', dec: 'vae.decoder.h' } as const;

export function configureSdVae(weights: WeightSet, blockMap: BlockMap): SdVaeConfig {
  const cfg = weights.config ?? {};
  const names = new Set(blockMap.blocks.map((b) => b.name));
  const levels = (prefix: string) => {
    let n = 0;
    while ([...names].some((x) => x.startsWith(`${prefix}.${n}.`))) n++;
    return n;
  };
  const count = (prefix: string) => {
    let n = 0;
    while (names.has(`${prefix}.${n}`)) n++;
    return n;
  };
  const encoderLevels = Array.from({ length: levels('encoder.down') }, (_, i) => ({
    resnets: count(`encoder.down.${i}.res`),
    downsample: names.has(`encoder.down.${i}.downsample`),
  }));
  // LDM numbers the decoder's levels from the output side (its up.0 runs last).
  const decoderCount = levels('decoder.up');
  const decoderLevels = Array.from({ length: decoderCount }, (_, i) => {
    const block = blockMap.scheme === 'comfyui' ? decoderCount - 1 - i : i;
    return { block, resnets: count(`decoder.up.${block}.res`), upsample: names.has(`decoder.up.${block}.upsample`) };
  });
  const quant = weights.tensors.get('quant_conv.weight');
  const postQuant = weights.tensors.get('post_quant_conv.weight');
  const decoderIn = weights.tensors.get('decoder.conv_in.weight');
  const latentChannels = typeof cfg.latent_channels === 'number' ? cfg.latent_channels
    : postQuant?.shape[0] ?? decoderIn?.shape[1] ?? 4;
  if (quant && quant.shape[0] !== 2 * latentChannels) {
    throw new RangeError(`${weights.name}: quant_conv gives ${quant.shape[0]} channels, not 2 × ${latentChannels} latent channels`);
  }
  return {
    groups: typeof cfg.norm_num_groups === 'number' ? cfg.norm_num_groups : 32,
    latentChannels,
    encoderLevels,
    decoderLevels,
    encoderMid: { resnets: count('encoder.mid.res'), attention: names.has('encoder.mid.attn') },
    decoderMid: { resnets: count('decoder.mid.res'), attention: names.has('decoder.mid.attn') },
    quantConv: names.has('quant_conv'),
    postQuantConv: names.has('post_quant_conv'),
  };
}

/** The mid block: resnets[0], then (attention, resnet) pairs. */
function midSteps(half: 'encoder' | 'decoder', mid: SdVaeConfig['encoderMid'], groups: number, act: string): Step[] {
  const steps: Step[] = [];
  for (let j = 0; j < mid.resnets; j++) {
    if (j > 0 && mid.attention && j === 1) {
      steps.push({
        block: `${half}.mid.attn`,
        async run(c) {
          const x = await c.get(act);
          c.set(act, await spatialSelfAttention(c, `${half}.mid_block.attentions.0`, x, { groups, eps: EPS, headDim: x.shape[1]! }));
        },
      });
    }
    steps.push({
      block: `${half}.mid.res.${j}`,
      async run(c) {
        c.set(act, await resnetBlock(c, `${half}.mid_block.resnets.${j}`, await c.get(act), { groups, eps: EPS }));
      },
    });
  }
  return steps;
}

async function normActConv(c: StepContext, half: 'encoder' | 'decoder', x: Tensor, groups: number): Promise<Tensor> {
  const n = await c.b.groupNorm(x, c.w(`${half}.conv_norm_out.weight`), c.w(`${half}.conv_norm_out.bias`), { groups, eps: EPS, silu: true });
  return convSame(c, n, `${half}.conv_out`);
}

function encodeSteps(cfg: SdVaeConfig): Step[] {
  const { groups } = cfg;
  const act = A.enc;
  const steps: Step[] = [{
    block: 'encoder.conv_in',
    async run(c) {
      c.set(act, await convSame(c, await c.get('image'), 'encoder.conv_in'));
    },
  }];
  cfg.encoderLevels.forEach((level, i) => {
    for (let j = 0; j < level.resnets; j++) {
      steps.push({
        block: `encoder.down.${i}.res.${j}`,
        async run(c) {
          c.set(act, await resnetBlock(c, `encoder.down_blocks.${i}.resnets.${j}`, await c.get(act), { groups, eps: EPS }));
        },
      });
    }
    if (level.downsample) {
      steps.push({
        block: `encoder.down.${i}.downsample`,
        async run(c) {
          c.set(act, await downsample(c, `encoder.down_blocks.${i}.downsamplers.0`, await c.get(act), 0));
        },
      });
    }
  });
  steps.push(...midSteps('encoder', cfg.encoderMid, groups, act));
  const mean = (c: StepContext, moments: Tensor) => c.b.slice(moments, 1, 0, cfg.latentChannels);
  steps.push({
    block: 'encoder.conv_out',
    async run(c) {
      const h = await normActConv(c, 'encoder', await c.get(act), groups);
      if (cfg.quantConv) c.set(act, h);
      else c.set('encoded_mean', await mean(c, h));
    },
  });
  if (cfg.quantConv) {
    steps.push({
      block: 'quant_conv',
      async run(c) {
        c.set('encoded_mean', await mean(c, await convSame(c, await c.get(act), 'quant_conv')));
      },
    });
  }
  return steps;
}

function decodeSteps(cfg: SdVaeConfig): Step[] {
  const { groups } = cfg;
  const act = A.dec;
  const steps: Step[] = [];
  if (cfg.postQuantConv) {
    steps.push({
      block: 'post_quant_conv',
      async run(c) {
        c.set(act, await convSame(c, await c.get('latents'), 'post_quant_conv'));
      },
    });
  }
  steps.push({
    block: 'decoder.conv_in',
    async run(c) {
      c.set(act, await convSame(c, await c.get(cfg.postQuantConv ? act : 'latents'), 'decoder.conv_in'));
    },
  });
  steps.push(...midSteps('decoder', cfg.decoderMid, groups, act));
  cfg.decoderLevels.forEach((level, i) => {
    for (let j = 0; j < level.resnets; j++) {
      steps.push({
        block: `decoder.up.${level.block}.res.${j}`,
        async run(c) {
          c.set(act, await resnetBlock(c, `decoder.up_blocks.${i}.resnets.${j}`, await c.get(act), { groups, eps: EPS }));
        },
      });
    }
    if (level.upsample) {
      steps.push({
        block: `decoder.up.${level.block}.upsample`,
        async run(c) {
          c.set(act, await upsample(c, `decoder.up_blocks.${i}.upsamplers.0`, await c.get(act)));
        },
      });
    }
  });
  steps.push({
    block: 'decoder.conv_out',
    async run(c) {
      c.set('decoded', await normActConv(c, 'decoder', await c.get(act), groups));
    },
  });
  return steps;
}

/**
 * diffusers checkpoints saved before the Attention rewrite name the mid attention
 * query/key/value/proj_attn (and group_norm); they load as to_q/to_k/to_v/to_out.0.
 */
function deprecatedAttentionNames(weights: WeightSet): Map<string, CanonicalTensor> {
  const map = new Map<string, CanonicalTensor>();
  const rename: Record<string, string> = { query: 'to_q', key: 'to_k', value: 'to_v', proj_attn: 'to_out.0' };
  for (const name of weights.tensors.keys()) {
    const m = /^((?:encoder|decoder)\.mid_block\.attentions\.0)\.(query|key|value|proj_attn)\.(weight|bias)$/.exec(name);
    if (m) map.set(`${m[1]}.${rename[m[2]!]}.${m[3]}`, { source: name });
  }
  return map;
}

export const sdVaeModel: ModelDefinition<SdVaeConfig> = {
  family: 'sd-vae',
  configure: configureSdVae,
  canonical(scheme, weights) {
    if (scheme === 'comfyui') return ldmVaeToDiffusers(weights.tensors);
    return deprecatedAttentionNames(weights);
  },
  entries: {
    encode: {
      inputs: ['image'],
      outputs: () => ['encoded_mean'],
      steps: (cfg) => encodeSteps(cfg),
    },
    decode: {
      inputs: ['latents'],
      outputs: () => ['decoded'],
      steps: (cfg) => decodeSteps(cfg),
    },
  },
};
