import type { ModelDefinition } from './program.ts';
import { UnknownModelError } from './blocks.ts';

/**
 * Each family's forward math, loaded on first use (a page that runs only a text encoder never
 * parses the UNet's code). Keys are the block-map family ids of registry.ts.
 */
const DEFINITIONS: Readonly<Record<string, () => Promise<ModelDefinition<any>>>> = {
  llama: () => import('./llama/model.ts').then((m) => m.llamaModel),
  gpt2: () => import('./gpt2/model.ts').then((m) => m.gpt2Model),
  'clip-text': () => import('./clip-text/model.ts').then((m) => m.clipTextModel),
  't5-encoder': () => import('./t5-encoder/model.ts').then((m) => m.t5EncoderModel),
  'flux-dit': () => import('./flux-dit/model.ts').then((m) => m.fluxDitModel),
  'sd-vae': () => import('./sd-vae/model.ts').then((m) => m.sdVaeModel),
  'sd-unet': () => import('./sd-unet/model.ts').then((m) => m.sdUnetModel),
};

export async function definitionOf(family: string): Promise<ModelDefinition<unknown>> {
  const load = DEFINITIONS[family];
  if (!load) throw new UnknownModelError(family, [family]);
  return load();
}
