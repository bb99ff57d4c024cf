import { fixed, indexed, type ModelFamily } from '../blocks.ts';

/**
 * FLUX's transformer: input embedders (image, text, timestep/guidance/pooled text), N double
 * blocks (image and text streams), M single blocks, the final AdaLN norm and projection.
 */
export const fluxDitFamily: ModelFamily = {
  id: 'flux-dit',
  description: 'FLUX.1 diffusion transformer',
  schemes: [
    {
      scheme: 'diffusers',
      signature: [/^x_embedder\./, /^transformer_blocks\.\d+\./],
      rules: [
        fixed(/^x_embedder\./, 'x_embedder', 'embedding', [0, 0]),
        fixed(/^context_embedder\./, 'context_embedder', 'embedding', [0, 1]),
        fixed(/^time_text_embed\./, 'time_text_embed', 'embedding', [0, 2]),
        indexed(/^transformer_blocks\.(\d+)\./, 'double', 'layer', 1),
        indexed(/^single_transformer_blocks\.(\d+)\./, 'single', 'layer', 2),
        fixed(/^norm_out\./, 'norm_out', 'norm', [3]),
        fixed(/^proj_out\./, 'proj_out', 'head', [4]),
      ],
    },
    {
      // Black Forest Labs' original names, which ComfyUI checkpoints keep.
      scheme: 'comfyui',
      signature: [/^img_in\./, /^double_blocks\.\d+\./],
      rules: [
        fixed(/^img_in\./, 'x_embedder', 'embedding', [0, 0]),
        fixed(/^txt_in\./, 'context_embedder', 'embedding', [0, 1]),
        fixed(/^(time_in|vector_in|guidance_in)\./, 'time_text_embed', 'embedding', [0, 2]),
        indexed(/^double_blocks\.(\d+)\./, 'double', 'layer', 1),
        indexed(/^single_blocks\.(\d+)\./, 'single', 'layer', 2),
        fixed(/^final_layer\.adaLN_modulation\./, 'norm_out', 'norm', [3]),
        fixed(/^final_layer\.linear\./, 'proj_out', 'head', [4]),
      ],
    },
  ],
};
