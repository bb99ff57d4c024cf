import type { ByteAllocator } from './allocator.ts';
import { GgufFile } from './gguf/index.ts';
import type { ByteSource } from './source.ts';
import { WeightSet, type WeightTensor } from './weights.ts';

/**
 * A GGUF file as a WeightSet: tensors keep the file's own names (llama.cpp's `blk.N.*`) and
 * their ggml type names as dtype; readF32 dequantizes on the CPU. GGUF metadata becomes the
 * set's metadata; a config.json beside the file, if any, its config.
 */
export async function openGgufWeights(source: ByteSource, options: {
  allocator?: ByteAllocator; config?: Readonly<Record<string, unknown>> | null;
} = {}): Promise<WeightSet> {
  let file: GgufFile;
  try {
    file = await GgufFile.open(source, { allocator: options.allocator });
  } catch (error) {
    await source.close();
    throw error;
  }
  const tensors = new Map<string, WeightTensor>();
  for (const info of file.tensors.values()) {
    tensors.set(info.name, {
      name: info.name,
      dtype: info.typeName,
      shape: info.shape,
      byteLength: info.byteLength,
      file: file.name,
      readRaw: () => file.readRaw(info.name),
      readF32: () => file.readF32(info.name),
    });
  }
  return new WeightSet({
    name: file.name, format: 'gguf', tensors, config: options.config ?? null,
    metadata: file.metadata, close: () => file.close(),
  });
}
