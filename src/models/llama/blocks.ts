import { fixed, indexed, type ModelFamily } from '../blocks.ts';

/**
 * Llama and its kin (Qwen2, Mistral): token embedding, N decoder layers, final RMSNorm,
 * LM head (tied to the embedding when the checkpoint stores no lm_head).
 */
export const llamaFamily: ModelFamily = {
  id: 'llama',
  description: 'Llama / Qwen2 / Mistral decoder-only LM',
  schemes: [
    {
      scheme: 'transformers',
      signature: [/^model\.embed_tokens\.weight$/, /^model\.layers\.\d+\.self_attn\./],
      rules: [
        fixed(/^model\.embed_tokens\.weight$/, 'embed_tokens', 'embedding', [0]),
        indexed(/^model\.layers\.(\d+)\./, 'layers', 'layer', 1),
        fixed(/^model\.norm\.weight$/, 'norm', 'norm', [2]),
        fixed(/^lm_head\.weight$/, 'lm_head', 'head', [3]),
      ],
      ties: (names) => (names.has('lm_head.weight') ? [] : [{ block: 'lm_head', kind: 'head', order: [3], tensor: 'model.embed_tokens.weight' }]),
    },
    {
      scheme: 'gguf',
      signature: [/^token_embd\.weight$/, /^blk\.\d+\.attn_q\./],
      rules: [
        fixed(/^token_embd\.weight$/, 'embed_tokens', 'embedding', [0]),
        indexed(/^blk\.(\d+)\./, 'layers', 'layer', 1),
        fixed(/^output_norm\.weight$/, 'norm', 'norm', [2]),
        fixed(/^output\.weight$/, 'lm_head', 'head', [3]),
        // llama.cpp keeps RoPE frequency factors beside the layers; they travel with the head's device.
        fixed(/^rope_freqs\.weight$/, 'rope_freqs', 'io', [0.5]),
      ],
      ties: (names) => (names.has('output.weight') ? [] : [{ block: 'lm_head', kind: 'head', order: [3], tensor: 'token_embd.weight' }]),
    },
  ],
};
