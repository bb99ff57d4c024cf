// CLIP's text encoder (transformers CLIPTextModel): the tiny fixture under the three
// allocations with f32, f16 and bf16 weights; "clip skip" (ComfyUI's CLIPSetLastLayer: the final
// layer norm applied to layer −k's output) against a float64 layer norm of the fixture's own
// hidden states; the same weights under open_clip's names (fused in_proj, [in, out] projection)
// and under a text_model. prefix; table tests of the pooling position rule.
import { copyFileSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openWeights } from '../../src/formats/open-weights.ts';
import { writeSafetensorsFile, type TensorToWrite } from '../../src/formats/safetensors-writer.ts';
import type { Dtype } from '../../src/formats/dtypes.ts';
import type { WeightSet } from '../../src/formats/weights.ts';
import { blockMapOf } from '../../src/models/registry.ts';
import { activationOf, clipSkipLayer, clipTextModel, poolPositions, type ClipTextConfig } from '../../src/models/clip-text/model.ts';
import type { HostTensor } from '../../src/models/program.ts';
import type { ExecutionMode } from '../../src/allocation/planner.ts';
import { loadModel } from '../../src/runtime/model.ts';
import { fixturePath } from '../fixtures.ts';
import { ALLOCATIONS, expectClose, expectedOf, expectIdentical, fixtureDevices, relativeError, TOLERANCE, WEIGHT_FILES } from './harness.ts';

const FIXTURE = 'clip-text-tiny';
const LAYERS = 3;
const HIDDEN = 64;
const EPS = 1e-5;
const OUTPUTS = ['last_hidden_state', 'pooler_output', ...Array.from({ length: LAYERS + 1 }, (_, i) => `hidden_states.${i}`)];

/** nn.LayerNorm over the last dim in float64 (biased variance), rows of `dim`. */
function layerNormF64(x: Float32Array, w: Float32Array, b: Float32Array, dim: number, eps: number): Float32Array {
  const out = new Float32Array(x.length);
  for (let r = 0; r < x.length / dim; r++) {
    let mean = 0;
    for (let i = 0; i < dim; i++) mean += x[r * dim + i]!;
    mean /= dim;
    let v = 0;
    for (let i = 0; i < dim; i++) v += (x[r * dim + i]! - mean) ** 2;
    v /= dim;
    const inv = 1 / Math.sqrt(v + eps);
    for (let i = 0; i < dim; i++) out[r * dim + i] = (x[r * dim + i]! - mean) * inv * w[i]! + b[i]!;
  }
  return out;
}

/** Loads `weights` on this machine's devices, runs forward on `inputs`, unloads. */
async function run(weights: WeightSet, inputs: ReadonlyMap<string, HostTensor>, allocation = 'gpu:0,100%', mode: ExecutionMode = 'stream') {
  const model = await loadModel(await fixtureDevices(), weights, { allocation, mode });
  try {
    return (await model.forward(inputs)).outputs;
  } finally {
    await model.unload();
  }
}

let expected: Map<string, HostTensor>;
let ids: HostTensor;
/** final_layer_norm(hidden_states.2) in f64: ComfyUI's clip skip −2 ("stop at layer −2"). */
let skipped: HostTensor;

beforeAll(async () => {
  expected = await expectedOf(FIXTURE);
  ids = expected.get('input_ids')!;
  const f32 = await openWeights(fixturePath(FIXTURE, 'model.safetensors'));
  try {
    const hs = expected.get(`hidden_states.${LAYERS - 1}`)!;
    skipped = {
      data: layerNormF64(hs.data as Float32Array, await f32.readF32('final_layer_norm.weight'), await f32.readF32('final_layer_norm.bias'), HIDDEN, EPS),
      shape: hs.shape,
    };
  } finally {
    await f32.close();
  }
  expected.set('clip_skip_hidden_state', skipped);
});

describe('clip-text: tables', () => {
  it('pooling position: first eos_token_id, argmax when every row peaks at 49407, 0 without EOS', () => {
    const t = (rows: number[][]) => ({ data: Int32Array.from(rows.flat()), shape: [rows.length, rows[0]!.length] });
    // transformers ≥ 4.5x: eos_token_id set properly (here 511) → its first position.
    expect(poolPositions(t([[5, 511, 9, 511], [511, 0, 0, 0]]), 511)).toEqual([1, 0]);
    // OpenAI's ids (max 49407 in every row): argmax's first maximum, whatever eos_token_id says (the legacy 2).
    expect(poolPositions(t([[49406, 320, 49407, 49407], [49406, 49407, 49407, 49407]]), 2)).toEqual([2, 1]);
    // Not every row has 49407: the eos rule, and torch's argmax of an all-false row is 0.
    expect(poolPositions(t([[49406, 320, 49407, 0], [49406, 320, 7, 0]]), 49407)).toEqual([2, 0]);
    // The fixture: EOS (511) at position 11 in both rows.
    expect(poolPositions(ids, 511)).toEqual([11, 11]);
  });

  it('clip skip: ±k → hidden_states index N + 1 − k; 0 or absent: none', () => {
    const config = { layers: 12, clipSkip: 0 } as ClipTextConfig;
    const k = (v: number) => clipSkipLayer(config, new Map([['clip_skip', { data: Int32Array.of(v), shape: [1] }]]));
    expect(k(-1)).toBe(12);
    expect(k(1)).toBe(12);
    expect(k(-2)).toBe(11);
    expect(k(2)).toBe(11);
    expect(k(-12)).toBe(1);
    expect(k(0)).toBe(0);
    expect(clipSkipLayer(config, new Map())).toBe(0);
    expect(clipSkipLayer({ ...config, clipSkip: -2 }, new Map())).toBe(11);
    expect(() => k(-13)).toThrow(/clip_skip/);
  });

  it('activations by transformers name', () => {
    expect(activationOf('quick_gelu')).toBe('quick_gelu');
    expect(activationOf('gelu')).toBe('gelu');
    expect(activationOf('gelu_new')).toBe('gelu_tanh');
    expect(activationOf('gelu_pytorch_tanh')).toBe('gelu_tanh');
    expect(() => activationOf('relu')).toThrow(/hidden_act/);
  });

  it('the fixture config', async () => {
    const w = await openWeights(fixturePath(FIXTURE, 'model.safetensors'));
    try {
      const map = blockMapOf(w);
      expect(map.family).toBe('clip-text');
      const config = clipTextModel.configure(w, map);
      expect(config).toEqual({
        hidden: 64, heads: 4, headDim: 16, layers: 3, intermediate: 128, eps: 1e-5, act: 'quick_gelu',
        eosTokenId: 511, maxPositions: 77, clipSkip: 0, projection: false,
      });
      expect(clipTextModel.canonical(map.scheme, w, config).size).toBe(0);
      expect(clipTextModel.entries.forward!.outputs(config, new Map([['input_ids', ids]]))).toEqual(OUTPUTS);
    } finally {
      await w.close();
    }
  });
});

const WEIGHTS = [WEIGHT_FILES.f32, WEIGHT_FILES.f16, WEIGHT_FILES.bf16] as const;

describe.each(WEIGHTS)('clip-text-tiny, $dtype weights', ({ file, tol }) => {
  let reference: Map<string, HostTensor> | undefined;
  it.each(ALLOCATIONS)('$label: every output and clip skip −2 within tolerance', async ({ allocation, mode }) => {
    const weights = await openWeights(fixturePath(FIXTURE, file));
    try {
      const inputs = new Map([['input_ids', ids], ['clip_skip', { data: Int32Array.of(-2), shape: [1] }]]);
      const outputs = await run(weights, inputs, allocation, mode);
      const names = [...OUTPUTS, 'clip_skip_hidden_state'];
      const worst = expectClose(outputs, expected, names, tol);
      console.log(`clip-text-tiny ${file} ${allocation} ${mode}: ${Object.entries(worst).map(([n, e]) => `${n} ${e.toExponential(2)}`).join(', ')}`);
      if (mode === 'stream') {
        if (!reference) reference = outputs;
        else expectIdentical(outputs, reference, names);
      }
    } finally {
      await weights.close();
    }
  });
});

describe('clip-text-tiny: clip skip from config.json, and without it', () => {
  it('config clip_skip −2 gives the input-driven result bit for bit; no clip skip, no extra output', async () => {
    const weights = await openWeights(fixturePath(FIXTURE, 'model.safetensors'));
    try {
      const viaInput = await run(weights, new Map([['input_ids', ids], ['clip_skip', { data: Int32Array.of(2), shape: [1] }]]));
      const configured = weights.view('clip-skip', (n) => n, { ...weights.config, clip_skip: -2 });
      const viaConfig = await run(configured, new Map([['input_ids', ids]]));
      expectIdentical(viaConfig, viaInput, ['clip_skip_hidden_state', 'last_hidden_state']);
      expect(relativeError(viaConfig.get('clip_skip_hidden_state')!, skipped)).toBeLessThanOrEqual(TOLERANCE.f32);
      const plain = await run(weights, new Map([['input_ids', ids]]));
      expect(plain.has('clip_skip_hidden_state')).toBe(false);
      expectIdentical(plain, viaInput, OUTPUTS);
      // clip skip −1 is the last layer: the final norm of hidden_states.N = last_hidden_state.
      const last = await run(weights, new Map([['input_ids', ids], ['clip_skip', { data: Int32Array.of(-1), shape: [1] }]]));
      expect(relativeError(last.get('clip_skip_hidden_state')!, expected.get('last_hidden_state')!)).toBeLessThanOrEqual(TOLERANCE.f32);
    } finally {
      await weights.close();
    }
  });
});

describe('clip-text-tiny: layers split between gpu:0 and cpu', () => {
  it('gpu:0,300kb;cpu,* pipeline: layer 0 on gpu:0, layers 1-2 on cpu, final norm (and clip skip) back on gpu:0', async () => {
    const weights = await openWeights(fixturePath(FIXTURE, 'model.safetensors'));
    try {
      const model = await loadModel(await fixtureDevices(), weights, { allocation: 'gpu:0,300kb;cpu,*', mode: 'pipeline' });
      try {
        const exec = Object.fromEntries(model.plan.blocks.map((b) => [b.name, b.execDevice]));
        expect([exec['layers.0'], exec['layers.1'], exec['layers.2'], exec.final_layer_norm]).toEqual(['gpu:0', 'cpu', 'cpu', 'gpu:0']);
        const { outputs } = await model.forward(new Map([['input_ids', ids], ['clip_skip', { data: Int32Array.of(-2), shape: [1] }]]));
        const worst = expectClose(outputs, expected, [...OUTPUTS, 'clip_skip_hidden_state'], TOLERANCE.f32);
        console.log(`clip-text-tiny model.safetensors gpu:0,300kb;cpu,* pipeline: ${Object.entries(worst).map(([n, e]) => `${n} ${e.toExponential(2)}`).join(', ')}`);
      } finally {
        await model.unload();
      }
    } finally {
      await weights.close();
    }
  });
});

/** x [rows, inner] @ p [inner, out] in f64 (open_clip's text_projection is applied as x @ P). */
function matmulF64(x: Float32Array, p: Float32Array, inner: number, out: number): Float32Array {
  const rows = x.length / inner;
  const y = new Float32Array(rows * out);
  for (let r = 0; r < rows; r++) {
    for (let o = 0; o < out; o++) {
      let s = 0;
      for (let i = 0; i < inner; i++) s += x[r * inner + i]! * p[i * out + o]!;
      y[r * out + o] = s;
    }
  }
  return y;
}

describe('clip-text-tiny under other names', () => {
  let dir: string;
  let hf: WeightSet;
  const PROJ = 24;
  const projection = Float32Array.from({ length: HIDDEN * PROJ }, (_, i) => Math.sin(i * 0.37) * 0.1);

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'clip-names-'));
    hf = await openWeights(fixturePath(FIXTURE, 'model.safetensors'));
  });
  afterAll(async () => {
    await hf?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  const bytes = (f: Float32Array) => new Uint8Array(f.buffer, f.byteOffset, f.byteLength);
  const f32 = (name: string, shape: readonly number[], data: Float32Array): TensorToWrite => ({ name, dtype: 'F32' as Dtype, shape, data: bytes(data) });

  it('open_clip names (fused in_proj, positional_embedding, ln_final, text_projection [in, out]) run the same model', async () => {
    const t: TensorToWrite[] = [];
    const copy = async (to: string, from: string) => t.push(f32(to, hf.tensor(from).shape, await hf.readF32(from)));
    await copy('token_embedding.weight', 'embeddings.token_embedding.weight');
    await copy('positional_embedding', 'embeddings.position_embedding.weight');
    for (let i = 0; i < LAYERS; i++) {
      const o = `transformer.resblocks.${i}.`;
      const h = `encoder.layers.${i}.`;
      for (const s of ['weight', 'bias']) {
        await copy(`${o}ln_1.${s}`, `${h}layer_norm1.${s}`);
        await copy(`${o}ln_2.${s}`, `${h}layer_norm2.${s}`);
        await copy(`${o}attn.out_proj.${s}`, `${h}self_attn.out_proj.${s}`);
        await copy(`${o}mlp.c_fc.${s}`, `${h}mlp.fc1.${s}`);
        await copy(`${o}mlp.c_proj.${s}`, `${h}mlp.fc2.${s}`);
        const parts = await Promise.all(['q', 'k', 'v'].map((p) => hf.readF32(`${h}self_attn.${p}_proj.${s}`)));
        const fused = new Float32Array(parts.reduce((n, p) => n + p.length, 0));
        parts.reduce((at, p) => (fused.set(p, at), at + p.length), 0);
        t.push(f32(`${o}attn.in_proj_${s}`, s === 'weight' ? [3 * HIDDEN, HIDDEN] : [3 * HIDDEN], fused));
      }
    }
    await copy('ln_final.weight', 'final_layer_norm.weight');
    await copy('ln_final.bias', 'final_layer_norm.bias');
    t.push(f32('text_projection', [HIDDEN, PROJ], projection));
    await writeSafetensorsFile(join(dir, 'open_clip.safetensors'), t);
    // config.json beside it: the fixture's quick_gelu and eos_token_id (open_clip files carry no config).
    copyFileSync(fixturePath(FIXTURE, 'config.json'), join(dir, 'config.json'));
    const oc = await openWeights(join(dir, 'open_clip.safetensors'));
    try {
      const map = blockMapOf(oc);
      expect(map.scheme).toBe('openclip');
      const config = clipTextModel.configure(oc, map);
      expect(config.projection).toBe(true);
      const canonical = clipTextModel.canonical(map.scheme, oc, config);
      expect(canonical.get('encoder.layers.1.self_attn.k_proj.weight')!.rows!.rowOf(0)).toBe(HIDDEN);
      expect(canonical.get('encoder.layers.1.self_attn.v_proj.bias')!.rows!.rowOf(HIDDEN - 1)).toBe(3 * HIDDEN - 1);
      expect(canonical.get('text_projection.weight')).toEqual({ source: 'text_projection', transpose: true });
      const wantEmbeds = matmulF64(expected.get('pooler_output')!.data as Float32Array, projection, HIDDEN, PROJ);
      for (const { allocation, mode } of [ALLOCATIONS[0]!, ALLOCATIONS[1]!]) {
        const outputs = await run(oc, new Map([['input_ids', ids]]), allocation, mode);
        expectClose(outputs, expected, OUTPUTS, TOLERANCE.f32);
        expect(relativeError(outputs.get('text_embeds')!, { data: wantEmbeds, shape: [2, PROJ] })).toBeLessThanOrEqual(TOLERANCE.f32);
      }
    } finally {
      await oc.close();
    }
  });

  it('a text_model.-prefixed checkpoint (CLIPTextModelWithProjection, transformers 4.x) runs the same model', async () => {
    const t: TensorToWrite[] = [];
    for (const name of hf.tensors.keys()) t.push(f32(`text_model.${name}`, hf.tensor(name).shape, await hf.readF32(name)));
    // nn.Linear(hidden, proj): weight [proj, hidden], the transpose of open_clip's.
    const linear = new Float32Array(PROJ * HIDDEN);
    for (let i = 0; i < HIDDEN; i++) for (let o = 0; o < PROJ; o++) linear[o * HIDDEN + i] = projection[i * PROJ + o]!;
    t.push(f32('text_projection.weight', [PROJ, HIDDEN], linear));
    const sub = join(dir, 'prefixed');
    mkdirSync(sub);
    await writeSafetensorsFile(join(sub, 'model.safetensors'), t);
    copyFileSync(fixturePath(FIXTURE, 'config.json'), join(sub, 'config.json'));
    const pw = await openWeights(join(sub, 'model.safetensors'));
    try {
      const map = blockMapOf(pw);
      const config = clipTextModel.configure(pw, map);
      const canonical = clipTextModel.canonical(map.scheme, pw, config);
      expect(canonical.get('encoder.layers.2.mlp.fc2.bias')).toEqual({ source: 'text_model.encoder.layers.2.mlp.fc2.bias' });
      expect(canonical.has('text_projection.weight')).toBe(false);
      const outputs = await run(pw, new Map([['input_ids', ids]]), ALLOCATIONS[1]!.allocation, ALLOCATIONS[1]!.mode);
      expectClose(outputs, expected, OUTPUTS, TOLERANCE.f32);
      const wantEmbeds = matmulF64(expected.get('pooler_output')!.data as Float32Array, projection, HIDDEN, PROJ);
      expect(relativeError(outputs.get('text_embeds')!, { data: wantEmbeds, shape: [2, PROJ] })).toBeLessThanOrEqual(TOLERANCE.f32);
    } finally {
      await pw.close();
    }
  });
});
