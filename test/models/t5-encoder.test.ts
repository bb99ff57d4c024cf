// T5's encoder (transformers T5EncoderModel): the tiny fixture under the three allocations with
// f32, f16 and bf16 weights. Block 0 computes the relative position bias and every later block
// reads it as an activation (a plan is a graph): the split runs put blocks 0 and 1 on different
// devices, so the bias travels. Also: the feed_forward_proj table, a checkpoint that stores the
// embedding only as encoder.embed_tokens.weight, and an attention mask.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { openWeights } from '../../src/formats/open-weights.ts';
import { writeSafetensorsFile, type TensorToWrite } from '../../src/formats/safetensors-writer.ts';
import type { Dtype } from '../../src/formats/dtypes.ts';
import type { WeightSet } from '../../src/formats/weights.ts';
import { blockMapOf } from '../../src/models/registry.ts';
import { t5EncoderModel, t5FeedForward } from '../../src/models/t5-encoder/model.ts';
import type { HostTensor } from '../../src/models/program.ts';
import type { ExecutionMode } from '../../src/allocation/planner.ts';
import { loadModel } from '../../src/runtime/model.ts';
import { fixturePath } from '../fixtures.ts';
import { ALLOCATIONS, expectClose, expectedOf, expectIdentical, fixtureDevices, runFixture, TOLERANCE, WEIGHT_FILES } from './harness.ts';

const FIXTURE = 't5-encoder-tiny';
const OUTPUTS = ['last_hidden_state', 'hidden_states.0', 'hidden_states.1', 'hidden_states.2'];

async function run(weights: WeightSet, inputs: ReadonlyMap<string, HostTensor>, allocation = 'gpu:0,100%', mode: ExecutionMode = 'stream') {
  const model = await loadModel(await fixtureDevices(), weights, { allocation, mode });
  try {
    return { outputs: (await model.forward(inputs)).outputs, plan: model.plan };
  } finally {
    await model.unload();
  }
}

describe('t5-encoder: tables', () => {
  it('feed_forward_proj as transformers reads it: gated-gelu is gelu_new (tanh)', () => {
    expect(t5FeedForward('gated-gelu')).toEqual({ gated: true, act: 'gelu_tanh' });
    // dense_act_fn is ignored for gated-gelu (T5Config forces gelu_new).
    expect(t5FeedForward('gated-gelu', 'gelu')).toEqual({ gated: true, act: 'gelu_tanh' });
    expect(t5FeedForward('gated-silu')).toEqual({ gated: true, act: 'silu' });
    expect(t5FeedForward('gelu')).toEqual({ gated: false, act: 'gelu' });
    expect(t5FeedForward('gated-gelu_pytorch_tanh')).toEqual({ gated: true, act: 'gelu_tanh' });
    expect(() => t5FeedForward('relu')).toThrow(/relu/);
    expect(() => t5FeedForward('gated-gelu-new')).toThrow(/feed_forward_proj/);
  });

  it('the fixture config; outputs hidden_states.0..N with N the final norm', async () => {
    const w = await openWeights(fixturePath(FIXTURE, 'model.safetensors'));
    try {
      const map = blockMapOf(w);
      expect(map.family).toBe('t5-encoder');
      const config = t5EncoderModel.configure(w, map);
      expect(config).toEqual({
        dModel: 64, heads: 4, dKv: 16, layers: 2, dFf: 128, eps: 1e-6, numBuckets: 32, maxDistance: 128, gated: true, act: 'gelu_tanh',
      });
      expect(t5EncoderModel.canonical(map.scheme, w, config).size).toBe(0);
      expect(t5EncoderModel.entries.forward!.outputs(config, new Map())).toEqual(OUTPUTS);
      // Without config.json (ComfyUI's t5xxl files): the same config from shapes.
      const bare = w.view('bare', (n) => n, null);
      expect(t5EncoderModel.configure(bare, blockMapOf(bare))).toEqual(config);
    } finally {
      await w.close();
    }
  });
});

const WEIGHTS = [WEIGHT_FILES.f32, WEIGHT_FILES.f16, WEIGHT_FILES.bf16] as const;

describe.each(WEIGHTS)('t5-encoder-tiny, $dtype weights', ({ file, tol }) => {
  let reference: Map<string, HostTensor> | undefined;
  it.each(ALLOCATIONS)('$label: every output within tolerance', async ({ allocation, mode }) => {
    // runFixture unloads the model and closes the weights; its plan stays readable.
    const { outputs, expected, model } = await runFixture(FIXTURE, { weightsFile: file, allocation, mode });
    const worst = expectClose(outputs, expected, OUTPUTS, tol);
    const where = model.plan.blocks.filter((b) => /^block\./.test(b.name)).map((b) => `${b.name}@${b.execDevice}`).join(' ');
    console.log(`t5-encoder-tiny ${file} ${allocation} ${mode} [${where}]: ${Object.entries(worst).map(([n, e]) => `${n} ${e.toExponential(2)}`).join(', ')}`);
    if (mode === 'stream') {
      if (!reference) reference = outputs;
      else expectIdentical(outputs, reference, OUTPUTS);
    }
  });
});

describe('t5-encoder-tiny: other checkpoints and inputs', () => {
  // Block 0 computes the bias; block 1 reads it. Byte shares that put them on different
  // devices (the embedding and final norm are pinned to gpu:0 and count against its share).
  it.each([
    { allocation: 'gpu:0,240kb;cpu,*', block0: 'gpu:0', block1: 'cpu' },
    { allocation: 'cpu,170kb;gpu:0,*', block0: 'cpu', block1: 'gpu:0' },
  ])('the position bias crosses devices: $allocation pipeline', async ({ allocation, block0, block1 }) => {
    const { outputs, expected, model } = await runFixture(FIXTURE, { allocation, mode: 'pipeline' });
    const exec = Object.fromEntries(model.plan.blocks.map((b) => [b.name, b.execDevice]));
    expect([exec['block.0'], exec['block.1']]).toEqual([block0, block1]);
    const worst = expectClose(outputs, expected, OUTPUTS, TOLERANCE.f32);
    console.log(`t5-encoder-tiny model.safetensors ${allocation} pipeline [block.0@${block0} block.1@${block1}]: ${Object.entries(worst).map(([n, e]) => `${n} ${e.toExponential(2)}`).join(', ')}`);
  });

  it('the embedding stored only as encoder.embed_tokens.weight, blocks split over gpu:0 and cpu', async () => {
    const dir = mkdtempSync(join(tmpdir(), 't5-embed-'));
    const hf = await openWeights(fixturePath(FIXTURE, 'model.safetensors'));
    try {
      const t: TensorToWrite[] = [];
      for (const name of hf.tensors.keys()) {
        const data = await hf.readF32(name);
        t.push({ name: name === 'shared.weight' ? 'encoder.embed_tokens.weight' : name, dtype: 'F32' as Dtype, shape: hf.tensor(name).shape, data: new Uint8Array(data.buffer, data.byteOffset, data.byteLength) });
      }
      await writeSafetensorsFile(join(dir, 'model.safetensors'), t);
      const w = await openWeights(join(dir, 'model.safetensors'));
      try {
        const map = blockMapOf(w);
        const config = t5EncoderModel.configure(w, map);
        expect(t5EncoderModel.canonical(map.scheme, w, config).get('shared.weight')).toEqual({ source: 'encoder.embed_tokens.weight' });
        const expected = await expectedOf(FIXTURE);
        const { outputs } = await run(w, new Map([['input_ids', expected.get('input_ids')!]]), ALLOCATIONS[1]!.allocation, ALLOCATIONS[1]!.mode);
        expectClose(outputs, expected, OUTPUTS, TOLERANCE.f32);
      } finally {
        await w.close();
      }
    } finally {
      await hf.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('attention_mask: all ones changes nothing; masking a row\'s tail equals running the row truncated', async () => {
    const w = await openWeights(fixturePath(FIXTURE, 'model.safetensors'));
    try {
      const expected = await expectedOf(FIXTURE);
      const ids = expected.get('input_ids')!;
      const ones = { data: new Int32Array(20).fill(1), shape: [2, 10] };
      const full = await run(w, new Map([['input_ids', ids], ['attention_mask', ones]]));
      expectClose(full.outputs, expected, OUTPUTS, TOLERANCE.f32);
      // Row 0 with its last 4 keys masked: the first 6 positions equal a 6-token run (T5 has
      // no absolute positions, and relative positions among the first 6 are the same).
      const mask = { data: Int32Array.from({ length: 20 }, (_, i) => (i < 6 || i >= 10 ? 1 : 0)), shape: [2, 10] };
      const masked = await run(w, new Map([['input_ids', ids], ['attention_mask', mask]]));
      const short = await run(w, new Map([['input_ids', { data: ids.data.slice(0, 6), shape: [1, 6] }]]));
      const a = masked.outputs.get('last_hidden_state')!.data;
      const b = short.outputs.get('last_hidden_state')!.data;
      let maxRef = 0;
      let maxErr = 0;
      for (let i = 0; i < 6 * 64; i++) {
        maxRef = Math.max(maxRef, Math.abs(b[i]!));
        maxErr = Math.max(maxErr, Math.abs(a[i]! - b[i]!));
      }
      expect(maxErr / maxRef).toBeLessThanOrEqual(1e-5);
      // Row 1 (unmasked) is unchanged.
      const rowLen = 10 * 64;
      let err1 = 0;
      const e = expected.get('last_hidden_state')!.data;
      for (let i = rowLen; i < 2 * rowLen; i++) err1 = Math.max(err1, Math.abs(a[i]! - e[i]!));
      expect(err1).toBeLessThanOrEqual(1e-3 * Math.max(...Array.from(e, Math.abs)));
    } finally {
      await w.close();
    }
  });
});
