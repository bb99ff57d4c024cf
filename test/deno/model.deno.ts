// Runs under `deno run` (spawned by test/deno.test.ts; not `deno test`, see there): a fixture
// model end to end through the Deno entry (deno/mod.ts): llama-tiny's forward logits against
// the reference within 1e-3 · max|expected|, and its greedy tokens equal to transformers' — on
// Dawn (npm:webgpu), split over gpu:0 and the WebAssembly cpu device in pipeline mode, and on
// Deno's own navigator.gpu (wgpu). Prints one `... ok` line per run; throws (exit 1) on a failure.
import { loadModel, openDevices, openWeights, type HostTensor } from '../../deno/mod.ts';
import { readHostTensors } from '../../src/runtime/host-tensors.ts';

function assert(condition: unknown, message: string): asserts condition {
  if (!condition) throw new Error(message);
}

const FIXTURE = new URL('../fixtures/llama-tiny/', import.meta.url).pathname;

/** max |got − expected| / max |expected| over a tensor. */
function relativeError(got: HostTensor, expected: HostTensor): number {
  assert(JSON.stringify(got.shape) === JSON.stringify(expected.shape), `shape ${JSON.stringify(got.shape)} vs ${JSON.stringify(expected.shape)}`);
  let maxRef = 0;
  let maxErr = 0;
  for (let i = 0; i < expected.data.length; i++) {
    maxRef = Math.max(maxRef, Math.abs(expected.data[i]!));
    const e = Math.abs(got.data[i]! - expected.data[i]!);
    maxErr = Number.isNaN(e) ? Infinity : Math.max(maxErr, e);
  }
  return maxErr / (maxRef || 1);
}

const RUNS = [
  { api: 'dawn', allocation: 'gpu:0,50%;cpu,*', mode: 'pipeline', devices: ['gpu:0', 'cpu'] },
  { api: 'navigator', allocation: 'gpu:0,100%', mode: 'stream', devices: ['gpu:0'] },
] as const;

const only = Deno.args[0];
for (const r of RUNS.filter((x) => !only || x.api === only)) {
  const name = `llama-tiny on ${r.api} (${r.allocation}, ${r.mode}): logits within 1e-3, greedy tokens equal the fixture's`;
  const start = performance.now();
  const expected = await readHostTensors(`${FIXTURE}expected.safetensors`);
  const devices = await openDevices({ api: r.api });
  const weights = await openWeights(FIXTURE);
  try {
    assert(devices.runtime === 'deno', `runtime is ${devices.runtime}`);
    assert(devices.gpus[0]?.api === r.api, `gpu:0 opened by ${devices.gpus[0]?.api}`);
    const model = await loadModel(devices, weights, { allocation: r.allocation, mode: r.mode });
    try {
      const used = [...new Set(model.plan.blocks.map((b) => b.execDevice))].sort();
      assert(JSON.stringify(used) === JSON.stringify([...r.devices].sort()), `blocks run on ${used.join(', ')}`);
      const { outputs } = await model.forward({ input_ids: expected.get('input_ids')! }, 'forward', undefined, ['logits']);
      const err = relativeError(outputs.get('logits')!, expected.get('logits')!);
      assert(err <= 1e-3, `${name}: logits max error / max|expected| = ${err}`);
      const ids = expected.get('input_ids')!;
      const prompt = [...ids.data.subarray(0, ids.shape[1]!)];
      const want = [...expected.get('greedy_tokens')!.data];
      const { tokens } = await model.generate(prompt, want.length);
      assert(JSON.stringify(tokens) === JSON.stringify(want), `${name}: greedy tokens ${tokens.join(' ')}, want ${want.join(' ')}`);
      console.log(`${name} ... ok (logits error ${err.toExponential(2)}, tokens ${tokens.join(' ')}, ${((performance.now() - start) / 1000).toFixed(1)} s)`);
    } finally {
      await model.unload();
    }
  } finally {
    await weights.close();
    await devices.close();
  }
}
