// GPT2LMHeadModel: the gpt2-tiny fixture (Conv1D weights transposed at load, learned positions,
// tanh GELU, head tied to wte), f32 and its f16/bf16 casts, under the three allocations;
// greedy tokens; KV-cache decoding (positions continue from the cache) against a full
// recompute at every step; the canonical names and config.
import { afterAll, describe, expect, it } from 'vitest';
import { openWeights } from '../../src/formats/open-weights.ts';
import type { HostTensor } from '../../src/models/program.ts';
import { blockMapOf } from '../../src/models/registry.ts';
import { gpt2Model } from '../../src/models/gpt2/model.ts';
import { loadModel, type LoadedModel, type LoadOptions } from '../../src/runtime/model.ts';
import { fixturePath } from '../fixtures.ts';
import { ALLOCATIONS, expectClose, expectedOf, expectIdentical, fixtureDevices, relativeError, TOLERANCE } from './harness.ts';

const FIXTURE = 'gpt2-tiny';
const OUTPUTS = ['logits', 'hidden_states.0', 'hidden_states.1', 'hidden_states.2', 'hidden_states.3'];

const worst: Record<string, number> = {};
afterAll(() => {
  console.log(`gpt2 worst error / max|expected|: ${JSON.stringify(worst)}`);
});

function note(key: string, errors: Record<string, number>): void {
  worst[key] = Math.max(worst[key] ?? 0, ...Object.values(errors));
}

async function withModel<T>(file: string, o: LoadOptions, fn: (m: LoadedModel) => Promise<T>): Promise<T> {
  const weights = await openWeights(fixturePath(FIXTURE, file));
  const model = await loadModel(await fixtureDevices(), weights, o);
  try {
    return await fn(model);
  } finally {
    await model.unload();
    await weights.close();
  }
}

describe('gpt2-tiny', () => {
  const cases = [
    { dtype: 'f32', file: 'model.safetensors', tol: TOLERANCE.f32 },
    { dtype: 'f16', file: 'model.f16.safetensors', tol: TOLERANCE.f16 },
    { dtype: 'bf16', file: 'model.bf16.safetensors', tol: TOLERANCE.bf16 },
  ] as const;

  for (const c of cases) {
    it(`${c.dtype}: every output within ${c.tol} under the three allocations; stream bit-identical to all-on-gpu:0`, async () => {
      const expected = await expectedOf(FIXTURE);
      const runs: Map<string, HostTensor>[] = [];
      for (const a of ALLOCATIONS) {
        const outputs = await withModel(c.file, a, async (m) => {
          expect(m.definition.family).toBe('gpt2');
          return (await m.forward(new Map([['input_ids', expected.get('input_ids')!]]))).outputs;
        });
        note(`${FIXTURE} ${c.dtype}`, expectClose(outputs, expected, OUTPUTS, c.tol));
        runs.push(outputs);
      }
      expectIdentical(runs[0]!, runs[2]!, OUTPUTS);
    });
  }

  for (const a of ALLOCATIONS) {
    it(`f32, ${a.label}: greedy tokens identical; KV-cache decode equals a full recompute at every step`, async () => {
      const expected = await expectedOf(FIXTURE);
      const ids = expected.get('input_ids')!;
      const L = ids.shape[1]!;
      const prompt = Array.from(ids.data.subarray(0, L));
      const want = Array.from(expected.get('greedy_tokens')!.data);
      const err = await withModel('model.safetensors', a, async (m) => {
        const gen = await m.generate(prompt, want.length);
        expect(gen.tokens).toEqual(want);
        let worstStep = 0;
        for (let s = 0; s < gen.stepLogits.length; s++) {
          const seq = [...prompt, ...gen.tokens.slice(0, s)];
          const { outputs } = await m.forward(new Map([['input_ids', { data: Int32Array.from(seq), shape: [1, seq.length] }]]));
          const logits = outputs.get('logits')!;
          const vocab = logits.shape[2]!;
          const ref = (logits.data as Float32Array).slice(logits.data.length - vocab);
          const e = relativeError({ data: gen.stepLogits[s]!, shape: [vocab] }, { data: ref, shape: [vocab] });
          expect(e, `step ${s}: cached decode vs full recompute`).toBeLessThanOrEqual(1e-4);
          worstStep = Math.max(worstStep, e);
        }
        return worstStep;
      });
      note(`${FIXTURE} kv-vs-recompute`, { err });
    });
  }

  it('config from config.json; canonical names: Conv1D weights transposed, the rest as stored', async () => {
    const weights = await openWeights(fixturePath(FIXTURE));
    try {
      const config = gpt2Model.configure(weights, blockMapOf(weights));
      expect(config).toEqual({
        hidden: 64, layers: 3, heads: 4, headDim: 16, inner: 256, vocab: 256, positions: 128, eps: 1e-5, act: 'gelu_tanh',
        scaleAttnWeights: true, scaleAttnByInverseLayerIdx: false, prefix: 'transformer.', tied: true,
      });
      const map = gpt2Model.canonical('transformers', weights, config);
      const conv = [...weights.tensors.keys()].filter((n) => /\.(c_attn|c_proj|c_fc)\.weight$/.test(n));
      expect(conv.length).toBe(12);
      expect([...map.keys()].sort()).toEqual(conv.sort());
      for (const n of conv) expect(map.get(n)).toEqual({ source: n, transpose: true });
      // GPT2Model files (the original hub checkpoint) have no "transformer." prefix: the canonical names add it.
      const bare = weights.view('bare', (n) => n.replace(/^transformer\./, ''));
      const bareMap = gpt2Model.canonical('transformers', bare, gpt2Model.configure(bare, blockMapOf(bare)));
      expect(bareMap.get('transformer.wte.weight')).toEqual({ source: 'wte.weight' });
      expect(bareMap.get('transformer.h.2.mlp.c_fc.weight')).toEqual({ source: 'h.2.mlp.c_fc.weight', transpose: true });
      expect(bareMap.size).toBe(weights.tensors.size);
    } finally {
      await weights.close();
    }
  });
});
