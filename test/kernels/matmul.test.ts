// linear (nn.Linear: x·wᵀ·scale + b) on SwiftShader's f32 path (subgroups of 4), against the
// CPU reference in f64 for every stored weight layout, random odd shapes, GEMV (M ≤ 4) and the
// tiled kernel, and each variant forced on: subgroups off, every GEMV shape and tile, weights
// split over bindings and 2-D grids through lowered limits.
//
// Tolerance (f32 path): |got − want| ≤ 2e-5 · Σ_k |x[m,k]| · max_k |w[n,k]| · |scale| + 1e-6 · |bias[n]|.
// Σ_k |x|·max|w| bounds Σ|x·w| and the partial sums of the GGUF decoders, which factor the block
// scale and min out of the sum (d·Σq·x − m·Σx); an f32 sum of K ≤ 600 terms rounds by far less
// (K·2^-24 ≈ 4e-5 worst case, √K·2^-24 typical). An unwritten output (NaN-poisoned) or a wrong
// index is off by the magnitude itself.
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fromFloat32 } from '../../src/formats/dtypes.ts';
import { KernelRecorder } from '../../src/kernels/recorder.ts';
import { overrideKernelLimits } from '../../src/kernels/limits.ts';
import { downloadF32, emptyTensor, uploadTensor, type GpuTensor } from '../../src/kernels/tensor.ts';
import {
  GEMV_MAX_M, linear, linearPath, LinearShapeError, MATMUL_TILES, subgroupMatrixReady, type LinearInfo, type LinearOptions,
} from '../../src/kernels/ops/matmul.ts';
import { LINEAR_WEIGHT_DTYPES, isPlain, type BiasDtype, type LinearWeightDtype } from '../../src/kernels/ops/matmul-wgsl.ts';
import { dequantizeWeight, linearReference } from '../../src/kernels/reference/matmul.ts';
import { randomValues, randomWeightBytes } from '../../src/kernels/reference/matmul-data.ts';
import { GPU_DTYPE_LAYOUT } from '../../src/kernels/tensor.ts';
import { openTestGpu, type TestGpu } from './harness.ts';

const TOL = 2e-5;

let t: TestGpu;
beforeAll(async () => {
  t = await openTestGpu();
});
afterAll(async () => {
  await t?.set.close();
});

interface Case {
  readonly dtype: LinearWeightDtype;
  readonly m: number;
  readonly n: number;
  readonly k: number;
  readonly seed: number;
  readonly options?: LinearOptions;
  readonly bias?: BiasDtype | null;
  readonly scale?: number;
  /** x's shape, when not [m, k]. */
  readonly xShape?: readonly number[];
}

/** Runs one linear on the GPU and compares it with the reference; returns what ran. */
async function check(c: Case): Promise<LinearInfo> {
  const { gpu } = t;
  const { dtype, m, n, k, seed } = c;
  const scale = c.scale ?? 1;
  const wBytes = randomWeightBytes(dtype, n, k, seed);
  const wValues = dequantizeWeight(dtype, wBytes, n * k);
  const x = randomValues(m * k, seed + 1);
  let biasValues: Float32Array | null = null;
  let biasBytes: Uint8Array | null = null;
  if (c.bias) {
    const raw = randomValues(n, seed + 2, 2);
    biasBytes = c.bias === 'f32' ? new Uint8Array(raw.buffer) : fromFloat32(c.bias === 'f16' ? 'F16' : 'BF16', raw);
    biasValues = dequantizeWeight(c.bias, biasBytes, n);
  }
  const tensors: GpuTensor[] = [];
  try {
    const tx = await uploadTensor(gpu, x, c.xShape ?? [m, k]);
    const tw = await uploadTensor(gpu, wBytes, [n, k], dtype, { scale });
    const tb = biasBytes ? await uploadTensor(gpu, biasBytes, [n], c.bias!) : null;
    const out = await uploadTensor(gpu, new Float32Array(m * n).fill(Number.NaN), [...(c.xShape ?? [m, k]).slice(0, -1), n]);
    tensors.push(tx, tw, out, ...(tb ? [tb] : []));
    const rec = new KernelRecorder(gpu);
    const info = await linear(rec, tx, tw, tb, out, c.options);
    await rec.submit();
    const got = await downloadF32(out);
    const want = linearReference(x, wValues, m, n, k, biasValues, scale);
    const label = `${dtype} m=${m} n=${n} k=${k} ${info.variant}`;
    for (let i = 0; i < m; i++) {
      let sx = 0;
      for (let j = 0; j < k; j++) sx += Math.abs(x[i * k + j]!);
      for (let j = 0; j < n; j++) {
        let wmax = 0;
        for (let q = 0; q < k; q++) wmax = Math.max(wmax, Math.abs(wValues[j * k + q]!));
        const allowed = TOL * sx * wmax * Math.abs(scale) + 1e-6 * Math.abs(biasValues?.[j] ?? 0);
        const g = got[i * n + j]!;
        const wv = want[i * n + j]!;
        if (!(Math.abs(g - wv) <= allowed)) {
          expect.fail(`${label}: out[${i}, ${j}] = ${g}, reference ${wv} (allowed ±${allowed.toExponential(2)})`);
        }
      }
    }
    return info;
  } finally {
    for (const tensor of tensors) tensor.destroy();
  }
}

/** K values the layout allows: any K for plain layouts (odd ones included), whole blocks for GGUF. */
function kArb(dtype: LinearWeightDtype): fc.Arbitrary<number> {
  const block = GPU_DTYPE_LAYOUT[dtype].blockElements;
  if (block === 1) return fc.integer({ min: 1, max: 160 });
  return fc.integer({ min: 1, max: block === 32 ? 6 : 2 }).map((b) => b * block);
}

describe('linear on SwiftShader (f32 path)', () => {
  // SwiftShader compiles each pipeline variant in seconds; runs take milliseconds. So the random
  // shapes share one tiled pipeline per layout (K rounded up to a multiple of 4 there, bias fixed
  // per layout) and the odd-K tiled variants get a test of their own.
  it.each(LINEAR_WEIGHT_DTYPES.map((d, i) => [d, i]))('%s weights: GEMV (M = 1) and tiled (M > 4) on random shapes', async (dtype, i) => {
    const bias: BiasDtype | null = i % 2 === 0 ? null : 'f32';
    const scale = dtype.startsWith('f8') ? 0.37 : 1;
    await fc.assert(fc.asyncProperty(
      fc.record({
        n: fc.integer({ min: 1, max: 45 }),
        k: kArb(dtype),
        m: fc.integer({ min: GEMV_MAX_M + 1, max: 24 }),
        seed: fc.integer({ min: 1, max: 1 << 30 }),
      }),
      async ({ n, k, m, seed }) => {
        const gemv = await check({ dtype, m: 1, n, k, seed, bias, scale });
        expect(gemv.kernel).toBe('gemv');
        const tiled = await check({ dtype, m, n, k: Math.ceil(k / 4) * 4, seed: seed + 7, bias, scale });
        expect(tiled.variant).toBe('tiled 32x32');
      },
    ), { numRuns: 2, seed: 0x5eed + i, endOnFailure: true });
  });

  it.each([['f32'], ['f16'], ['bf16'], ['f8_e5m2']] as const)('%s weights, tiled kernel with K not a multiple of 4', async (dtype) => {
    const info = await check({ dtype, m: 9, n: 13, k: 23, seed: 61 });
    expect(info.variant).toBe('tiled 32x32 unaligned');
  });

  it('GEMV variants: workgroup-memory reduction (subgroups off), 1/2/8 rows, 64/128 threads, several rows of x', async () => {
    const off = await check({ dtype: 'bf16', m: 1, n: 37, k: 72, seed: 11, options: { subgroups: false } });
    expect(off.variant).toContain('workgroup-reduction');
    const on = await check({ dtype: 'bf16', m: 1, n: 37, k: 72, seed: 11 });
    expect(on.variant).toContain('subgroups');
    for (const [gemvRows, gemvThreads] of [[1, 64], [2, 128], [8, 256], [8, 64]] as const) {
      const info = await check({ dtype: 'q4_0', m: 3, n: 29, k: 96, seed: 12 + gemvRows, options: { gemvRows, gemvThreads, subgroups: gemvRows !== 8 } });
      expect(info.variant).toContain(`rows=${gemvRows} threads=${gemvThreads}`);
    }
    const scalar = await check({ dtype: 'f16', m: 2, n: 9, k: 13, seed: 13 });
    expect(scalar.variant).toContain('scalar');
    const chunked = await check({ dtype: 'f8_e4m3', m: 1, n: 9, k: 48, seed: 14, scale: 2.5 });
    expect(chunked.variant).toContain('chunk=16');
  });

  it('tiled variants: every tile size, K not a multiple of 4, forced on small and odd shapes', async () => {
    for (const tile of Object.keys(MATMUL_TILES) as Array<keyof typeof MATMUL_TILES>) {
      const info = await check({ dtype: 'f32', m: 67, n: 70, k: 24, seed: 21, options: { tile } });
      expect(info.variant).toBe(`tiled ${tile}`);
    }
    // The same pipelines again (compiling is what is slow here): default tile choice, tiny M.
    const big = await check({ dtype: 'f32', m: 130, n: 131, k: 24, seed: 22 });
    expect(big.variant).toBe('tiled 128x128');
    const odd = await check({ dtype: 'f32', m: 3, n: 5, k: 24, seed: 23, options: { kernel: 'tiled', tile: '64x64' } });
    expect(odd.kernel).toBe('tiled');
    const gemvLarge = await check({ dtype: 'f32', m: 9, n: 7, k: 33, seed: 24, options: { kernel: 'gemv' } });
    expect(gemvLarge.kernel).toBe('gemv');
  });

  it('bias in f16 and bf16 (f32 in the random shapes); fp8 per-tensor scale; leading batch dimensions of x', async () => {
    await check({ dtype: 'f8_e5m2', m: 1, n: 17, k: 32, seed: 31, bias: 'f16', scale: 0.125 });
    await check({ dtype: 'f8_e4m3', m: 1, n: 17, k: 40, seed: 32, bias: 'bf16', scale: 3 });
    await check({ dtype: 'q6_k', m: 2, n: 5, k: 256, seed: 33, bias: 'f16' });
    await check({ dtype: 'q5_k', m: 1, n: 5, k: 256, seed: 34, bias: 'bf16' });
    await check({ dtype: 'f32', m: 6, n: 11, k: 8, seed: 35, xShape: [2, 3, 8] });
  });

  it('GEMV epilogues: a stacked weight written to 2 or 3 outputs and a residual added equal separate kernels bit for bit', async () => {
    const { gpu } = t;
    const k = 40;
    const m = 3;
    const widths = [24, 8, 8];
    const n = widths.reduce((a, b) => a + b, 0);
    const x = await uploadTensor(gpu, randomValues(m * k, 71), [m, k]);
    const w = await uploadTensor(gpu, randomWeightBytes('bf16', n, k, 72), [n, k], 'bf16');
    const bias = await uploadTensor(gpu, randomValues(n, 73), [n]);
    const res = await uploadTensor(gpu, randomValues(m * n, 74), [m, n]);
    const full = await uploadTensor(gpu, new Float32Array(m * n).fill(Number.NaN), [m, n]);
    const withRes = await uploadTensor(gpu, new Float32Array(m * n).fill(Number.NaN), [m, n]);
    const outs = await Promise.all(widths.map((wd) => uploadTensor(gpu, new Float32Array(m * wd).fill(Number.NaN), [m, wd])));
    const pair = await Promise.all([widths[0]!, widths[1]! + widths[2]!].map((wd) => uploadTensor(gpu, new Float32Array(m * wd).fill(Number.NaN), [m, wd])));
    const all = [x, w, bias, res, full, withRes, ...outs, ...pair];
    try {
      const rec = new KernelRecorder(gpu);
      await linear(rec, x, w, bias, full);
      await linear(rec, x, w, bias, withRes, { residual: res });
      const info = await linear(rec, x, w, bias, outs[0]!, { parts: outs.slice(1) });
      await linear(rec, x, w, bias, pair[0]!, { parts: pair.slice(1) });
      await rec.submit();
      expect(info.kernel).toBe('gemv');
      const f = await downloadF32(full);
      const columns = (from: number, width: number) => Float32Array.from({ length: m * width }, (_, i) => f[Math.floor(i / width) * n + from + (i % width)]!);
      let at = 0;
      for (const [i, wd] of widths.entries()) {
        expect(await downloadF32(outs[i]!), `part ${i}`).toEqual(columns(at, wd));
        at += wd;
      }
      expect(await downloadF32(pair[1]!)).toEqual(columns(widths[0]!, widths[1]! + widths[2]!));
      const r = await downloadF32(res);
      expect(await downloadF32(withRes)).toEqual(f.map((v, i) => Math.fround(v + r[i]!)));
      // Only the GEMV kernel has these epilogues; the shapes must split N exactly.
      const big = await uploadTensor(gpu, randomValues(8 * k, 75), [8, k]);
      const bigOut = await uploadTensor(gpu, new Float32Array(8 * n), [8, n]);
      all.push(big, bigOut);
      await expect(linear(rec, big, w, null, outs[0]!, { parts: outs.slice(1) })).rejects.toThrow(LinearShapeError);
      await expect(linear(rec, x, w, null, outs[0]!, { parts: outs.slice(1, 2) })).rejects.toThrow(/do not split/);
      await expect(linear(rec, big, w, null, bigOut, { residual: bigOut })).rejects.toThrow(/GEMV/);
    } finally {
      for (const tensor of all) tensor.destroy();
    }
  });

  it('weights larger than a binding are split over several (lowered maxStorageBufferBindingSize), activations too', async () => {
    try {
      overrideKernelLimits(t.gpu, { maxStorageBufferBindingSize: 4096 });
      // f32 rows of 256 bytes: 16 rows a binding; x rows of 256 bytes likewise.
      const gemv = await check({ dtype: 'f32', m: 1, n: 70, k: 64, seed: 41 });
      expect(gemv.dispatches).toBe(5);
      // out rows of 256 bytes too (N = 64): 16 rows a binding.
      const tiled = await check({ dtype: 'f32', m: 40, n: 64, k: 64, seed: 42 });
      expect(tiled.dispatches).toBe(3 * 4);
      // Q4_K rows of 144 bytes start on 256-byte offsets every 16 rows.
      const q = await check({ dtype: 'q4_k', m: 4, n: 50, k: 256, seed: 43 });
      expect(q.dispatches).toBe(4);
      // bf16 with an odd K: rows of 14 bytes, chunks of 256 rows (offsets on 256 · 14 bytes).
      const odd = await check({ dtype: 'bf16', m: 1, n: 300, k: 7, seed: 44 });
      expect(odd.dispatches).toBe(2);
    } finally {
      overrideKernelLimits(t.gpu, {});
    }
  });

  it('more workgroups than one grid dimension allows go on a 2-D grid (lowered maxComputeWorkgroupsPerDimension)', async () => {
    try {
      overrideKernelLimits(t.gpu, { maxComputeWorkgroupsPerDimension: 3 });
      const gemv = await check({ dtype: 'q8_0', m: 2, n: 33, k: 64, seed: 51 });
      expect(gemv.maxGroups).toBeGreaterThan(3);
      const tiled = await check({ dtype: 'f16', m: 70, n: 100, k: 24, seed: 52, bias: 'f32', options: { tile: '32x32' } });
      expect(tiled.maxGroups).toBe(3 * 4);
    } finally {
      overrideKernelLimits(t.gpu, {});
    }
  });

  it('paths: SwiftShader has f32 only; f16 activations and the subgroup-matrix path are refused clearly', async () => {
    expect(linearPath(t.gpu, 'f32')).toBe('f32');
    expect(subgroupMatrixReady(t.gpu)).toBe(false);
    expect(() => linearPath(t.gpu, 'f16')).toThrow(LinearShapeError);
    expect(() => linearPath(t.gpu, 'f32', 'subgroup-matrix')).toThrow(/subgroup-matrix/);
  });

  it('rejects mismatched shapes and layouts with LinearShapeError', async () => {
    const { gpu } = t;
    const x = await emptyTensor(gpu, [2, 8]);
    const w = await emptyTensor(gpu, [3, 8]);
    const wq = await uploadTensor(gpu, randomWeightBytes('q4_0', 3, 32, 1), [3, 32], 'q4_0');
    const out = await emptyTensor(gpu, [2, 3]);
    const bad = await emptyTensor(gpu, [2, 4]);
    const i32 = await emptyTensor(gpu, [3, 8], 'i32');
    const rec = new KernelRecorder(gpu);
    try {
      await expect(linear(rec, x, w, null, bad)).rejects.toThrow(LinearShapeError);
      await expect(linear(rec, x, i32, null, out)).rejects.toThrow(/not supported/);
      await expect(linear(rec, x, wq, null, out)).rejects.toThrow(/does not end in K/);
      await expect(linear(rec, x, w, out, out)).rejects.toThrow(/bias has 6 elements/);
      expect(rec.pending).toBe(0);
      expect(isPlain('q4_0')).toBe(false);
    } finally {
      for (const tensor of [x, w, wq, out, bad, i32]) tensor.destroy();
    }
  });
});

// The packed subgroup-matrix layout (packForSubgroupMatrix): host-side index math only; the
// kernels that read it run on tensor cores, checked on an H100 by bench/matmul.ts.
describe('packed subgroup-matrix layout', () => {
  it('maps every element of [R, K] to its own slot inside sgmatPackedBytes, 16×16 blocks of 512 bytes', async () => {
    const { sgmatPackedIndex, sgmatPackedBytes, sgmatPackedKBlocks } = await import('../../src/kernels/ops/matmul.ts');
    expect(sgmatPackedKBlocks(16)).toBe(4);
    expect(sgmatPackedKBlocks(65)).toBe(8);
    for (const [rows, k] of [[1, 1], [17, 37], [33, 200], [16, 64]] as const) {
      const seen = new Set<number>();
      for (let r = 0; r < rows; r++) {
        for (let c = 0; c < k; c++) {
          const i = sgmatPackedIndex(r, c, k);
          expect(i).toBeLessThan(sgmatPackedBytes(rows, k) / 2);
          seen.add(i);
        }
      }
      expect(seen.size).toBe(rows * k);
      // Within a block: row-major, 16 wide; the next block along K is 256 elements on.
      expect(sgmatPackedIndex(1, 0, k) - sgmatPackedIndex(0, 0, k)).toBe(16);
      if (k > 16) expect(sgmatPackedIndex(0, 16, k)).toBe(256);
    }
  });
});
