import { fixed, indexed, type ModelFamily } from '../blocks.ts';

/**
 * T5's encoder: one shared token embedding (`shared.weight`; `encoder.embed_tokens.weight`
 * is the same tensor when a checkpoint stores both), N blocks (block 0 holds the relative
 * position bias all blocks use), final RMSNorm.
 */
export const t5EncoderFamily: ModelFamily = {
  id: 't5-encoder',
  description: 'T5 encoder (Flux / SD3 conditioning)',
  schemes: [
    {
      scheme: 'transformers',
      signature: [/^encoder\.block\.\d+\.layer\.0\.SelfAttention\./],
      rules: [
        fixed(/^shared\.weight$/, 'shared', 'embedding', [0]),
        fixed(/^encoder\.embed_tokens\.weight$/, 'shared', 'embedding', [0]),
        indexed(/^encoder\.block\.(\d+)\./, 'block', 'layer', 1),
        fixed(/^encoder\.final_layer_norm\.weight$/, 'final_layer_norm', 'norm', [2]),
      ],
    },
  ],
};
