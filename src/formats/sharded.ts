import type { ByteAllocator } from './allocator.ts';
import { WeightsFormatError } from './errors.ts';
import { checkPlainName, readJsonObject, type FileProvider } from './folder.ts';
import { SafetensorsFile } from './safetensors.ts';
import { safetensorsTensors, WeightSet, type WeightTensor } from './weights.ts';

/**
 * A sharded checkpoint: `*.safetensors.index.json` maps each tensor to the shard that holds
 * it. Only the tensors the index names are part of the model, and each must be in its shard.
 */
export async function openSharded(provider: FileProvider, indexFile: string, options: {
  allocator?: ByteAllocator; config?: Readonly<Record<string, unknown>> | null;
} = {}): Promise<WeightSet> {
  const where = `${provider.name}/${indexFile}`;
  const index = await readJsonObject(provider, indexFile, options.allocator);
  const weightMap = index.weight_map;
  if (typeof weightMap !== 'object' || weightMap === null || Array.isArray(weightMap)) {
    throw new WeightsFormatError(where, 'has no "weight_map" object');
  }
  const byShard = new Map<string, string[]>();
  for (const [tensor, shard] of Object.entries(weightMap)) {
    if (typeof shard !== 'string') throw new WeightsFormatError(where, `weight_map entry "${tensor}" is not a file name`);
    checkPlainName(provider, indexFile, shard);
    byShard.set(shard, [...(byShard.get(shard) ?? []), tensor]);
  }
  const files: SafetensorsFile[] = [];
  const tensors = new Map<string, WeightTensor>();
  const close = async () => {
    await Promise.all(files.map((f) => f.close()));
  };
  try {
    for (const [shard, names] of byShard) {
      const file = await SafetensorsFile.open(await provider.open(shard), { allocator: options.allocator });
      files.push(file);
      const inShard = safetensorsTensors(file);
      for (const name of names) {
        const tensor = inShard.get(name);
        if (!tensor) throw new WeightsFormatError(where, `says tensor "${name}" is in ${shard}, but ${shard} has no such tensor`);
        tensors.set(name, tensor);
      }
    }
  } catch (error) {
    await close();
    throw error;
  }
  const metadata = new Map(Object.entries(typeof index.metadata === 'object' && index.metadata !== null ? index.metadata : {}));
  return new WeightSet({ name: where, format: 'safetensors', tensors, config: options.config ?? null, metadata, close });
}
