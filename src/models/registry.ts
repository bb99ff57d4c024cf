import type { WeightSet } from '../formats/weights.ts';
import { buildBlockMap, schemeMatches, UnknownModelError, type BlockMap, type ModelFamily } from './blocks.ts';
import { clipTextFamily } from './clip-text/blocks.ts';
import { fluxDitFamily } from './flux-dit/blocks.ts';
import { gpt2Family } from './gpt2/blocks.ts';
import { llamaFamily } from './llama/blocks.ts';
import { sdUnetFamily } from './sd-unet/blocks.ts';
import { sdVaeFamily } from './sd-vae/blocks.ts';
import { t5EncoderFamily } from './t5-encoder/blocks.ts';

export const MODEL_FAMILIES: readonly ModelFamily[] = Object.freeze([
  llamaFamily, gpt2Family, clipTextFamily, t5EncoderFamily, fluxDitFamily, sdVaeFamily, sdUnetFamily,
]);

/** The block map of a checkpoint: the family named, or the first whose naming scheme fits. */
export function blockMapOf(weights: WeightSet, familyId?: string): BlockMap {
  const names = new Set(weights.tensors.keys());
  const families = familyId ? MODEL_FAMILIES.filter((f) => f.id === familyId) : MODEL_FAMILIES;
  for (const family of families) {
    for (const scheme of family.schemes) if (schemeMatches(scheme, names)) return buildBlockMap(family, scheme, weights);
  }
  throw new UnknownModelError(weights.name, [...names]);
}
