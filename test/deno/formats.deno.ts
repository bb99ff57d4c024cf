// Formats under Deno: file handles through node:fs, the same readers as under Node.
import { openWeights } from '../../src/formats/open-weights.ts';
import { openSafetensors } from '../../src/formats/safetensors.ts';
import { encodeSafetensors } from '../../src/formats/safetensors-writer.ts';

function assert(condition: unknown, message: string): asserts condition {
  if (!condition) throw new Error(message);
}

Deno.test('safetensors under Deno: a model folder reads, and writes back bit for bit', async () => {
  const path = new URL('../fixtures/llama-tiny/model.safetensors', import.meta.url).pathname;
  const file = await openSafetensors(path);
  const tensors = [];
  for (const t of file.tensors.values()) tensors.push({ name: t.name, dtype: t.dtype, shape: t.shape, data: await file.read(t.name) });
  const written = encodeSafetensors(tensors, file.metadata);
  const original = await Deno.readFile(path);
  assert(written.length === original.length && written.every((b, i) => b === original[i]), 'round trip differs');
  await file.close();
  const set = await openWeights(new URL('../fixtures/llama-tiny', import.meta.url).pathname);
  assert((set.config as { model_type?: string }).model_type === 'llama', 'config.json not attached');
  const norm = await set.readF32('model.norm.weight');
  assert(norm.length === 64, `model.norm.weight has ${norm.length} values`);
  await set.close();
});
