// The scheduler and the weight placement, on the tiny Llama: where bytes are counted, what a
// stream pass copies, what unload gives back, and the typed errors a caller can meet.
import { describe, expect, it } from 'vitest';
import { openWeights } from '../src/formats/open-weights.ts';
import { loadModel, ModelInputError } from '../src/runtime/model.ts';
import { measuredCostModel } from '../src/runtime/measure.ts';
import { expectedOf, fixtureDevices } from './models/harness.ts';
import { fixturePath } from './fixtures.ts';

const LLAMA = fixturePath('llama-tiny');
/** The kernel library's per-device caches (attention constants): freeAll drops them, a model's unload does not. */
const DEVICE_CACHES = /^attention\./;
const modelBytes = (ledger: { entries(): Array<{ label: string; bytes: number }> }) => ledger.entries().filter((e) => !DEVICE_CACHES.test(e.label)).reduce((n, e) => n + e.bytes, 0);

describe('runtime', () => {
  it('stream blocks stored on cpu live in host-visible buffers counted on the cpu ledger, and each pass copies exactly them', async () => {
    const set = await fixtureDevices();
    const gpu = set.gpus[0]!;
    const gpuBefore = modelBytes(gpu.ledger);
    const cpuBefore = set.cpu.ledger.used;
    const weights = await openWeights(LLAMA);
    const model = await loadModel(set, weights, { allocation: 'gpu:0,50%;cpu,*', mode: 'stream' });
    try {
      const streamed = model.plan.blocks.filter((b) => b.exec === 'stream');
      expect(streamed.length).toBeGreaterThan(0);
      expect(streamed.every((b) => b.device === 'cpu' && b.storage === 'host-visible' && b.execDevice === 'gpu:0')).toBe(true);
      const streamedBytes = streamed.reduce((s, b) => s + b.bytes, 0);
      const residentBytes = model.plan.blocks.filter((b) => b.exec === 'resident').reduce((s, b) => s + b.bytes, 0);
      // f32 weights are stored as they are: the ledgers hold exactly the plan's bytes (rounded up to words).
      expect(set.cpu.ledger.used - cpuBefore).toBe(streamedBytes);
      expect(modelBytes(gpu.ledger) - gpuBefore).toBe(residentBytes);
      const inputs = (await expectedOf('llama-tiny'));
      const r = await model.forward(new Map([['input_ids', inputs.get('input_ids')!]]));
      expect(r.stats.stagedBytes).toBe(streamedBytes);
      expect(r.stats.moves).toBe(0); // stream mode: every block on gpu:0, nothing crosses devices
      // Activations are freed after the pass; weights and the reusable staging area remain.
      const staging = gpu.ledger.entries().filter((e) => e.label.startsWith('staging '));
      expect(staging.length).toBeGreaterThan(0);
      // Activations are back in the backend's pool (what model.heldBytes counts), not leaked.
      const held = model.heldBytes()['gpu:0']!;
      expect(modelBytes(gpu.ledger) - gpuBefore).toBe(held);
    } finally {
      await model.unload();
      await weights.close();
    }
    // What remains is the kernel library's per-device constants (freeAll drops those), nothing of the model.
    expect(modelBytes(gpu.ledger), JSON.stringify(gpu.ledger.entries())).toBe(gpuBefore);
    expect(set.cpu.ledger.used).toBe(cpuBefore);
  });

  it('pipeline mode moves the hidden state to cpu and back, once each way per split', async () => {
    const set = await fixtureDevices();
    const weights = await openWeights(LLAMA);
    const model = await loadModel(set, weights, { allocation: 'gpu:0,50%;cpu,*', mode: 'pipeline' });
    try {
      expect(model.plan.blocks.filter((b) => b.execDevice === 'cpu').map((b) => b.storage)).toEqual(['wasm-memory', 'wasm-memory', 'wasm-memory']);
      const ids = (await expectedOf('llama-tiny')).get('input_ids')!;
      const r = await model.forward({ input_ids: ids });
      expect(r.stats.stagedBytes).toBe(0);
      // gpu:0 → cpu (before layers.1) and cpu → gpu:0 (before norm), plus the outputs read back from cpu
      expect(r.stats.moves).toBeGreaterThanOrEqual(2);
      expect(r.stats.movedBytes).toBeGreaterThan(0);
    } finally {
      await model.unload();
      await weights.close();
    }
  });

  it('auto mode decides per block from figures measured on these devices, and runs what it chose', async () => {
    const set = await fixtureDevices();
    const weights = await openWeights(LLAMA);
    const gpuBefore = modelBytes(set.gpus[0]!.ledger);
    const model = await loadModel(set, weights, { allocation: 'gpu:0,50%;cpu,*' });
    try {
      // loadModel measured; asking again returns the same figures without measuring (or touching the cpu) again.
      const m = await measuredCostModel(set, 'gpu:0', async () => { throw new Error('not measured again'); });
      expect(m.measured).toBe(true);
      for (const v of [m.hostToGpuBytesPerSecond, m.gpuFlopsPerSecond, m.cpuFlopsPerSecond, m.hopSeconds]) expect(v > 0 && Number.isFinite(v), String(v)).toBe(true);
      expect(model.plan.mode).toBe('auto');
      const offDevice = model.plan.blocks.filter((b) => b.device === 'cpu');
      expect(offDevice.length).toBe(3);
      // Each choice is the cheaper of the two under the measured figures, and the reason says both times.
      for (const b of offDevice) {
        expect(b.reason).toMatch(/^(stream|pipeline): .* takes [\d.]+ ms a pass, .* [\d.]+ ms$/);
        expect(b.exec === 'stream' ? b.execDevice : 'cpu').toBe(b.exec === 'stream' ? 'gpu:0' : b.execDevice);
      }
      const r = await model.forward({ input_ids: (await expectedOf('llama-tiny')).get('input_ids')! });
      expect(r.outputs.get('logits')!.shape).toEqual([2, 11, 256]);
    } finally {
      await model.unload();
      await weights.close();
    }
    expect(set.gpus[0]!.ledger.entries().filter((e) => e.label.startsWith('measure.'))).toEqual([]);
    expect(modelBytes(set.gpus[0]!.ledger)).toBe(gpuBefore);
  });

  it('missing inputs, unknown entries and a non-LM generate are typed errors that say what to pass', async () => {
    const set = await fixtureDevices();
    const weights = await openWeights(LLAMA);
    const model = await loadModel(set, weights, { allocation: 'gpu:0,100%' });
    try {
      const err = await model.forward(new Map([['ids', { data: Int32Array.of(1), shape: [1, 1] }]])).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(ModelInputError);
      expect((err as ModelInputError).code).toBe('E_MODEL_INPUT');
      expect((err as Error).message).toMatch(/needs input\(s\) input_ids; got ids/);
      await expect(model.forward({}, 'decode')).rejects.toThrow(/has no entry "decode"[\s\S]*entries: forward/);
      await expect(model.generate([], 3)).rejects.toThrow(/the prompt is empty/);
      await expect(model.generate([1, 2], 100_000)).rejects.toThrow(/positions exceed the model's/);
    } finally {
      await model.unload();
      await weights.close();
    }
    await expect(model.forward({})).rejects.toThrow(/was unloaded/);
  });
});
