// attention (f32 path on SwiftShader) against the f64 CPU reference: random shapes with
// fast-check (odd lengths, GQA ratios, causal, masks, key padding, T5 bias, cross-attention),
// each fixture family's head layout, the KV cache, split bindings, 2-D dispatch, and the
// online-softmax traps. Tolerance: TOLERANCE.f32 (|err| ≤ 1e-5 + 1e-4·|want|): the kernel
// sums in f32 in another order than the f64 reference.
import { readFileSync } from 'node:fs';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { downloadF32, emptyTensor, KernelRecorder, overrideKernelLimits, uploadTensor, type GpuDevice, type GpuTensor } from '../../src/index.ts';
import { attention, attentionShape, type AttentionOptions, type AttentionRun } from '../../src/kernels/ops/attention.ts';
import { kvCacheWrite, KvCache } from '../../src/kernels/ops/kv-cache.ts';
import { kvCacheWriteReference } from '../../src/kernels/reference/kv-cache.ts';
import { attentionReference, type AttentionReferenceOptions } from '../../src/kernels/reference/attention.ts';
import { ROOT } from '../helpers.ts';
import { expectClose, openTestGpu, randomF32, TOLERANCE, type TestGpu } from './harness.ts';

let t: TestGpu;
let gpu: GpuDevice;
const owned: GpuTensor[] = [];

beforeAll(async () => {
  t = await openTestGpu();
  gpu = t.gpu;
});

afterAll(async () => {
  for (const x of owned) x.destroy();
  await t?.set.close();
});

async function up(data: Float32Array | Uint32Array, shape: number[], dtype: 'f32' | 'u32' = 'f32'): Promise<GpuTensor> {
  const bytes = data instanceof Float32Array ? data : new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  const x = await uploadTensor(gpu, bytes, shape, dtype);
  owned.push(x);
  return x;
}

interface Case {
  readonly B: number; readonly Lq: number; readonly Lk: number; readonly H: number; readonly Hkv: number; readonly D: number;
  readonly causal?: boolean;
  readonly causalOffset?: number;
  readonly maskShape?: number[];
  readonly keyPadding?: boolean;
  readonly relBias?: boolean;
  readonly scale?: number;
  readonly subgroups?: boolean;
  readonly seed?: number;
  /** q, k, v scaled by this (large values stress the online softmax). */
  readonly magnitude?: number;
  readonly decodeKernel?: boolean;
}

interface Result { readonly got: Float32Array; readonly want: Float32Array; readonly run: AttentionRun }

async function runCase(c: Case): Promise<Result> {
  const seed = c.seed ?? 1;
  const mag = c.magnitude ?? 1;
  const q = randomF32(c.B * c.Lq * c.H * c.D, seed, mag);
  const k = randomF32(c.B * c.Lk * c.Hkv * c.D, seed + 1, mag);
  const v = randomF32(c.B * c.Lk * c.Hkv * c.D, seed + 2);
  const ref: AttentionReferenceOptions & { mask?: { data: Float32Array; shape: number[] } } = {
    batch: c.B, lq: c.Lq, lk: c.Lk, heads: c.H, kvHeads: c.Hkv, headDim: c.D, causal: c.causal, causalOffset: c.causalOffset, scale: c.scale,
  };
  const opts: { -readonly [K in keyof AttentionOptions]: AttentionOptions[K] } = { causal: c.causal, causalOffset: c.causalOffset, scale: c.scale, subgroups: c.subgroups, decodeKernel: c.decodeKernel };
  let mask: { data: Float32Array; shape: number[] } | undefined;
  if (c.maskShape) {
    const n = c.maskShape.reduce((a, b) => a * b, 1);
    // Mostly small biases, some keys masked outright with −inf and finfo(f32).min.
    const data = randomF32(n, seed + 3, 2).map((x, i) => (i % 7 === 3 ? -Infinity : i % 11 === 5 ? -3.4028234663852886e38 : x));
    mask = { data, shape: c.maskShape };
    opts.mask = await up(data, c.maskShape);
  }
  let kp: Uint32Array | undefined;
  if (c.keyPadding) {
    kp = Uint32Array.from({ length: c.B * c.Lk }, (_, i) => ((i * 2654435761 + seed) >>> 0) % 5 === 0 ? 0 : 1);
    opts.keyPadding = await up(kp, [c.B, c.Lk], 'u32');
  }
  let rb: Float32Array | undefined;
  if (c.relBias) {
    rb = randomF32(c.H * (c.Lq + c.Lk - 1), seed + 4, 3);
    opts.relativeBias = await up(rb, [c.H, c.Lq + c.Lk - 1]);
  }
  const tq = await up(q, [c.B, c.Lq, c.H, c.D]);
  const tk = await up(k, [c.B, c.Lk, c.Hkv, c.D]);
  const tv = await up(v, [c.B, c.Lk, c.Hkv, c.D]);
  const to = await emptyTensor(gpu, [c.B, c.Lq, c.H, c.D]);
  owned.push(to);
  const rec = new KernelRecorder(gpu);
  const run = await attention(rec, tq, tk, tv, to, opts);
  await rec.submit();
  const got = await downloadF32(to);
  const want = attentionReference(q, k, v, { ...ref, mask, keyPadding: kp, relativeBias: rb });
  return { got, want, run };
}

function describeCase(c: Case): string {
  return JSON.stringify(c);
}

describe('attention, f32 path', () => {
  it('matches the reference on random shapes: odd lengths, GQA, causal, masks, key padding, T5 bias, cross-attention', async () => {
    const maskKinds = (B: number, H: number, Lq: number, Lk: number) => [undefined, [Lq, Lk], [B, 1, 1, Lk], [B, H, Lq, Lk], [1, H, 1, Lk]];
    const arbitrary = fc.record({
      B: fc.integer({ min: 1, max: 2 }),
      Lq: fc.integer({ min: 1, max: 40 }),
      Lk: fc.integer({ min: 1, max: 70 }),
      Hkv: fc.integer({ min: 1, max: 2 }),
      group: fc.integer({ min: 1, max: 3 }),
      D: fc.oneof(fc.integer({ min: 1, max: 40 }), fc.constantFrom(16, 32, 64)),
      causal: fc.boolean(),
      mask: fc.integer({ min: 0, max: 4 }),
      keyPadding: fc.boolean(),
      relBias: fc.boolean(),
      scale: fc.option(fc.double({ min: 0.05, max: 2, noNaN: true }), { nil: undefined }),
      subgroups: fc.boolean(),
      seed: fc.integer({ min: 1, max: 1 << 20 }),
    });
    await fc.assert(fc.asyncProperty(arbitrary, async (a) => {
      const H = a.Hkv * a.group;
      const c: Case = {
        B: a.B, Lq: a.Lq, Lk: a.Lk, H, Hkv: a.Hkv, D: a.D, causal: a.causal, maskShape: maskKinds(a.B, H, a.Lq, a.Lk)[a.mask],
        keyPadding: a.keyPadding, relBias: a.relBias, scale: a.scale, subgroups: a.subgroups, seed: a.seed,
      };
      const { got, want, run } = await runCase(c);
      const decode = c.Lq === 1 && !c.maskShape && !c.keyPadding && !c.relBias;
      expect(run.kernel).toBe(decode ? 'decode' : 'f32');
      expectClose(got, want, TOLERANCE.f32, describeCase(c));
    }), { numRuns: 24, seed: 20260517 });
  }, 60_000);

  it('one query row (decoding) runs the decode kernel: GQA, causal offsets, head dims to 256, keys past one 1024-key chunk', async () => {
    const arbitrary = fc.record({
      B: fc.integer({ min: 1, max: 2 }),
      Lk: fc.oneof(fc.integer({ min: 0, max: 60 }), fc.integer({ min: 1000, max: 2300 })),
      Hkv: fc.integer({ min: 1, max: 3 }),
      group: fc.integer({ min: 1, max: 4 }),
      D: fc.oneof(fc.integer({ min: 1, max: 130 }), fc.constantFrom(64, 128, 256)),
      causal: fc.boolean(),
      offset: fc.option(fc.integer({ min: -3, max: 80 }), { nil: undefined }),
      magnitude: fc.constantFrom(1, 30),
      seed: fc.integer({ min: 1, max: 1 << 20 }),
    });
    await fc.assert(fc.asyncProperty(arbitrary, async (a) => {
      const c: Case = { B: a.B, Lq: 1, Lk: a.Lk, H: a.Hkv * a.group, Hkv: a.Hkv, D: a.D, causal: a.causal, causalOffset: a.causal ? a.offset : undefined,
        // Large scores only with short heads: an f32 dot of 256 products of 30² rounds past the tolerance in any kernel.
        magnitude: a.D <= 64 ? a.magnitude : 1, seed: a.seed };
      const { got, want, run } = await runCase(c);
      expect(run.kernel).toBe('decode');
      expectClose(got, want, TOLERANCE.f32, describeCase(c));
    }), { numRuns: 12, seed: 20261126 });
    // decodeKernel: false forces the tiled kernel.
    const forced = await runCase({ B: 1, Lq: 1, Lk: 9, H: 4, Hkv: 2, D: 16, causal: true, decodeKernel: false });
    expect(forced.run.kernel).toBe('f32');
    expectClose(forced.got, forced.want, TOLERANCE.f32, 'forced tiled');
  }, 120_000);

  const configs = ['llama-tiny', 'gpt2-tiny', 'clip-text-tiny', 't5-encoder-tiny', 'flux-dit-tiny'].map((name) => {
    const c = JSON.parse(readFileSync(`${ROOT}test/fixtures/${name}/config.json`, 'utf8')) as Record<string, number>;
    const H = c.num_attention_heads ?? c.n_head ?? c.num_heads!;
    const D = c.head_dim ?? c.d_kv ?? c.attention_head_dim ?? (c.hidden_size ?? c.n_embd!) / H;
    return { name, H, Hkv: c.num_key_value_heads ?? H, D };
  });
  it.each([
    ...configs.map((c) => [c.name, { B: 1, Lq: 19, Lk: 19, H: c.H, Hkv: c.Hkv, D: c.D, causal: c.name !== 't5-encoder-tiny' && c.name !== 'flux-dit-tiny', relBias: c.name === 't5-encoder-tiny', scale: c.name === 't5-encoder-tiny' ? 1 : undefined }] as const),
    ['unet-tiny cross-attention (head dim 8, text context 7)', { B: 2, Lq: 64, Lk: 7, H: 8, Hkv: 8, D: 8 }] as const,
    ['vae-tiny mid-block (one head of 64 channels)', { B: 1, Lq: 64, Lk: 64, H: 1, Hkv: 1, D: 64 }] as const,
    ['Llama-3-8B layout: 32 heads over 8 kv heads, head dim 128', { B: 1, Lq: 9, Lk: 9, H: 32, Hkv: 8, D: 128, causal: true }] as const,
    ['SD-VAE mid-block: one head of 512 channels (4 output slices)', { B: 1, Lq: 20, Lk: 20, H: 1, Hkv: 1, D: 512 }] as const,
  ])('%s', async (_name, c) => {
    const { got, want } = await runCase(c);
    expectClose(got, want, TOLERANCE.f32, describeCase(c));
  });

  it('online softmax: scores far beyond exp()\'s range, and row maxima that keep growing tile after tile', async () => {
    // |scores| up to ~9000: exp() of a raw score overflows f32, so only max-subtracted sums survive.
    const big = await runCase({ B: 1, Lq: 33, Lk: 100, H: 2, Hkv: 1, D: 16, magnitude: 45, seed: 7 });
    expect(big.got.every(Number.isFinite)).toBe(true);
    expectClose(big.got, big.want, TOLERANCE.f32, 'large scores');
    // Keys whose scores rise with their index: every tile of 32 keys brings a new row max, so
    // the running output and sum are rescaled again and again; a kernel that skipped the
    // rescale would weight early tiles e^100 times too much.
    const Lk = 130;
    const D = 4;
    const q = new Float32Array([1, 0, 0, 0]);
    const k = Float32Array.from({ length: Lk * D }, (_, i) => (i % D === 0 ? (i / D) * 0.8 : 0));
    const v = Float32Array.from({ length: Lk * D }, (_, i) => Math.sin(i));
    const out = await emptyTensor(gpu, [1, 1, 1, D]);
    owned.push(out);
    const rec = new KernelRecorder(gpu);
    await attention(rec, await up(q, [1, 1, 1, D]), await up(k, [1, Lk, 1, D]), await up(v, [1, Lk, 1, D]), out, { scale: 1 });
    await rec.submit();
    expectClose(await downloadF32(out), attentionReference(q, k, v, { batch: 1, lq: 1, lk: Lk, heads: 1, headDim: D, scale: 1 }), TOLERANCE.f32, 'rising maxima');
  });

  it('never materialises the score matrix: 1024 × 1024 scores allocate nothing of their size', async () => {
    const L = 1024;
    const D = 4;
    const q = await up(randomF32(L * D, 11), [1, L, 1, D]);
    const k = await up(randomF32(L * D, 12), [1, L, 1, D]);
    const v = await up(randomF32(L * D, 13), [1, L, 1, D]);
    const out = await emptyTensor(gpu, [1, L, 1, D]);
    owned.push(out);
    const rec = new KernelRecorder(gpu);
    const before = gpu.ledger.used;
    await attention(rec, q, k, v, out, { causal: true });
    const during = gpu.ledger.used - before;
    await rec.submit();
    expect(during).toBeLessThan(L * L); // the scores alone would be 4 MiB
    const want = attentionReference(await downloadF32(q), await downloadF32(k), await downloadF32(v), { batch: 1, lq: L, lk: L, heads: 1, headDim: D, causal: true });
    expectClose(await downloadF32(out), want, TOLERANCE.f32, 'long causal');
  });

  it('fully masked rows give zeros; causalOffset shifts the diagonal (top-left aligned cross-attention)', async () => {
    const { got, want } = await runCase({ B: 2, Lq: 9, Lk: 20, H: 2, Hkv: 2, D: 8, causal: true, causalOffset: -3, keyPadding: true });
    expectClose(got, want, TOLERANCE.f32, 'offset −3');
    // Rows 0..2 see no key (j ≤ i − 3): zeros.
    for (let i = 0; i < 3 * 2 * 8; i++) expect(got[i]).toBe(0);
  });

  it('forces the subgroup and the workgroup-memory reductions, and reports what ran', async () => {
    const on = await runCase({ B: 1, Lq: 40, Lk: 50, H: 2, Hkv: 1, D: 24, causal: true, subgroups: true });
    const off = await runCase({ B: 1, Lq: 40, Lk: 50, H: 2, Hkv: 1, D: 24, causal: true, subgroups: false });
    expect(on.run).toMatchObject({ kernel: 'f32', subgroups: gpu.hasFeature('subgroups'), dispatches: 1, split: false });
    expect(off.run).toMatchObject({ kernel: 'f32', subgroups: false });
    expectClose(on.got, on.want, TOLERANCE.f32, 'subgroups');
    expectClose(off.got, off.want, TOLERANCE.f32, 'workgroup memory');
  });

  it('f32 tensors refuse the f16 paths; shapes and layouts are checked', async () => {
    const q = await up(randomF32(2 * 3 * 4, 1), [1, 3, 2, 4]);
    const out = await emptyTensor(gpu, [1, 3, 2, 4]);
    owned.push(out);
    const rec = new KernelRecorder(gpu);
    await expect(attention(rec, q, q, q, out, { path: 'f16' })).rejects.toThrow(/needs f16 tensors/);
    await expect(attention(rec, q, q, q, out, { kvHeads: 3 })).rejects.toThrow(/multiple/);
    await expect(attention(rec, q, q, q, q)).rejects.toThrow(/share a buffer/);
    await expect(attention(rec, q, q, q, out, { kvLength: 4 })).rejects.toThrow(/kvLength/);
    expect(attentionShape(q, q)).toEqual({ batch: 1, lq: 3, lk: 3, heads: 2, kvHeads: 2, headDim: 4 });
  });

  it('reads q, k, v as views of one fused QKV tensor and writes into a view of a wider output', async () => {
    const B = 2, L = 13, H = 3, D = 8, C = H * D;
    const qkv = randomF32(B * L * 3 * C, 21);
    const fused = await up(qkv, [B, L, 3 * C]);
    const wide = await emptyTensor(gpu, [B, L, 2 * C]);
    owned.push(wide);
    const rec = new KernelRecorder(gpu);
    await attention(rec, { tensor: fused, offset: 0, rowStride: 3 * C }, { tensor: fused, offset: C, rowStride: 3 * C }, { tensor: fused, offset: 2 * C, rowStride: 3 * C },
      { tensor: wide, offset: C, rowStride: 2 * C }, { heads: H, headDim: D, causal: true });
    await rec.submit();
    const pick = (o: number) => Float32Array.from({ length: B * L * C }, (_, i) => qkv[Math.floor(i / C) * 3 * C + o + (i % C)]!);
    const want = attentionReference(pick(0), pick(C), pick(2 * C), { batch: B, lq: L, lk: L, heads: H, headDim: D, causal: true });
    const all = await downloadF32(wide);
    expectClose(Float32Array.from({ length: B * L * C }, (_, i) => all[Math.floor(i / C) * 2 * C + C + (i % C)]!), want, TOLERANCE.f32, 'fused views');
    expect(all.filter((_, i) => i % (2 * C) < C).every((x) => x === 0)).toBe(true); // the other half untouched
  });

  it('KV cache: prefill then token-by-token decode attends over the cache, as the full causal sequence does', async () => {
    const B = 2, H = 4, Hkv = 2, D = 16, total = 40, prefill = 29;
    const q = randomF32(B * total * H * D, 31);
    const k = randomF32(B * total * Hkv * D, 32);
    const v = randomF32(B * total * Hkv * D, 33);
    const want = attentionReference(q, k, v, { batch: B, lq: total, lk: total, heads: H, kvHeads: Hkv, headDim: D, causal: true });
    const cache = await KvCache.create(gpu, { batch: B, capacity: 48, kvHeads: Hkv, headDim: D });
    try {
      const rows = (x: Float32Array, w: number, from: number, n: number) => {
        const outRows = new Float32Array(B * n * w);
        for (let b = 0; b < B; b++) outRows.set(x.subarray((b * total + from) * w, (b * total + from + n) * w), b * n * w);
        return outRows;
      };
      for (const [from, n] of [[0, prefill], ...Array.from({ length: total - prefill }, (_, i) => [prefill + i, 1])] as Array<[number, number]>) {
        const rec = new KernelRecorder(gpu);
        const kNew = await up(rows(k, Hkv * D, from, n), [B, n, Hkv, D]);
        const vNew = await up(rows(v, Hkv * D, from, n), [B, n, Hkv, D]);
        const qNew = await up(rows(q, H * D, from, n), [B, n, H, D]);
        const out = await emptyTensor(gpu, [B, n, H, D]);
        owned.push(out);
        expect(await cache.append(rec, kNew, vNew)).toBe(from);
        await attention(rec, qNew, cache.k, cache.v, out, { causal: true, kvLength: cache.length });
        await rec.submit();
        expectClose(await downloadF32(out), rows(want, H * D, from, n), TOLERANCE.f32, `rows ${from}..${from + n}`);
      }
    } finally {
      cache.destroy();
    }
  });

  it('kvCacheWrite: the k slice of a fused QKV output into a cache at a position, whole and split (limit lowered to 512 B)', async () => {
    const B = 2, cap = 30, W = 12, n = 9, pos = 17;
    const fusedData = randomF32(B * n * 3 * W, 61);
    const fused = await up(fusedData, [B, n, 3 * W]);
    const start = randomF32(B * cap * W, 62);
    const kSlice = Float32Array.from({ length: B * n * W }, (_, i) => fusedData[Math.floor(i / W) * 3 * W + W + (i % W)]!);
    const want = kvCacheWriteReference(start, kSlice, B, cap, n, W, pos);
    for (const limit of [undefined, 512]) {
      if (limit) overrideKernelLimits(gpu, { maxStorageBufferBindingSize: limit });
      try {
        const cache = await up(start, [B, cap, W]);
        const rec = new KernelRecorder(gpu);
        await kvCacheWrite(rec, cache, { tensor: fused, offset: W, rowStride: 3 * W }, pos);
        await rec.submit();
        expect(await downloadF32(cache)).toEqual(want);
        await expect(kvCacheWrite(rec, cache, fused, cap - 2)).rejects.toThrow(/do not fit/);
      } finally {
        overrideKernelLimits(gpu, {});
      }
    }
  });

  it('splits tensors larger than maxStorageBufferBindingSize over ranges and key chunks (limit lowered to 2 KiB)', async () => {
    overrideKernelLimits(gpu, { maxStorageBufferBindingSize: 2048 });
    try {
      const c: Case = { B: 2, Lq: 37, Lk: 70, H: 4, Hkv: 2, D: 16, causal: true, maskShape: [2, 4, 37, 70], keyPadding: true, relBias: true, seed: 41 };
      const { got, want, run } = await runCase(c);
      expect(run).toMatchObject({ split: true, splitKeys: true });
      expect(run.dispatches).toBeGreaterThan(8);
      expectClose(got, want, TOLERANCE.f32, describeCase(c));
      const wide = await runCase({ B: 1, Lq: 5, Lk: 9, H: 1, Hkv: 1, D: 300, seed: 42 }); // one row of 300 f32 fits; slices and key chunks
      expect(wide.run.split).toBe(true);
      expectClose(wide.got, wide.want, TOLERANCE.f32, 'D 300');
    } finally {
      overrideKernelLimits(gpu, {});
    }
  });

  it('spreads more workgroups than one grid dimension allows over a 2-D grid (limit lowered to 5)', async () => {
    overrideKernelLimits(gpu, { maxComputeWorkgroupsPerDimension: 5 });
    try {
      const c: Case = { B: 2, Lq: 70, Lk: 20, H: 5, Hkv: 5, D: 8, seed: 51 }; // 3 tiles × 5 heads × 2 = 30 workgroups
      const { got, want } = await runCase(c);
      expectClose(got, want, TOLERANCE.f32, describeCase(c));
    } finally {
      overrideKernelLimits(gpu, {});
    }
  });
});
