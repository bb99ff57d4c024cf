import { num as n, rule, type ModelFamily } from '../blocks.ts';

/**
 * The Stable Diffusion / FLUX autoencoder: encoder (conv_in, down levels of resblocks and a
 * downsampler, a mid block with attention, conv_out), quant convs, and the decoder (the
 * mirror image). Every resblock and the attention block is a block of its own.
 *
 * Order keys: [half (0 encoder, 1 quant, 2 post-quant, 3 decoder), stage, level, item].
 */
export const sdVaeFamily: ModelFamily = {
  id: 'sd-vae',
  description: 'Stable Diffusion / FLUX VAE (AutoencoderKL)',
  schemes: [
    {
      scheme: 'diffusers',
      signature: [/^encoder\.down_blocks\.\d+\.resnets\./, /^decoder\.up_blocks\.\d+\.resnets\./],
      rules: [
        rule(/^(encoder|decoder)\.conv_in\./, 'io', (m) => `${m[1]}.conv_in`, (m) => [m[1] === 'encoder' ? 0 : 3, 0]),
        rule(/^encoder\.down_blocks\.(\d+)\.resnets\.(\d+)\./, 'layer', (m) => `encoder.down.${m[1]}.res.${m[2]}`, (m) => [0, 1, n(m[1]), n(m[2])]),
        rule(/^encoder\.down_blocks\.(\d+)\.downsamplers\./, 'layer', (m) => `encoder.down.${m[1]}.downsample`, (m) => [0, 1, n(m[1]), 99]),
        rule(/^(encoder|decoder)\.mid_block\.resnets\.(\d+)\./, 'layer', (m) => `${m[1]}.mid.res.${m[2]}`, (m) => [m[1] === 'encoder' ? 0 : 3, 2, 0, n(m[2]) * 2]),
        rule(/^(encoder|decoder)\.mid_block\.attentions\.0\./, 'layer', (m) => `${m[1]}.mid.attn`, (m) => [m[1] === 'encoder' ? 0 : 3, 2, 0, 1]),
        rule(/^decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\./, 'layer', (m) => `decoder.up.${m[1]}.res.${m[2]}`, (m) => [3, 3, n(m[1]), n(m[2])]),
        rule(/^decoder\.up_blocks\.(\d+)\.upsamplers\./, 'layer', (m) => `decoder.up.${m[1]}.upsample`, (m) => [3, 3, n(m[1]), 99]),
        rule(/^(encoder|decoder)\.(conv_norm_out|conv_out)\./, 'io', (m) => `${m[1]}.conv_out`, (m) => [m[1] === 'encoder' ? 0 : 3, 4]),
        rule(/^quant_conv\./, 'io', () => 'quant_conv', () => [1]),
        rule(/^post_quant_conv\./, 'io', () => 'post_quant_conv', () => [2]),
      ],
    },
    {
      // The original (LDM) names ComfyUI keeps under first_stage_model. The decoder's up
      // levels are numbered from the output side (up.0 runs last), hence the negated level.
      scheme: 'comfyui',
      signature: [/^encoder\.down\.\d+\.block\./, /^decoder\.up\.\d+\.block\./],
      rules: [
        rule(/^(encoder|decoder)\.conv_in\./, 'io', (m) => `${m[1]}.conv_in`, (m) => [m[1] === 'encoder' ? 0 : 3, 0]),
        rule(/^encoder\.down\.(\d+)\.block\.(\d+)\./, 'layer', (m) => `encoder.down.${m[1]}.res.${m[2]}`, (m) => [0, 1, n(m[1]), n(m[2])]),
        rule(/^encoder\.down\.(\d+)\.downsample\./, 'layer', (m) => `encoder.down.${m[1]}.downsample`, (m) => [0, 1, n(m[1]), 99]),
        rule(/^(encoder|decoder)\.mid\.block_(\d)\./, 'layer', (m) => `${m[1]}.mid.res.${n(m[2]) - 1}`, (m) => [m[1] === 'encoder' ? 0 : 3, 2, 0, (n(m[2]) - 1) * 2]),
        rule(/^(encoder|decoder)\.mid\.attn_1\./, 'layer', (m) => `${m[1]}.mid.attn`, (m) => [m[1] === 'encoder' ? 0 : 3, 2, 0, 1]),
        rule(/^decoder\.up\.(\d+)\.block\.(\d+)\./, 'layer', (m) => `decoder.up.${m[1]}.res.${m[2]}`, (m) => [3, 3, -n(m[1]), n(m[2])]),
        rule(/^decoder\.up\.(\d+)\.upsample\./, 'layer', (m) => `decoder.up.${m[1]}.upsample`, (m) => [3, 3, -n(m[1]), 99]),
        rule(/^(encoder|decoder)\.(norm_out|conv_out)\./, 'io', (m) => `${m[1]}.conv_out`, (m) => [m[1] === 'encoder' ? 0 : 3, 4]),
        rule(/^quant_conv\./, 'io', () => 'quant_conv', () => [1]),
        rule(/^post_quant_conv\./, 'io', () => 'post_quant_conv', () => [2]),
      ],
    },
  ],
};
