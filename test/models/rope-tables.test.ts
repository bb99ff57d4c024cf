// Rotary-embedding details the tiny fixtures can't catch, against values derived by hand from
// the reference definitions:
// - Llama (transformers' rotate_half) rotates split halves, pairs (i, i + D/2); FLUX (diffusers'
//   apply_rotary_emb, use_real_unbind_dim=-1) rotates interleaved pairs (2i, 2i + 1). Both
//   through the Backend's rope on the GPU and on the CPU, with the tables the models build.
// - llama.cpp's q/k row permutation turns interleaved rotation into Llama's split halves, which
//   is why GGUF rows are put back before a split-halves rope.
// - Llama 3's rope_scaling (transformers' _compute_llama3_parameters) for Llama 3.1's
//   factor 8, low_freq_factor 1, high_freq_factor 4, original_max_position_embeddings 8192.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CpuKernels } from '../../src/cpu/kernels.ts';
import { llama3InvFreq, ropeInvFreq } from '../../src/kernels/ops/rope.ts';
import { ropeReference } from '../../src/kernels/reference/rope.ts';
import { ggufPermutedRowOf, ggufPermuteRowOf } from '../../src/models/llama/gguf-names.ts';
import { llamaInvFreq, llamaRope, type LlamaConfig } from '../../src/models/llama/model.ts';
import type { Backend, RopeSpec } from '../../src/runtime/backend.ts';
import { CpuBackend } from '../../src/runtime/cpu-backend.ts';
import { GpuBackend } from '../../src/runtime/gpu-backend.ts';
import { fixtureDevices } from './harness.ts';

function llamaConfig(over: Partial<LlamaConfig>): LlamaConfig {
  return {
    hidden: 8, layers: 1, heads: 2, kvHeads: 2, headDim: 4, rotaryDim: 4, intermediate: 8, vocab: 8, eps: 1e-5, act: 'silu',
    maxPositions: 64, theta: 10000, ropeScaling: { type: 'default' }, tied: false, ggufArch: null, ropeFreqs: false, state: {}, ...over,
  };
}

/** Llama 3.1: theta 500000, head_dim 128, rope_scaling llama3 (8, 1, 4, 8192). */
const LLAMA31 = { factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositions: 8192 } as const;

/**
 * By hand from _compute_llama3_parameters: f_i = 500000^(−2i/128), wavelength λ_i = 2π/f_i;
 * λ < 8192/4 = 2048 keeps f; λ > 8192/1 = 8192 gives f/8; in between
 * s = (8192/λ − 1)/(4 − 1) and (1 − s)·f/8 + s·f. λ_28 = 1956.5 (kept), λ_29 = 2401.7,
 * λ_34 = 6695.1 (smoothed), λ_35 = 8218.7 (divided). E.g. i = 32: f = 1/√500000 =
 * 0.00141421356, λ = 4442.88, s = 0.2812826, result f·(0.7187174/8 + 0.2812826) = 0.000524846.
 */
const LLAMA31_INV: ReadonlyArray<readonly [number, number]> = [
  [0, 1],
  [1, 0.81461723385654472],
  [20, 0.016560440080994446],
  [28, 0.0032114459947525909],
  [29, 0.0021665707635033591],
  [30, 0.0013718935677611381],
  [32, 0.00052484616099295468],
  [34, 0.00017850781276799641],
  [35, 9.5562123539646833e-05],
  [40, 3.4281021959525912e-05],
  [63, 3.0689259889145111e-07],
];

describe('Llama 3 rope_scaling', () => {
  it('Llama 3.1 inverse frequencies: hand-derived values and the three bands', () => {
    const base = ropeInvFreq(128, 500000);
    const inv = llama3InvFreq(base, LLAMA31);
    for (const [i, want] of LLAMA31_INV) expect(Math.abs(inv[i]! - want) / want, `pair ${i}`).toBeLessThan(1e-12);
    // Bands: high frequencies (i ≤ 28) unchanged, low (i ≥ 35) divided by 8, 29..34 smoothed strictly in between.
    for (let i = 0; i < 64; i++) {
      const ratio = inv[i]! / base[i]!;
      if (i <= 28) expect(ratio, `pair ${i}`).toBe(1);
      else if (i >= 35) expect(ratio, `pair ${i}`).toBeCloseTo(1 / 8, 14);
      else {
        expect(ratio, `pair ${i}`).toBeGreaterThan(1 / 8);
        expect(ratio, `pair ${i}`).toBeLessThan(1);
      }
    }
    // Smoothed ratios fall monotonically from pair 29 to 34.
    for (let i = 30; i <= 34; i++) expect(inv[i]! / base[i]!).toBeLessThan(inv[i - 1]! / base[i - 1]!);
  });

  it("the model's frequencies (transformers' float32 base, then the scaling) and its table rows", () => {
    const inv = llamaInvFreq(128, 500000, { type: 'llama3', ...LLAMA31 })!;
    expect(inv.length).toBe(64);
    for (const [i, want] of LLAMA31_INV) expect(Math.abs(inv[i]! - want) / want, `pair ${i}`).toBeLessThan(1e-6);
    const config = llamaConfig({ headDim: 128, rotaryDim: 128, theta: 500000, ropeScaling: { type: 'llama3', ...LLAMA31 }, maxPositions: 131072 });
    const spec = llamaRope(config, 1001);
    expect(spec.mode).toBe('half');
    expect(spec.rows).toBeGreaterThanOrEqual(1001);
    // Position 1000, pair 32: angle 1000 · 0.00052484616 rad; pair 40: 1000 · 3.4281022e-5 rad.
    for (const [i, f] of [[32, 0.00052484616099295468], [40, 3.4281021959525912e-05], [0, 1]] as const) {
      expect(spec.table[(1000 * 64 + i) * 2]).toBeCloseTo(Math.cos(1000 * f), 4);
      expect(spec.table[(1000 * 64 + i) * 2 + 1]).toBeCloseTo(Math.sin(1000 * f), 4);
    }
    // Kept while large enough (a backend uploads a table once); grown past its end.
    expect(llamaRope(config, 500)).toBe(spec);
    const grown = llamaRope(config, spec.rows + 1);
    expect(grown).not.toBe(spec);
    expect(grown.rows).toBeGreaterThan(spec.rows);
    let same = true;
    for (let k = 0; k < spec.table.length; k++) same &&= grown.table[k] === spec.table[k];
    expect(same, 'the grown table starts with the old rows').toBe(true);
  });

  it('linear scaling divides every frequency; llama.cpp rope_freqs divide pair by pair', () => {
    const base = llamaInvFreq(8, 10000, { type: 'linear', factor: 1 })!;
    // float32 10000^(−2i/8): 1, 0.1, 0.01, 0.001
    expect(Array.from(base)).toEqual([1, 0.1, 0.01, 0.001].map(Math.fround));
    expect(Array.from(llamaInvFreq(8, 10000, { type: 'linear', factor: 4 })!)).toEqual([1, 0.1, 0.01, 0.001].map((x) => Math.fround(x) / 4));
    expect(Array.from(llamaInvFreq(8, 10000, { type: 'default' }, [1, 2, 4, 8])!)).toEqual([1, 0.1, 0.01, 0.001].map((x, i) => Math.fround(x) / 2 ** i));
    expect(llamaInvFreq(8, 10000, { type: 'default' })).toBeUndefined();
  });
});

describe('split halves (Llama) vs interleaved pairs (FLUX)', () => {
  let gpuBackend: GpuBackend;
  let kernels: CpuKernels;
  let backends: Array<[string, Backend]>;

  beforeAll(async () => {
    const set = await fixtureDevices();
    gpuBackend = new GpuBackend(set.gpus[0]!);
    kernels = await CpuKernels.create();
    backends = [['gpu:0', gpuBackend], ['cpu', new CpuBackend(kernels)]];
  });
  afterAll(async () => {
    await gpuBackend?.close();
    await kernels?.close();
  });

  // One head of 4 dims at position 1, theta 10000: pair 0 turns by 1 rad, pair 1 by 10000^(−1/2) = 0.01 rad.
  const c1 = Math.cos(1), s1 = Math.sin(1), c2 = Math.cos(0.01), s2 = Math.sin(0.01);
  const x = [1, 2, 3, 4];
  // rotate_half: (x0, x2) and (x1, x3) turn; out = x·cos + rotate_half(x)·sin, rotate_half(x) = (−x2, −x3, x0, x1).
  const half = [1 * c1 - 3 * s1, 2 * c2 - 4 * s2, 3 * c1 + 1 * s1, 4 * c2 + 2 * s2];
  // FLUX: (x0, x1) and (x2, x3) turn; out = x·cos + (−x1, x0, −x3, x2)·sin.
  const interleaved = [1 * c1 - 2 * s1, 2 * c1 + 1 * s1, 3 * c2 - 4 * s2, 4 * c2 + 3 * s2];

  const run = async (b: Backend, spec: RopeSpec, data: number[], shape: number[], headDim: number, offset: number) =>
    Array.from(await b.download(await b.rope(await b.upload(Float32Array.from(data), shape), spec, headDim, offset)));

  it("the Llama model's table: row p holds (cos, sin) of p · θ^(−2i/D)", () => {
    const spec = llamaRope(llamaConfig({}), 2);
    expect(spec).toMatchObject({ mode: 'half', rotaryDim: 4 });
    const want = [1, 0, 1, 0, c1, s1, c2, s2];
    spec.table.subarray(0, 8).forEach((v, i) => expect(v, `value ${i}`).toBeCloseTo(want[i]!, 7));
  });

  it.each(['gpu:0', 'cpu'])('%s: Llama rotates (i, i + D/2), FLUX (2i, 2i + 1); position 0 is the identity', async (device) => {
    const b = backends.find(([d]) => d === device)![1];
    const llama = llamaRope(llamaConfig({}), 8);
    // Its own table array: backends key uploaded tables by the array.
    const flux: RopeSpec = { ...llama, mode: 'interleaved', table: llama.table.slice() };
    // [B=1, L=2, 2 heads × 4]: token 0 at position 0 (unchanged), token 1 at position 1; both heads alike.
    const data = [...x, ...x, ...x, ...x];
    const check = (got: number[], want: number[]) => {
      expect(got.length).toBe(want.length);
      got.forEach((v, i) => expect(v, `element ${i}`).toBeCloseTo(want[i]!, 5));
    };
    check(await run(b, llama, data, [1, 2, 8], 4, 0), [...x, ...x, ...half, ...half]);
    check(await run(b, flux, data, [1, 2, 8], 4, 0), [...x, ...x, ...interleaved, ...interleaved]);
    // positionOffset (a KV cache holding one token): the first token now sits at position 1.
    check(await run(b, llama, x, [1, 1, 4], 4, 1), half);
    check(await run(b, flux, x, [1, 1, 4], 4, 1), interleaved);
  });
});

describe("llama.cpp's q/k permutation", () => {
  it('interleaved rotation of permuted rows equals split-halves rotation of transformers rows', () => {
    const H = 3, D = 8, L = 5;
    const rows = H * D;
    const toGguf = ggufPermuteRowOf(rows, H); // GGUF row r holds transformers row toGguf(r)
    const fromGguf = ggufPermutedRowOf(rows, H); // transformers row i sits at GGUF row fromGguf(i)
    for (let i = 0; i < rows; i++) expect(toGguf(fromGguf(i))).toBe(i);
    const x = Float32Array.from({ length: L * rows }, (_, k) => Math.sin(k * 1.7) * 3);
    const angle = (_b: number, l: number, i: number) => l * Math.pow(10000, (-2 * i) / D);
    const hf = ropeReference(x, { batch: 1, seq: L, heads: H, headDim: D, mode: 'half', angle });
    const permuted = Float32Array.from(x, (_, k) => x[Math.floor(k / rows) * rows + toGguf(k % rows)]!);
    const gg = ropeReference(permuted, { batch: 1, seq: L, heads: H, headDim: D, mode: 'interleaved', angle });
    const back = Float32Array.from(gg, (_, k) => gg[Math.floor(k / rows) * rows + fromGguf(k % rows)]!);
    for (let k = 0; k < back.length; k++) expect(back[k]).toBeCloseTo(hf[k]!, 5);
    // Without putting the rows back, split halves on GGUF rows is a different rotation.
    const wrong = ropeReference(permuted, { batch: 1, seq: L, heads: H, headDim: D, mode: 'half', angle });
    const wrongBack = Float32Array.from(wrong, (_, k) => wrong[Math.floor(k / rows) * rows + fromGguf(k % rows)]!);
    expect(Math.max(...wrongBack.map((v, k) => Math.abs(v - hf[k]!)))).toBeGreaterThan(0.1);
  });
});
