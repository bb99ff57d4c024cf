import { fixed, indexed, type ModelFamily } from '../blocks.ts';

/** GPT-2: token and learned position embeddings, N blocks, ln_f; the head is the token embedding. */
export const gpt2Family: ModelFamily = {
  id: 'gpt2',
  description: 'GPT-2 decoder-only LM (Conv1D weights, learned positions)',
  schemes: [
    {
      scheme: 'transformers',
      signature: [/^(transformer\.)?wte\.weight$/, /^(transformer\.)?wpe\.weight$/],
      rules: [
        fixed(/^(transformer\.)?wte\.weight$/, 'wte', 'embedding', [0]),
        fixed(/^(transformer\.)?wpe\.weight$/, 'wpe', 'embedding', [0, 1]),
        indexed(/^(?:transformer\.)?h\.(\d+)\./, 'h', 'layer', 1),
        fixed(/^(transformer\.)?ln_f\./, 'ln_f', 'norm', [2]),
        fixed(/^lm_head\.weight$/, 'lm_head', 'head', [3]),
      ],
      // GPT-2 ties its head to wte; checkpoints store wte once.
      ties: (names) => {
        if (names.has('lm_head.weight')) return [];
        const wte = names.has('transformer.wte.weight') ? 'transformer.wte.weight' : 'wte.weight';
        return [{ block: 'lm_head', kind: 'head', order: [3], tensor: wte }];
      },
    },
  ],
};
