// The scheduler and the weight placement, on the tiny Llama: where bytes are counted, what a
// stream pass copies, what unload gives back, and the typed errors a caller can meet.
import { describe, expect, it } from 'vitest';
import { openWeights } from '../src/formats/open-weights.ts';
import { loadModel, ModelInputError } from '../src/runtime/model.ts';
import { measuredCostModel } from '../src/runtime/measure.ts';
import { explicitScoresFit, GpuBackend } from '../src/runtime/gpu-backend.ts';
import * as ops from '../src/kernels/ops/index.ts';
import { KernelRecorder } from '../src/kernels/recorder.ts';
import { downloadF32, emptyTensor, uploadTensor } from '../src/kernels/tensor.ts';
import { randomF32 } from './kernels/harness.ts';
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

  it('where host-visible memory runs out, stream tensors stay in host memory and stream through the ring: same logits, ledgers exact', async () => {
    const set = await fixtureDevices();
    const gpu = set.gpus[0]!;
    const gpuBefore = modelBytes(gpu.ledger);
    const cpuBefore = set.cpu.ledger.used;
    const ids = (await expectedOf('llama-tiny')).get('input_ids')!;
    const weights = await openWeights(LLAMA);
    const runWith = async (hostVisibleBudget?: number) => {
      const model = await loadModel(set, weights, { allocation: 'gpu:0,50%;cpu,*', mode: 'stream', hostVisibleBudget });
      try {
        const streamed = model.plan.blocks.filter((b) => b.exec === 'stream').reduce((s, b) => s + b.bytes, 0);
        const hostVisible = set.cpu.ledger.entries().filter((e) => e.label.endsWith('(host-visible)') && !e.label.startsWith('staging ring')).reduce((n, e) => n + e.bytes, 0);
        const hostMemory = set.cpu.ledger.entries().filter((e) => e.label.endsWith('(host memory, ring-streamed)')).reduce((n, e) => n + e.bytes, 0);
        // Every streamed byte is in exactly one of the two stores.
        expect(hostVisible + hostMemory).toBe(streamed);
        const r = await model.forward({ input_ids: ids });
        expect(r.stats.stagedBytes).toBe(streamed);
        // The ring's slots are on the cpu ledger too, and heldBytes says so.
        expect(set.cpu.ledger.used - cpuBefore).toBe(model.heldBytes().cpu);
        expect(modelBytes(gpu.ledger) - gpuBefore).toBe(model.heldBytes()['gpu:0']);
        return { logits: r.outputs.get('logits')!.data, hostVisible, hostMemory };
      } finally {
        await model.unload();
      }
    };
    try {
      const dma = await runWith();
      const ring = await runWith(0);
      const half = await runWith(Math.floor(dma.hostVisible / 2));
      expect(dma.hostMemory).toBe(0);
      expect(ring.hostVisible).toBe(0);
      expect(half.hostVisible).toBeGreaterThan(0);
      expect(half.hostMemory).toBeGreaterThan(0);
      expect(half.hostVisible).toBeLessThanOrEqual(Math.floor(dma.hostVisible / 2));
      // The same bytes reach the same kernels: bit-identical.
      expect(ring.logits).toEqual(dma.logits);
      expect(half.logits).toEqual(dma.logits);
    } finally {
      await weights.close();
    }
    expect(modelBytes(gpu.ledger)).toBe(gpuBefore);
    expect(set.cpu.ledger.used).toBe(cpuBefore);
  });

  it('decoding stages the next pass\'s first streamed blocks early, and counts every pass\'s copies once', async () => {
    const set = await fixtureDevices();
    const weights = await openWeights(LLAMA);
    const model = await loadModel(set, weights, { allocation: 'gpu:0,50%;cpu,*', mode: 'stream' });
    try {
      const perPass = model.plan.blocks.filter((b) => b.exec === 'stream').reduce((s, b) => s + b.bytes, 0);
      const ids = [...(await expectedOf('llama-tiny')).get('input_ids')!.data].slice(0, 5);
      const g = await model.generate(ids, 4);
      expect(g.streamedBytes).toEqual({ prefill: perPass, decode: 3 * perPass });
      // Nothing is left staged: the next pass stages from scratch (a plain forward copies every block).
      const r = await model.forward({ input_ids: { data: Int32Array.from(ids), shape: [1, ids.length] } });
      expect(r.stats.stagedBytes).toBe(perPass);
    } finally {
      await model.unload();
      await weights.close();
    }
  });

  it('weights the cpu device executes count on the cpu ledger as the plan counts them', async () => {
    const set = await fixtureDevices();
    const cpuBefore = set.cpu.ledger.used;
    const weights = await openWeights(LLAMA);
    const model = await loadModel(set, weights, { allocation: 'gpu:0,50%;cpu,*', mode: 'pipeline' });
    try {
      const onCpu = model.plan.blocks.filter((b) => b.execDevice === 'cpu').reduce((s, b) => s + b.bytes, 0);
      expect(onCpu).toBeGreaterThan(0);
      expect(set.cpu.ledger.used - cpuBefore).toBe(onCpu);
      expect(model.heldBytes().cpu).toBe(onCpu);
    } finally {
      await model.unload();
      await weights.close();
    }
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

  it('one wide head (the VAE\'s 512-channel attention) runs as matmuls around a softmax where the scores fit: the flash kernel\'s output', async () => {
    const set = await fixtureDevices();
    const gpu = set.gpus[0]!;
    const wide = { heads: 1, headDim: 160 };
    expect(explicitScoresFit(gpu, [1, 1024, 160], [1, 1024, 160], wide)).toBe(true);
    expect(explicitScoresFit(gpu, [1, 1024, 128], [1, 1024, 128], { heads: 1, headDim: 128 })).toBe(false); // the flash kernel's own width
    expect(explicitScoresFit(gpu, [1, 1024, 320], [1, 1024, 320], { heads: 2, headDim: 160 })).toBe(false);
    expect(explicitScoresFit(gpu, [2, 1024, 160], [2, 1024, 160], wide)).toBe(false);
    expect(explicitScoresFit(gpu, [1, 512, 160], [1, 512, 160], wide)).toBe(false); // too small to matter
    expect(explicitScoresFit(gpu, [1, 2 ** 16, 160], [1, 2 ** 16, 160], wide)).toBe(false); // 16 GiB of scores
    const [lq, lk, d] = [1024, 1100, 160];
    const data = { q: randomF32(lq * d, 1, 1), k: randomF32(lk * d, 2, 1), v: randomF32(lk * d, 3, 1) };
    const b = new GpuBackend(gpu);
    const q = await b.upload(data.q, [1, lq, d]);
    const k = await b.upload(data.k, [1, lk, d]);
    const v = await b.upload(data.v, [1, lk, d]);
    const flash = await emptyTensor(gpu, [1, lq, d]);
    try {
      const rec = new KernelRecorder(gpu);
      const t = (x: typeof q) => (x as unknown as { t: Parameters<typeof ops.attention>[1] }).t;
      await ops.attention(rec, t(q), t(k), t(v), flash, { heads: 1, headDim: d });
      await rec.submit();
      const want = await downloadF32(flash);
      const got = await b.download(await b.attention(q, k, v, wide));
      let maxErr = 0;
      let maxRef = 0;
      for (let i = 0; i < want.length; i++) {
        maxErr = Math.max(maxErr, Math.abs(got[i]! - want[i]!));
        maxRef = Math.max(maxRef, Math.abs(want[i]!));
      }
      expect(maxErr / maxRef).toBeLessThan(1e-5);
    } finally {
      flash.destroy();
      await b.close();
    }
  });
});
