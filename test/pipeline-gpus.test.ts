// A model split over two GPUs (two SwiftShader instances here): the hidden state hops from one
// to the other through the host, and the receiving GPU records its blocks while the read-back
// is still on its way (GpuBackend.uploadLater), its work held back until the values are written.
// Outputs must be bit for bit those of the same model on one GPU.
import { afterAll, describe, expect, it } from 'vitest';
import type { ExecutionMode } from '../src/allocation/planner.ts';
import { DEFAULT_COST_MODEL, type CostModel } from '../src/allocation/cost-model.ts';
import { openDevices } from '../src/devices/open.ts';
import type { DeviceSet } from '../src/devices/device-set.ts';
import { openWeights } from '../src/formats/open-weights.ts';
import { GpuBackend } from '../src/runtime/gpu-backend.ts';
import { loadModel } from '../src/runtime/model.ts';
import { fixturePath } from './fixtures.ts';
import { SWIFTSHADER } from './helpers.ts';
import { expectedOf, expectIdentical } from './models/harness.ts';

const LLAMA = fixturePath('llama-tiny');
let devices: Promise<DeviceSet> | null = null;
const twoGpus = () => (devices ??= openDevices({ adapters: [SWIFTSHADER, SWIFTSHADER] }));
afterAll(async () => {
  if (devices) await (await devices).close();
});

/** Runs the fixture's input_ids through one allocation: the forward outputs and 8 greedy tokens with each step's logits. */
async function runLlama(allocation: string, mode: ExecutionMode, costModel?: CostModel) {
  const set = await twoGpus();
  const expected = await expectedOf('llama-tiny');
  const weights = await openWeights(LLAMA);
  const model = await loadModel(set, weights, { allocation, mode, costModel });
  try {
    const r = await model.forward({ input_ids: expected.get('input_ids')! });
    const ids = expected.get('input_ids')!;
    const prompt = Array.from(ids.data.subarray(0, ids.shape[1]!)); // the first row: greedy_tokens continue it
    const g = await model.generate(prompt, 8);
    return { plan: model.plan, outputs: r.outputs, stats: r.stats, generated: g };
  } finally {
    await model.unload();
    await weights.close();
  }
}

describe('two GPUs', () => {
  it('a value still on its way never lands in a buffer that held-back work reads: queue writes skip buffers freed since the last submit', async () => {
    const set = await twoGpus();
    const b = new GpuBackend(set.gpus[0]!);
    try {
      let arrive!: (v: Float32Array) => void;
      const incoming = b.uploadLater([4], 'f32', new Promise<Float32Array>((resolve) => (arrive = resolve)));
      const x = await incoming;
      const y = await b.binary('add', x, x);
      const z = await b.binary('mul', y, y);
      b.release(y); // freed while the add that writes it and the mul that reads it are held back
      await b.collect([x, z], { defer: true });
      expect(b.awaitingValues).toBe(true);
      expect(b.rec.pending).toBeGreaterThan(0);
      // Written by queue.writeBuffer now, ahead of the held-back work: it must not get y's buffer.
      const u = await b.upload(Float32Array.of(10, 20, 30, 40), [4]);
      arrive(Float32Array.of(1, 2, 3, 4));
      expect(Array.from(await b.download(u))).toEqual([10, 20, 30, 40]);
      expect(Array.from(await b.download(z))).toEqual([4, 16, 36, 64]);
      expect(b.awaitingValues).toBe(false);
    } finally {
      await b.close();
    }
  });

  it('values that never come fail the held-back work with the read-back\'s error, and nothing of it is submitted', async () => {
    const set = await twoGpus();
    const b = new GpuBackend(set.gpus[1]!);
    try {
      const x = await b.uploadLater([4], 'f32', Promise.reject(new Error('gpu:0 was lost')));
      const y = await b.binary('add', x, x);
      await expect(b.download(y)).rejects.toThrow('gpu:0 was lost');
      expect(b.rec.pending).toBe(0);
      expect(b.awaitingValues).toBe(false);
    } finally {
      await b.close();
    }
  });

  it('gpu:0,50%;gpu:1,* pipeline: logits and every decoding step bit for bit those of one GPU; greedy tokens equal the reference', async () => {
    const expected = await expectedOf('llama-tiny');
    const one = await runLlama('gpu:0,*', 'stream');
    const two = await runLlama('gpu:0,50%;gpu:1,*', 'pipeline');
    expect(new Set(two.plan.blocks.map((b) => b.execDevice))).toEqual(new Set(['gpu:0', 'gpu:1']));
    expect(two.stats.moves).toBeGreaterThanOrEqual(1);
    expectIdentical(two.outputs, one.outputs, ['logits']);
    expect(two.generated.tokens).toEqual(Array.from(expected.get('greedy_tokens')!.data));
    two.generated.stepLogits.forEach((l, i) => expect(Array.from(l), `step ${i}`).toEqual(Array.from(one.generated.stepLogits[i]!)));
    expect(two.generated.decodeHostMs.hop).toBeGreaterThanOrEqual(0);
  });

  it('gpu:0 → gpu:1 → blocks streamed back onto gpu:0: the streamed copies wait for gpu:0\'s held-back work; outputs unchanged', async () => {
    const one = await runLlama('gpu:0,*', 'stream');
    // Auto mode, told that GPU-to-GPU copies crawl and the cpu computes slowly: gpu:1's blocks run
    // there (pipeline), the cpu's are streamed onto gpu:0 after them.
    const three = await runLlama('gpu:0,30%;gpu:1,30%;cpu,*', 'auto',
      { ...DEFAULT_COST_MODEL, tokensPerPass: 1, gpuToGpuBytesPerSecond: 1e6, hostToGpuBytesPerSecond: 1e12, cpuFlopsPerSecond: 1 });
    const execs = three.plan.blocks.map((b) => `${b.device}/${b.execDevice}`);
    expect(execs).toContain('gpu:1/gpu:1');
    expect(execs).toContain('cpu/gpu:0');
    expect(three.stats.moves).toBeGreaterThanOrEqual(2);
    expectIdentical(three.outputs, one.outputs, ['logits']);
    expect(three.generated.tokens).toEqual(one.generated.tokens);
    three.generated.stepLogits.forEach((l: Float32Array, i: number) => expect(Array.from(l), `step ${i}`).toEqual(Array.from(one.generated.stepLogits[i]!)));
  });
});

