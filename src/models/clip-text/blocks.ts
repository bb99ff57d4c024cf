import { fixed, indexed, type ModelFamily } from '../blocks.ts';

// transformers' CLIPTextModel, bare or under text_model. (and ComfyUI's SD1 cond_stage_model.transformer.)
const HF = '^(?:transformer\\.)?(?:text_model\\.)?';

/** CLIP's text encoder: token and position embeddings, N layers, final LayerNorm, optional projection. */
export const clipTextFamily: ModelFamily = {
  id: 'clip-text',
  description: 'CLIP text encoder (SD1/SDXL/Flux conditioning)',
  schemes: [
    {
      scheme: 'transformers',
      signature: [new RegExp(`${HF}embeddings\\.token_embedding\\.weight$`), new RegExp(`${HF}encoder\\.layers\\.\\d+\\.`)],
      rules: [
        fixed(new RegExp(`${HF}embeddings\\.token_embedding\\.weight$`), 'token_embedding', 'embedding', [0]),
        fixed(new RegExp(`${HF}embeddings\\.position_embedding\\.weight$`), 'position_embedding', 'embedding', [0, 1]),
        fixed(new RegExp(`${HF}embeddings\\.position_ids$`), 'position_embedding', 'embedding', [0, 1]),
        indexed(new RegExp(`${HF}encoder\\.layers\\.(\\d+)\\.`), 'layers', 'layer', 1),
        fixed(new RegExp(`${HF}final_layer_norm\\.`), 'final_layer_norm', 'norm', [2]),
        fixed(/^(?:transformer\.)?text_projection\.weight$/, 'text_projection', 'head', [3]),
      ],
    },
    {
      // open_clip's names, as ComfyUI keeps them for SD2 and SDXL's second encoder.
      scheme: 'openclip',
      signature: [/^(model\.)?token_embedding\.weight$/, /^(model\.)?transformer\.resblocks\.\d+\./],
      rules: [
        fixed(/^(model\.)?token_embedding\.weight$/, 'token_embedding', 'embedding', [0]),
        fixed(/^(model\.)?positional_embedding$/, 'position_embedding', 'embedding', [0, 1]),
        indexed(/^(?:model\.)?transformer\.resblocks\.(\d+)\./, 'layers', 'layer', 1),
        fixed(/^(model\.)?ln_final\./, 'final_layer_norm', 'norm', [2]),
        fixed(/^(model\.)?text_projection$/, 'text_projection', 'head', [3]),
        fixed(/^(model\.)?logit_scale$/, 'text_projection', 'head', [3]),
      ],
    },
  ],
};
