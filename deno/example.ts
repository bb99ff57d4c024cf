/**
 * Greedy generation from a model folder under Deno, split over the devices by an allocation
 * string.
 *
 *   deno run -A deno/example.ts [MODEL_FOLDER] [--alloc "gpu:0,50%;cpu,*"] [--mode pipeline]
 *                               [--prompt 1,2,3] [--tokens 8] [--api dawn|navigator]
 *
 * MODEL_FOLDER defaults to the bundled tiny Llama (models/llama-tiny). The prompt defaults to
 * input_ids[0] of the folder's expected.safetensors when it has one (the bundled model does,
 * with the tokens transformers generated from it), else to token 1.
 */
import { parseArgs } from 'node:util';
import { loadModel, openDevices, openSafetensors, openWeights, type ExecutionMode } from './mod.ts';

const { values, positionals } = parseArgs({
  args: Deno.args,
  allowPositionals: true,
  options: {
    alloc: { type: 'string', default: 'gpu:0,50%;cpu,*' },
    mode: { type: 'string', default: 'pipeline' },
    prompt: { type: 'string' },
    tokens: { type: 'string', default: '8' },
    api: { type: 'string', default: 'auto' },
  },
});
const folder = positionals[0] ?? new URL('../models/llama-tiny', import.meta.url).pathname;

/** input_ids[0] and greedy_tokens of the folder's expected.safetensors, when it has them. */
async function reference(): Promise<{ prompt: number[]; tokens: number[] | null } | null> {
  let file;
  try {
    file = await openSafetensors(`${folder}/expected.safetensors`);
  } catch {
    return null;
  }
  try {
    const ids = file.tensors.get('input_ids');
    if (!ids) return null;
    const prompt = [...await file.readF32('input_ids')].slice(0, ids.shape[ids.shape.length - 1]);
    const tokens = file.tensors.has('greedy_tokens') ? [...await file.readF32('greedy_tokens')] : null;
    return { prompt, tokens };
  } finally {
    await file.close();
  }
}

const ref = values.prompt === undefined ? await reference() : null;
const prompt = values.prompt !== undefined ? values.prompt.split(',').map(Number) : ref?.prompt ?? [1];
const count = Number(values.tokens);

const devices = await openDevices({ api: values.api as 'auto' | 'dawn' | 'navigator' });
const weights = await openWeights(folder);
try {
  for (const w of devices.warnings) console.warn(`warning: ${w}`);
  console.log(`devices: ${[...devices.gpus.map((g) => `${g.name} ${g.adapterName} (${g.api})`), `cpu (${devices.cpu.cores} cores)`].join(', ')}`);
  const model = await loadModel(devices, weights, { allocation: values.alloc, mode: values.mode as ExecutionMode });
  try {
    const where = new Map<string, string[]>();
    for (const b of model.plan.blocks) where.set(b.execDevice, [...where.get(b.execDevice) ?? [], b.name]);
    console.log(`model: ${folder} (${model.definition.family}), allocation "${values.alloc}", ${model.plan.mode} mode`);
    for (const [device, blocks] of where) console.log(`  ${device}: ${blocks.join(', ')}`);
    const result = await model.generate(prompt, count);
    console.log(`prompt:    ${prompt.join(' ')}`);
    console.log(`generated: ${result.tokens.join(' ')}`);
    if (ref?.tokens && values.tokens === String(ref.tokens.length)) {
      const same = result.tokens.every((t, i) => t === ref.tokens![i]);
      console.log(`reference: ${ref.tokens.join(' ')} (transformers, greedy) — ${same ? 'identical' : 'DIFFERENT'}`);
    }
    const decoded = result.tokens.length - 1;
    console.log(`prefill ${result.ms.prefill.toFixed(1)} ms (${prompt.length} tokens), decode ${result.ms.decode.toFixed(1)} ms (${decoded} tokens, ${(decoded / (result.ms.decode / 1000)).toFixed(1)} tokens/s)`);
  } finally {
    await model.unload();
  }
} finally {
  await weights.close();
  await devices.close();
}
