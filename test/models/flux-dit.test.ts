// FLUX's transformer (diffusers FluxTransformer2DModel): the tiny fixture (1 double block, 2
// single blocks, RoPE axes 4/6/6, guidance) under the three allocations with f32 and bf16
// weights, the same weights under BFL's original names (fused qkv, fused linear1, the final
// norm's halves swapped) written to a temporary checkpoint, and table tests of the BFL name
// mapping and of the rotary table's token order.
import { mkdtempSync, copyFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openWeights } from '../../src/formats/open-weights.ts';
import { writeSafetensorsFile, type TensorToWrite } from '../../src/formats/safetensors-writer.ts';
import type { Dtype } from '../../src/formats/dtypes.ts';
import type { WeightSet } from '../../src/formats/weights.ts';
import { blockMapOf } from '../../src/models/registry.ts';
import { bflToDiffusers, rowRange, swapHalves } from '../../src/models/flux-dit/bfl-names.ts';
import { configureFluxDit, fluxDitModel, fluxRopeSpec } from '../../src/models/flux-dit/model.ts';
import { fixturePath } from '../fixtures.ts';
import { loadModel } from '../../src/runtime/model.ts';
import type { HostTensor } from '../../src/models/program.ts';
import { ALLOCATIONS, expectClose, expectedOf, expectIdentical, fixtureDevices, runFixture, TOLERANCE, WEIGHT_FILES } from './harness.ts';

const FIXTURE = 'flux-dit-tiny';

/**
 * The fixture's diffusers tensors under BFL's names, fused the way BFL stores them (the inverse
 * of diffusers' convert_flux_transformer_checkpoint_to_diffusers), raw bytes in their dtype.
 */
async function toBfl(weights: WeightSet): Promise<TensorToWrite[]> {
  const raw = async (name: string) => ({ t: weights.tensor(name), bytes: await weights.readRaw(name) });
  const out: TensorToWrite[] = [];
  const put = async (bfl: string, diffusers: string) => {
    for (const s of ['weight', 'bias']) {
      const name = `${diffusers}.${s}`;
      if (!weights.tensors.has(name)) continue;
      const { t, bytes } = await raw(name);
      out.push({ name: `${bfl}.${s}`, dtype: t.dtype as Dtype, shape: t.shape, data: bytes });
    }
  };
  const putNorm = async (bfl: string, diffusers: string) => {
    const { t, bytes } = await raw(diffusers);
    out.push({ name: bfl, dtype: t.dtype as Dtype, shape: t.shape, data: bytes });
  };
  // Stacks tensors by rows (the first dimension): their bytes one after another.
  const fuse = async (bfl: string, parts: readonly string[]) => {
    for (const s of ['weight', 'bias']) {
      const got = await Promise.all(parts.map((p) => raw(`${p}.${s}`)));
      const shape = [got.reduce((n, g) => n + g.t.shape[0]!, 0), ...got[0]!.t.shape.slice(1)];
      const data = new Uint8Array(got.reduce((n, g) => n + g.bytes.length, 0));
      let at = 0;
      for (const g of got) {
        data.set(g.bytes, at);
        at += g.bytes.length;
      }
      out.push({ name: `${bfl}.${s}`, dtype: got[0]!.t.dtype as Dtype, shape, data });
    }
  };
  await put('img_in', 'x_embedder');
  await put('txt_in', 'context_embedder');
  await put('time_in.in_layer', 'time_text_embed.timestep_embedder.linear_1');
  await put('time_in.out_layer', 'time_text_embed.timestep_embedder.linear_2');
  await put('guidance_in.in_layer', 'time_text_embed.guidance_embedder.linear_1');
  await put('guidance_in.out_layer', 'time_text_embed.guidance_embedder.linear_2');
  await put('vector_in.in_layer', 'time_text_embed.text_embedder.linear_1');
  await put('vector_in.out_layer', 'time_text_embed.text_embedder.linear_2');
  for (let i = 0; weights.tensors.has(`transformer_blocks.${i}.norm1.linear.weight`); i++) {
    const d = `transformer_blocks.${i}`;
    const b = `double_blocks.${i}`;
    await put(`${b}.img_mod.lin`, `${d}.norm1.linear`);
    await put(`${b}.txt_mod.lin`, `${d}.norm1_context.linear`);
    await fuse(`${b}.img_attn.qkv`, [`${d}.attn.to_q`, `${d}.attn.to_k`, `${d}.attn.to_v`]);
    await fuse(`${b}.txt_attn.qkv`, [`${d}.attn.add_q_proj`, `${d}.attn.add_k_proj`, `${d}.attn.add_v_proj`]);
    await putNorm(`${b}.img_attn.norm.query_norm.scale`, `${d}.attn.norm_q.weight`);
    await putNorm(`${b}.img_attn.norm.key_norm.scale`, `${d}.attn.norm_k.weight`);
    await putNorm(`${b}.txt_attn.norm.query_norm.scale`, `${d}.attn.norm_added_q.weight`);
    await putNorm(`${b}.txt_attn.norm.key_norm.scale`, `${d}.attn.norm_added_k.weight`);
    await put(`${b}.img_attn.proj`, `${d}.attn.to_out.0`);
    await put(`${b}.txt_attn.proj`, `${d}.attn.to_add_out`);
    await put(`${b}.img_mlp.0`, `${d}.ff.net.0.proj`);
    await put(`${b}.img_mlp.2`, `${d}.ff.net.2`);
    await put(`${b}.txt_mlp.0`, `${d}.ff_context.net.0.proj`);
    await put(`${b}.txt_mlp.2`, `${d}.ff_context.net.2`);
  }
  for (let i = 0; weights.tensors.has(`single_transformer_blocks.${i}.norm.linear.weight`); i++) {
    const d = `single_transformer_blocks.${i}`;
    const b = `single_blocks.${i}`;
    await put(`${b}.modulation.lin`, `${d}.norm.linear`);
    await fuse(`${b}.linear1`, [`${d}.attn.to_q`, `${d}.attn.to_k`, `${d}.attn.to_v`, `${d}.proj_mlp`]);
    await put(`${b}.linear2`, `${d}.proj_out`);
    await putNorm(`${b}.norm.query_norm.scale`, `${d}.attn.norm_q.weight`);
    await putNorm(`${b}.norm.key_norm.scale`, `${d}.attn.norm_k.weight`);
  }
  // BFL's final modulation is (shift, scale); diffusers' (scale, shift).
  for (const s of ['weight', 'bias']) {
    const { t, bytes } = await raw(`norm_out.linear.${s}`);
    const half = bytes.length / 2;
    const data = new Uint8Array(bytes.length);
    data.set(bytes.subarray(half), 0);
    data.set(bytes.subarray(0, half), half);
    out.push({ name: `final_layer.adaLN_modulation.1.${s}`, dtype: t.dtype as Dtype, shape: t.shape, data });
  }
  await put('final_layer.linear', 'proj_out');
  return out;
}

/** Rows of a stored tensor picked by a CanonicalTensor's rows (row = the product of the other dims). */
function cutRows(data: Float32Array, shape: readonly number[], rows?: { count: number; rowOf: (i: number) => number }): Float32Array {
  if (!rows) return data;
  const width = shape.slice(1).reduce((a, b) => a * b, 1);
  const out = new Float32Array(rows.count * width);
  for (let i = 0; i < rows.count; i++) out.set(data.subarray(rows.rowOf(i) * width, (rows.rowOf(i) + 1) * width), i * width);
  return out;
}

describe('flux-dit: BFL names', () => {
  let dir: string;
  let diffusers: WeightSet;
  let bfl: WeightSet;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'flux-bfl-'));
    diffusers = await openWeights(fixturePath(FIXTURE, 'model.safetensors'));
    await writeSafetensorsFile(join(dir, 'model.safetensors'), await toBfl(diffusers));
    bfl = await openWeights(join(dir, 'model.safetensors'));
  });
  afterAll(async () => {
    await bfl?.close();
    await diffusers?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('row helpers: ranges and swapped halves', () => {
    const r = rowRange(8, 4);
    expect(r.count).toBe(4);
    expect([0, 1, 2, 3].map(r.rowOf)).toEqual([8, 9, 10, 11]);
    const s = swapHalves(3);
    expect(s.count).toBe(6);
    expect([0, 1, 2, 3, 4, 5].map(s.rowOf)).toEqual([3, 4, 5, 0, 1, 2]);
  });

  it('the same blocks under both schemes; the config read from BFL shapes', () => {
    const a = blockMapOf(diffusers);
    const b = blockMapOf(bfl);
    expect(a.scheme).toBe('diffusers');
    expect(b.scheme).toBe('comfyui');
    expect(b.blocks.map((x) => x.name)).toEqual(a.blocks.map((x) => x.name));
    expect(b.blocks.map((x) => x.parameters)).toEqual(a.blocks.map((x) => x.parameters));
    const want = {
      inChannels: 16, innerDim: 32, heads: 2, headDim: 16, jointAttentionDim: 32, pooledProjectionDim: 32,
      guidanceEmbeds: true, axesDims: [4, 6, 6], theta: 10000, numLayers: 1, numSingleLayers: 2,
    };
    expect(configureFluxDit(diffusers, a)).toEqual(want);
    // No config.json beside the BFL file: everything but the rotary axes comes from shapes.
    const bare = bfl.view('bare', (n) => n, null);
    expect(() => configureFluxDit(bare, b)).toThrow(/axes_dims_rope/);
    const withAxes = bfl.view('axes', (n) => n, { axes_dims_rope: [4, 6, 6] });
    expect(configureFluxDit(withAxes, b)).toEqual(want);
  });

  it('every diffusers tensor is cut from the BFL checkpoint exactly', async () => {
    const config = configureFluxDit(diffusers, blockMapOf(diffusers));
    expect(fluxDitModel.canonical('diffusers', diffusers, config).size).toBe(0);
    const map = fluxDitModel.canonical('comfyui', bfl, config);
    expect([...map.keys()].sort()).toEqual([...diffusers.tensors.keys()].sort());
    // Every BFL tensor is read by some canonical one.
    expect(new Set([...map.values()].map((c) => c.source))).toEqual(new Set(bfl.tensors.keys()));
    for (const [name, cut] of map) {
      const src = bfl.tensor(cut.source);
      const got = cutRows(await src.readF32(), src.shape, cut.rows);
      expect(got, name).toEqual(await diffusers.readF32(name));
      expect(cut.transpose ?? false).toBe(false);
    }
  });

  it('FLUX.1-schnell (no guidance_in) maps without guidance', () => {
    const shapes = new Map([...bfl.tensors].filter(([n]) => !n.startsWith('guidance_in.')));
    const map = bflToDiffusers(shapes, 32);
    expect([...map.keys()].some((n) => n.includes('guidance'))).toBe(false);
    expect(map.get('single_transformer_blocks.1.proj_mlp.bias')).toMatchObject({ source: 'single_blocks.1.linear1.bias', rows: { count: 128 } });
    expect(map.get('single_transformer_blocks.1.proj_mlp.bias')!.rows!.rowOf(0)).toBe(96);
    expect(map.get('transformer_blocks.0.attn.add_v_proj.weight')!.rows!.rowOf(31)).toBe(95);
  });
});

describe('flux-dit: rotary table', () => {
  it('text ids first, then image ids; axis a rotates its own pairs, interleaved', () => {
    const axes = [4, 6, 6];
    const txt = { data: new Float32Array([0, 0, 0, 0, 0, 0]), shape: [2, 3] };
    const img = { data: new Float32Array([0, 0, 0, 0, 2, 5, 7, 1, 3]), shape: [3, 3] };
    const spec = fluxRopeSpec(txt, img, axes);
    expect(spec).toMatchObject({ mode: 'interleaved', rotaryDim: 16, rows: 5 });
    expect(spec.table.length).toBe(5 * 8 * 2);
    // get_1d_rotary_pos_embed per axis: angle = id · θ^(−2j/dim_a), cos/sin per pair, axes concatenated.
    const angle = (ids: number[], i: number) => {
      let a = 0;
      for (const d of axes) {
        if (i < d / 2) return ids[a]! * Math.pow(10000, (-2 * i) / d);
        i -= d / 2;
        a++;
      }
      throw new Error('pair out of range');
    };
    const tokens = [[0, 0, 0], [0, 0, 0], [0, 0, 0], [0, 2, 5], [7, 1, 3]];
    tokens.forEach((ids, t) => {
      for (let i = 0; i < 8; i++) {
        expect(spec.table[(t * 8 + i) * 2]).toBeCloseTo(Math.cos(angle(ids, i)), 6);
        expect(spec.table[(t * 8 + i) * 2 + 1]).toBeCloseTo(Math.sin(angle(ids, i)), 6);
      }
    });
    // Pair 2 is axis 1's first (row id, frequency 1); pair 5 is axis 2's first (column id).
    expect(spec.table[(3 * 8 + 2) * 2 + 1]).toBeCloseTo(Math.sin(2), 6);
    expect(spec.table[(3 * 8 + 5) * 2]).toBeCloseTo(Math.cos(5), 6);
    // The deprecated batched ids [1, L, 3] give the same table.
    const batched = fluxRopeSpec({ data: txt.data, shape: [1, 2, 3] }, { data: img.data, shape: [1, 3, 3] }, axes);
    expect(batched.table).toEqual(spec.table);
    expect(() => fluxRopeSpec(txt, { data: img.data, shape: [9] }, axes)).toThrow(/img_ids/);
  });
});

const WEIGHTS = [WEIGHT_FILES.f32, WEIGHT_FILES.bf16] as const;

describe.each(WEIGHTS)('flux-dit-tiny, $dtype weights', ({ file, tol }) => {
  let reference: Map<string, HostTensor> | undefined;
  it.each(ALLOCATIONS)('$label: sample within tolerance', async ({ allocation, mode }) => {
    const { model, outputs, expected } = await runFixture(FIXTURE, { weightsFile: file, allocation, mode });
    // The split allocations really split: the layers are stored on (pipeline: run by) the cpu,
    // so temb.silu and the rotary table travel from gpu:0 to the blocks that read them.
    if (allocation.includes('cpu')) {
      const layers = model.plan.blocks.filter((b) => /^(double|single)\./.test(b.name));
      expect(layers.every((b) => b.device === 'cpu')).toBe(true);
      expect(layers.every((b) => b.execDevice === (mode === 'pipeline' ? 'cpu' : 'gpu:0'))).toBe(true);
    }
    const worst = expectClose(outputs, expected, ['sample'], tol);
    console.log(`flux-dit-tiny ${file} ${allocation} ${mode}: sample ${worst.sample!.toExponential(2)}`);
    // Stream mode runs every block on gpu:0 with the same kernels: bit-identical to all-on-gpu:0.
    if (mode === 'stream') {
      if (!reference) reference = outputs;
      else expectIdentical(outputs, reference, ['sample']);
    }
  });
});

describe('flux-dit-tiny under BFL names', () => {
  it('a BFL-named checkpoint of the same weights gives the same sample as the diffusers-named one', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'flux-bfl-run-'));
    const diffusers = await openWeights(fixturePath(FIXTURE, 'model.safetensors'));
    try {
      await writeSafetensorsFile(join(dir, 'flux-bfl.safetensors'), await toBfl(diffusers));
      // config.json beside it: the fixture's rotary axes (4/6/6) are not FLUX.1's default.
      copyFileSync(fixturePath(FIXTURE, 'config.json'), join(dir, 'config.json'));
      const bfl = await openWeights(join(dir, 'flux-bfl.safetensors'));
      const devices = await fixtureDevices();
      const expected = await expectedOf(FIXTURE);
      const inputs = new Map([...expected].filter(([name]) => name !== 'sample'));
      const run = async (weights: WeightSet, allocation: string, mode: 'stream' | 'pipeline') => {
        const model = await loadModel(devices, weights, { allocation, mode });
        try {
          expect(model.blockMap.scheme).toBe(weights === bfl ? 'comfyui' : 'diffusers');
          return (await model.forward(inputs)).outputs;
        } finally {
          await model.unload();
        }
      };
      try {
        const want = await run(diffusers, 'gpu:0,100%', 'stream');
        expectIdentical(await run(bfl, 'gpu:0,100%', 'stream'), want, ['sample']);
        const split = await run(bfl, 'gpu:0,50%;cpu,*', 'pipeline');
        expectIdentical(split, await run(diffusers, 'gpu:0,50%;cpu,*', 'pipeline'), ['sample']);
        expectClose(split, expected, ['sample'], TOLERANCE.f32);
      } finally {
        await bfl.close();
      }
    } finally {
      await diffusers.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
