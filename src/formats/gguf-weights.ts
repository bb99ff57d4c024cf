import type { ByteAllocator } from './allocator.ts';
import { GgufFile } from './gguf/index.ts';
import type { ByteSource } from './source.ts';
import { tensorsOf, WeightSet } from './weights.ts';

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
  const tensors = tensorsOf(file, [...file.tensors.values()].map((info) => ({ ...info, dtype: info.typeName })));
  return new WeightSet({
    name: file.name, format: 'gguf', tensors, config: options.config ?? null,
    metadata: file.metadata, close: () => file.close(),
  });
}
