import { num as n, rule, type ModelFamily } from '../blocks.ts';

/**
 * The Stable Diffusion UNet (SD1/SD2/SDXL): time (and SDXL's class) embedding, conv_in, down
 * levels of resblock + cross-attention transformer pairs and a downsampler, the mid block,
 * up levels mirrored, and the output norm/conv. Each resblock and each attention block is a
 * block. Order keys: [stage, level, item, resblock 0 / attention 1].
 */
export const sdUnetFamily: ModelFamily = {
  id: 'sd-unet',
  description: 'Stable Diffusion UNet (UNet2DConditionModel)',
  schemes: [
    {
      scheme: 'diffusers',
      signature: [/^down_blocks\.\d+\.resnets\.\d+\./, /^conv_in\./],
      rules: [
        rule(/^time_embedding\./, 'embedding', () => 'time_embedding', () => [0, 0]),
        rule(/^add_embedding\./, 'embedding', () => 'add_embedding', () => [0, 1]),
        rule(/^conv_in\./, 'io', () => 'conv_in', () => [0, 2]),
        rule(/^down_blocks\.(\d+)\.resnets\.(\d+)\./, 'layer', (m) => `down.${m[1]}.res.${m[2]}`, (m) => [1, n(m[1]), n(m[2]), 0]),
        rule(/^down_blocks\.(\d+)\.attentions\.(\d+)\./, 'layer', (m) => `down.${m[1]}.attn.${m[2]}`, (m) => [1, n(m[1]), n(m[2]), 1]),
        rule(/^down_blocks\.(\d+)\.downsamplers\./, 'layer', (m) => `down.${m[1]}.downsample`, (m) => [1, n(m[1]), 99]),
        rule(/^mid_block\.resnets\.(\d+)\./, 'layer', (m) => `mid.res.${m[1]}`, (m) => [2, 0, n(m[1]), 0]),
        rule(/^mid_block\.attentions\.(\d+)\./, 'layer', (m) => `mid.attn.${m[1]}`, (m) => [2, 0, n(m[1]), 1]),
        rule(/^up_blocks\.(\d+)\.resnets\.(\d+)\./, 'layer', (m) => `up.${m[1]}.res.${m[2]}`, (m) => [3, n(m[1]), n(m[2]), 0]),
        rule(/^up_blocks\.(\d+)\.attentions\.(\d+)\./, 'layer', (m) => `up.${m[1]}.attn.${m[2]}`, (m) => [3, n(m[1]), n(m[2]), 1]),
        rule(/^up_blocks\.(\d+)\.upsamplers\./, 'layer', (m) => `up.${m[1]}.upsample`, (m) => [3, n(m[1]), 99]),
        rule(/^(conv_norm_out|conv_out)\./, 'head', () => 'conv_out', () => [4]),
      ],
    },
    {
      // The original (LDM) names ComfyUI keeps under model.diffusion_model.: input_blocks.N
      // and output_blocks.N are sequences whose parts (resblock, attention, resampler) are
      // numbered .0, .1, .2.
      scheme: 'comfyui',
      signature: [/^input_blocks\.\d+\.\d+\./, /^middle_block\./],
      rules: [
        rule(/^time_embed\./, 'embedding', () => 'time_embedding', () => [0, 0]),
        rule(/^label_emb\./, 'embedding', () => 'add_embedding', () => [0, 1]),
        rule(/^input_blocks\.0\.0\./, 'io', () => 'conv_in', () => [0, 2]),
        rule(/^input_blocks\.(\d+)\.(\d+)\./, 'layer', (m) => `input.${m[1]}.${m[2]}`, (m) => [1, n(m[1]), n(m[2])]),
        rule(/^middle_block\.(\d+)\./, 'layer', (m) => `middle.${m[1]}`, (m) => [2, n(m[1])]),
        rule(/^output_blocks\.(\d+)\.(\d+)\./, 'layer', (m) => `output.${m[1]}.${m[2]}`, (m) => [3, n(m[1]), n(m[2])]),
        rule(/^out\./, 'head', () => 'conv_out', () => [4]),
      ],
    },
  ],
};
