import { importNodeBuiltin } from '../devices/runtime.ts';
import type { ByteAllocator } from './allocator.ts';
import { WeightsFormatError, WeightsNotFoundError } from './errors.ts';
import { nodeFolder, readJsonObject, type FileProvider } from './folder.ts';
import { SafetensorsFile } from './safetensors.ts';
import { openSharded } from './sharded.ts';
import { fromSafetensors, WeightSet } from './weights.ts';

export interface OpenWeightsOptions {
  readonly allocator?: ByteAllocator;
  /** Pick `model.<variant>.safetensors` (e.g. "bf16", "fp16") in a folder that has several. */
  readonly variant?: string;
}

const INDEX = '.safetensors.index.json';

/**
 * The weights file(s) a Hugging Face folder means: model / diffusion_pytorch_model, sharded
 * index first, honouring a variant; else the folder's only index, safetensors or GGUF file.
 */
export function chooseWeightsFile(files: readonly string[], variant?: string): string | null {
  const v = variant ? `.${variant}` : '';
  for (const base of ['model', 'diffusion_pytorch_model']) {
    for (const candidate of [`${base}${v}${INDEX}`, `${base}${v}.safetensors`, `${base}${v}.gguf`]) if (files.includes(candidate)) return candidate;
  }
  if (variant) return null;
  for (const suffix of [INDEX, '.safetensors', '.gguf']) {
    const matches = files.filter((f) => f.endsWith(suffix) && (suffix !== '.safetensors' || !f.endsWith(INDEX)));
    if (matches.length === 1) return matches[0]!;
    if (matches.length > 1) return null;
  }
  return null;
}

async function openFromProvider(provider: FileProvider, file: string, config: Readonly<Record<string, unknown>> | null,
  options: OpenWeightsOptions): Promise<WeightSet> {
  if (file.endsWith(INDEX)) return openSharded(provider, file, { allocator: options.allocator, config });
  if (file.endsWith('.gguf')) {
    const { openGgufWeights } = await import('./gguf-weights.ts');
    return openGgufWeights(await provider.open(file), { allocator: options.allocator, config });
  }
  const source = await provider.open(file);
  try {
    return fromSafetensors(await SafetensorsFile.open(source, { allocator: options.allocator }), config);
  } catch (error) {
    await source.close();
    throw error;
  }
}

/** A model folder: config.json (if any) and the weights file it holds. */
export async function openFolder(provider: FileProvider, options: OpenWeightsOptions = {}): Promise<WeightSet> {
  const files = await provider.list();
  const config = files.includes('config.json') ? await readJsonObject(provider, 'config.json', options.allocator) : null;
  const chosen = chooseWeightsFile(files, options.variant);
  if (!chosen) {
    const weights = files.filter((f) => f.endsWith('.safetensors') || f.endsWith('.gguf') || f.endsWith('.json'));
    throw new WeightsNotFoundError(provider.name,
      options.variant ? `weights for variant "${options.variant}"` : 'single weights file to choose (pass the file itself, or a variant)', weights);
  }
  return openFromProvider(provider, chosen, config, options);
}

/**
 * Opens what a user points at: a folder, a `.safetensors` file, a `*.safetensors.index.json`
 * or a `.gguf` file (Node and Deno). A file inside a folder with config.json gets that config.
 */
export async function openWeights(path: string, options: OpenWeightsOptions = {}): Promise<WeightSet> {
  const fs = await importNodeBuiltin<typeof import('node:fs/promises')>('fs/promises');
  const { dirname, basename } = await importNodeBuiltin<typeof import('node:path')>('path');
  let isDirectory: boolean;
  try {
    isDirectory = (await fs.stat(path)).isDirectory();
  } catch (cause) {
    throw new WeightsFormatError(path, `cannot open: ${(cause as Error).message}`, { cause, hint: 'check the path' });
  }
  if (isDirectory) return openFolder(await nodeFolder(path), options);
  const folder = await nodeFolder(dirname(path));
  const file = basename(path);
  if (!file.endsWith('.safetensors') && !file.endsWith('.gguf') && !file.endsWith(INDEX)) {
    throw new WeightsFormatError(path, 'is not a .safetensors, .safetensors.index.json or .gguf file', {
      hint: 'point at the weights file or at the model folder',
    });
  }
  const siblings = await folder.list();
  const config = siblings.includes('config.json') ? await readJsonObject(folder, 'config.json', options.allocator) : null;
  return openFromProvider(folder, file, config, options);
}
