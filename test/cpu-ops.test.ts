// The CPU device's other ops against the plain TypeScript references (src/kernels/reference/),
// with the GPU suites' tolerances (test/kernels/*.test.ts), random odd shapes (fast-check),
// multi-threaded (2 threads) and forced single-threaded.
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CpuKernels, type CpuActivation, type CpuBinaryOp } from '../src/cpu/index.ts';
import { fromFloat32, toFloat32 } from '../src/formats/dtypes.ts';
import { activationReference, gatedMlpFusedReference, gatedMlpReference } from '../src/kernels/reference/activation.ts';
import { attentionReference, type AttentionReferenceOptions } from '../src/kernels/reference/attention.ts';
import { binaryReference } from '../src/kernels/reference/binary.ts';
import { conv2dReference } from '../src/kernels/reference/conv2d.ts';
import { groupNormReference } from '../src/kernels/reference/group-norm.ts';
import { layerNormReference } from '../src/kernels/reference/layer-norm.ts';
import { randomValues } from '../src/kernels/reference/matmul-data.ts';
import { rmsNormReference } from '../src/kernels/reference/rms-norm.ts';
import { llamaAngle, ropeReference } from '../src/kernels/reference/rope.ts';
import { adaLNModulateReference, gatedResidualReference } from '../src/kernels/reference/adaln.ts';
import { concatReference } from '../src/kernels/reference/concat.ts';
import { copyBytesReference } from '../src/kernels/reference/copy.ts';
import { embeddingReference } from '../src/kernels/reference/embedding.ts';
import { kvCacheWriteReference } from '../src/kernels/reference/kv-cache.ts';
import { dequantizeWeight } from '../src/kernels/reference/matmul.ts';
import { randomWeightBytes } from '../src/kernels/reference/matmul-data.ts';
import { t5RelativeBiasReference } from '../src/kernels/reference/t5-bias.ts';
import { timestepEmbeddingReference } from '../src/kernels/reference/timestep.ts';
import { permuteReference } from '../src/kernels/reference/transpose.ts';
import { upsampleNearestReference } from '../src/kernels/reference/upsample.ts';
import { scaleReference } from '../src/kernels/reference/scale.ts';
import { softmaxReference } from '../src/kernels/reference/softmax.ts';
import { expectClose, TOLERANCE, type Tolerance } from './kernels/harness.ts';

const TOL = {
  activation: { abs: 1e-6, rel: 4e-6 },
  rmsNorm: { abs: 1e-5, rel: 1e-5 },
  layerNorm: { abs: 2e-5, rel: 2e-5 },
  groupNorm: { abs: 2e-5, rel: 2e-5 },
  conv2d: { abs: 2e-5, rel: 1e-5 },
  scale: { abs: 1e-6, rel: 2.5e-7 },
  binary: { add: TOLERANCE.exact, sub: TOLERANCE.exact, mul: TOLERANCE.exact, div: { abs: 0, rel: 4e-7 } } as Record<CpuBinaryOp, Tolerance>,
} as const;

let multi: CpuKernels;
let single: CpuKernels;
beforeAll(async () => {
  multi = await CpuKernels.create({ threads: 2, wakeWorkers: 'always' });
  single = await CpuKernels.create({ threads: 1 });
});
afterAll(async () => {
  await multi?.close();
  await single?.close();
});
const both = () => [multi, single];
const RUNS = { numRuns: 6, endOnFailure: true } as const;

describe('CPU ops against the references', () => {
  it('rms_norm and layer_norm (with and without weight, bias, AdaLN modulation)', async () => {
    await fc.assert(fc.asyncProperty(fc.integer({ min: 1, max: 9 }), fc.integer({ min: 1, max: 300 }), fc.integer({ min: 1, max: 1e6 }), fc.boolean(),
      async (rows, cols, seed, weighted) => {
        const x = randomValues(rows * cols, seed, 3);
        const w = weighted ? randomValues(cols, seed + 1) : null;
        const b = weighted ? randomValues(cols, seed + 2) : null;
        for (const cpu of both()) {
          expectClose(await cpu.rmsNorm(x, cols, w, 1e-5), rmsNormReference(x, w, cols, 1e-5), TOL.rmsNorm, `rms ${rows}×${cols}`);
          expectClose(await cpu.layerNorm(x, cols, w, b, 1e-6), layerNormReference(x, w, b, cols, 1e-6), TOL.layerNorm, `ln ${rows}×${cols}`);
        }
      }), RUNS);
    const rows = 6, cols = 37;
    const x = randomValues(rows * cols, 9, 2);
    const mod = {
      shift: { data: randomValues(3 * cols * 2, 10), offset: 5, stride: 2 * cols },
      scale: { data: randomValues(3 * cols, 11), offset: 0, stride: cols },
      rowsPerBatch: 2,
    };
    for (const cpu of both()) {
      expectClose(await cpu.layerNorm(x, cols, null, null, 1e-6, mod), layerNormReference(x, null, null, cols, 1e-6, mod), TOL.layerNorm, 'adaln');
    }
  });

  it('group_norm (with SiLU), odd spatial sizes', async () => {
    await fc.assert(fc.asyncProperty(fc.integer({ min: 1, max: 2 }), fc.integer({ min: 1, max: 4 }), fc.integer({ min: 1, max: 4 }), fc.integer({ min: 1, max: 70 }),
      fc.integer({ min: 1, max: 1e6 }), fc.boolean(),
      async (n, groups, per, spatial, seed, silu) => {
        const channels = groups * per;
        const x = randomValues(n * channels * spatial, seed, 2);
        const w = randomValues(channels, seed + 1), b = randomValues(channels, seed + 2);
        for (const cpu of both()) {
          expectClose(await cpu.groupNorm(x, n, channels, groups, w, b, 1e-5, silu), groupNormReference(x, w, b, n, channels, groups, 1e-5, silu),
            TOL.groupNorm, `gn ${n}×${channels}/${groups}×${spatial} silu=${silu}`);
        }
      }), RUNS);
  });

  it('softmax (scales, odd widths, rows of -inf, large values)', async () => {
    await fc.assert(fc.asyncProperty(fc.integer({ min: 1, max: 7 }), fc.integer({ min: 1, max: 200 }), fc.integer({ min: 1, max: 1e6 }),
      fc.constantFrom(1, 0.125, 3),
      async (rows, n, seed, scale) => {
        const x = randomValues(rows * n, seed, 8);
        for (const cpu of both()) expectClose(await cpu.softmax(x, rows, n, scale), softmaxReference(x, rows, n, scale), TOLERANCE.f32, `softmax ${rows}×${n}`);
      }), RUNS);
    const x = Float32Array.from([-Infinity, -Infinity, -Infinity, -Infinity, 1e30, 0, -1e30, 5, 80, 81, -80, 0]);
    for (const cpu of both()) expectClose(await cpu.softmax(x, 3, 4), softmaxReference(x, 3, 4), TOLERANCE.f32, 'extremes');
  });

  it.each(['gelu', 'gelu_tanh', 'quick_gelu', 'silu'] as CpuActivation[])('%s, plain, gated and fused-gated', async (kind) => {
    await fc.assert(fc.asyncProperty(fc.integer({ min: 1, max: 9000 }), fc.integer({ min: 1, max: 1e6 }), async (n, seed) => {
      const x = randomValues(n, seed, 12);
      for (const cpu of both()) expectClose(await cpu.activation(kind, x), activationReference(kind, x), TOL.activation, `${kind} n=${n}`);
    }), { ...RUNS, numRuns: 4 });
    const edges = Float32Array.from([0, -0, 1e-30, -1e-30, 1e-3, -1e-3, 0.5, -0.5, 3, -3, 5.5, -5.5, 9, -9, 12, -12, 30, -30, 88, -88, 100, -100]);
    for (const cpu of both()) expectClose(await cpu.activation(kind, edges), activationReference(kind, edges), TOL.activation, `${kind} edges`);
    const g = randomValues(5000, 3, 6), u = randomValues(5000, 4, 2);
    for (const cpu of both()) {
      expectClose(await cpu.gatedActivation(kind, g, u), gatedMlpReference(kind, g, u), TOL.activation, `gated ${kind}`);
      const fused = randomValues(6 * 2 * 33, 5, 6);
      expectClose(await cpu.gatedActivationFused(kind, fused, 33, 'first'), gatedMlpFusedReference(kind, fused, 33, 'first'), TOL.activation, 'fused first');
      expectClose(await cpu.gatedActivationFused(kind, fused, 33, 'second'), gatedMlpFusedReference(kind, fused, 33, 'second'), TOL.activation, 'fused second');
    }
  });

  it('binary ops with broadcasting, and scale', async () => {
    const cases: Array<[number[], number[]]> = [[[3, 4], [3, 4]], [[3, 4], [4]], [[2, 1, 5], [3, 1]], [[1], [2, 3, 7]], [[2, 3, 1, 4], [1, 3, 5, 1]]];
    for (const [as, bs] of cases) {
      const a = randomValues(as.reduce((p, d) => p * d, 1), 1, 3);
      const b = randomValues(bs.reduce((p, d) => p * d, 1), 2, 3).map((v) => v + (v < 0 ? -0.5 : 0.5));
      const rank = Math.max(as.length, bs.length);
      const pa = [...Array(rank - as.length).fill(1), ...as], pb = [...Array(rank - bs.length).fill(1), ...bs];
      const out = pa.map((d, i) => Math.max(d, pb[i]!));
      for (const op of ['add', 'sub', 'mul', 'div'] as CpuBinaryOp[]) {
        for (const cpu of both()) {
          expectClose(await cpu.binary(op, a, as, b, bs), binaryReference(op, a, as, b, bs, out), TOL.binary[op], `${op} ${JSON.stringify(as)} ${JSON.stringify(bs)}`);
        }
      }
    }
    const x = randomValues(10001, 7, 5);
    for (const cpu of both()) expectClose(await cpu.scale(x, 0.3, -1.25), scaleReference(x, 0.3, -1.25), TOL.scale, 'scale');
    await expect(multi.binary('add', new Float32Array(6), [2, 3], new Float32Array(4), [4])).rejects.toThrow(/broadcast/);
  });

  it('attention: GQA, causal (offsets), masks, key padding, relative bias, all-masked rows', async () => {
    const arb = fc.record({
      batch: fc.integer({ min: 1, max: 2 }),
      lq: fc.integer({ min: 1, max: 9 }),
      lk: fc.integer({ min: 1, max: 40 }),
      kvHeads: fc.integer({ min: 1, max: 2 }),
      group: fc.integer({ min: 1, max: 3 }),
      headDim: fc.integer({ min: 1, max: 40 }),
      causal: fc.boolean(),
      mask: fc.constantFrom('none', 'full', 'row', 'pad', 'bias'),
      seed: fc.integer({ min: 1, max: 1e6 }),
    });
    await fc.assert(fc.asyncProperty(arb, async (c) => {
      const H = c.kvHeads * c.group;
      const o: AttentionReferenceOptions = {
        batch: c.batch, lq: c.lq, lk: c.lk, heads: H, kvHeads: c.kvHeads, headDim: c.headDim, causal: c.causal,
        ...(c.mask === 'full' ? { mask: { data: randomValues(c.batch * H * c.lq * c.lk, c.seed + 3, 2).map((v) => (v > 1.6 ? -Infinity : v)), shape: [c.batch, H, c.lq, c.lk] } } : {}),
        ...(c.mask === 'row' ? { mask: { data: randomValues(c.lk, c.seed + 4).map((v) => (v > 0.5 ? -3.4e38 : 0)), shape: [c.lk] } } : {}),
        ...(c.mask === 'pad' ? { keyPadding: Array.from({ length: c.batch * c.lk }, (_, i) => (i % 3 === 1 ? 0 : 1)) } : {}),
        ...(c.mask === 'bias' ? { relativeBias: randomValues(H * (c.lq + c.lk - 1), c.seed + 5) } : {}),
      };
      const q = randomValues(c.batch * c.lq * H * c.headDim, c.seed, 2);
      const k = randomValues(c.batch * c.lk * c.kvHeads * c.headDim, c.seed + 1, 2);
      const v = randomValues(k.length, c.seed + 2, 2);
      const want = attentionReference(q, k, v, o);
      for (const cpu of both()) expectClose(await cpu.attention(q, k, v, o), want, TOLERANCE.f32, JSON.stringify(c));
    }), { ...RUNS, numRuns: 12 });
    const q = randomValues(1 * 4 * 2 * 8, 1), k = randomValues(1 * 6 * 2 * 8, 2), v = randomValues(1 * 6 * 2 * 8, 3);
    const o = { batch: 1, lq: 4, lk: 6, heads: 2, headDim: 8, causal: true, causalOffset: -3 };
    expectClose(await multi.attention(q, k, v, o), attentionReference(q, k, v, o), TOLERANCE.f32, 'offset −3 (rows without keys are 0)');
  });

  it('rope: half and interleaved, partial rotary dims', async () => {
    const B = 2, L = 5, H = 3, D = 16;
    const x = randomValues(B * L * H * D, 21, 2);
    for (const [mode, rot] of [['half', 16], ['half', 8], ['interleaved', 16]] as const) {
      const opts = { batch: B, seq: L, heads: H, headDim: D, rotaryDim: rot, mode, angle: llamaAngle(10000, rot, (_b: number, l: number) => l + 3) };
      for (const cpu of both()) expectClose(await cpu.rope(x, opts), ropeReference(x, opts), TOLERANCE.f32, `rope ${mode} ${rot}`);
    }
  });

  it('conv2d: strides, padding, dilation, bias; f32 and f16 weights; im2col in chunks', async () => {
    await fc.assert(fc.asyncProperty(
      fc.record({
        n: fc.integer({ min: 1, max: 2 }), cin: fc.integer({ min: 1, max: 5 }), cout: fc.integer({ min: 1, max: 11 }),
        h: fc.integer({ min: 3, max: 12 }), w: fc.integer({ min: 3, max: 12 }), k: fc.constantFrom(1, 3),
        s: fc.integer({ min: 1, max: 2 }), p: fc.integer({ min: 0, max: 1 }), d: fc.integer({ min: 1, max: 2 }), seed: fc.integer({ min: 1, max: 1e6 }),
        // im2col chunk budget: the default (one chunk), or a few pixels per chunk
        chunkBytes: fc.constantFrom(32 * 1024 * 1024, 1, 700, 5000),
      }),
      async (c) => {
        if (c.h + 2 * c.p < c.d * (c.k - 1) + 1 || c.w + 2 * c.p < c.d * (c.k - 1) + 1) return;
        const x = randomValues(c.n * c.cin * c.h * c.w, c.seed, 2);
        const wt = randomValues(c.cout * c.cin * c.k * c.k, c.seed + 1);
        const bias = randomValues(c.cout, c.seed + 2);
        const g = { stride: [c.s, c.s] as const, pad: { top: c.p, bottom: c.p, left: c.p, right: c.p }, dilation: [c.d, c.d] as const };
        // Odd seeds store the weight as f16 (decoded in the kernel), even ones as f32.
        const f16 = c.seed % 2 === 1;
        const stored = f16 ? fromFloat32('F16', wt) : new Uint8Array(wt.buffer);
        const values = f16 ? toFloat32('F16', stored) : wt;
        const want = conv2dReference(x, [c.n, c.cin, c.h, c.w], values, [c.cout, c.cin, c.k, c.k], bias, g);
        for (const cpu of both()) {
          const weight = await cpu.loadWeight(stored, [c.cout, c.cin * c.k * c.k], f16 ? 'f16' : 'f32');
          try {
            const got = await cpu.conv2d(x, [c.n, c.cin, c.h, c.w], weight, [c.k, c.k], g, bias, c.chunkBytes);
            expect(got.shape).toEqual(want.shape);
            expectClose(got.data, want.data, TOL.conv2d, `conv2d ${JSON.stringify(c)}`);
          } finally {
            await cpu.freeWeight(weight);
          }
        }
      }), { ...RUNS, numRuns: 10 });
  });

  it('data movement: permute, concat, kv cache write, copy, nearest upsampling (exact)', async () => {
    await fc.assert(fc.asyncProperty(fc.array(fc.integer({ min: 1, max: 5 }), { minLength: 1, maxLength: 5 }), fc.integer({ min: 1, max: 1e6 }), async (shape, seed) => {
      const x = randomValues(shape.reduce((a, b) => a * b, 1), seed);
      const perm = shape.map((_, i) => i).sort((a, b) => ((a * 7 + seed) % 5) - ((b * 7 + seed) % 5));
      for (const cpu of both()) expectClose(await cpu.permute(x, shape, perm), permuteReference(x, shape, perm), TOLERANCE.exact, `permute ${JSON.stringify(shape)} ${JSON.stringify(perm)}`);
      const axis = seed % shape.length;
      const other = shape.map((d, i) => (i === axis ? d + 1 : d));
      const inputs = [{ data: x, shape }, { data: randomValues(other.reduce((a, b) => a * b, 1), seed + 1), shape: other }];
      for (const cpu of both()) expectClose(await cpu.concat(inputs, axis - shape.length), concatReference(inputs, axis), TOLERANCE.exact, `concat axis ${axis}`);
    }), RUNS);
    const cache = randomValues(2 * 7 * 5, 1), values = randomValues(2 * 3 * 5, 2);
    for (const cpu of both()) {
      expectClose(await cpu.kvCacheWrite(cache, values, 2, 7, 3, 5, 4), kvCacheWriteReference(cache, values, 2, 7, 3, 5, 4), TOLERANCE.exact, 'kv cache');
      await expect(cpu.kvCacheWrite(cache, values, 2, 7, 3, 5, 5)).rejects.toThrow(/capacity/);
      const up = randomValues(3 * 4 * 5, 3);
      expectClose(await cpu.upsampleNearest(up, 3, 4, 5, 2, 3), upsampleNearestReference(up, 3, 4, 5, 2, 3), TOLERANCE.exact, 'upsample');
      const a = Uint8Array.from({ length: 19 }, (_, i) => i), b = new Uint8Array(23);
      expect(await cpu.copyBytes(a, 3, b, 5, 11)).toEqual(copyBytesReference(a, 3, b, 5, 11));
    }
  });

  it('AdaLN modulation and gated residual', async () => {
    const cols = 19, rows = 6;
    const x = randomValues(rows * cols, 1, 2), y = randomValues(rows * cols, 2);
    const shift = { data: randomValues(3 * 2 * cols, 3), offset: cols, stride: 2 * cols };
    const scale = { data: randomValues(3 * cols + 4, 4), offset: 4, stride: cols };
    for (const cpu of both()) {
      expectClose(await cpu.adaLNModulate(x, cols, 2, shift, scale), adaLNModulateReference(x, cols, 2, shift, scale), TOL.scale, 'modulate');
      expectClose(await cpu.gatedResidual(x, y, cols, 3, scale), gatedResidualReference(x, y, cols, 3, scale), TOL.scale, 'gated residual');
    }
  });

  it('embedding from a resident table of every weight layout (ids outside the table give zero rows), split tables too', async () => {
    for (const dtype of ['f32', 'f16', 'bf16', 'f8_e4m3', 'f8_e5m2', 'q8_0', 'q4_0', 'q4_1', 'q5_0', 'q5_1', 'q4_k', 'q5_k', 'q6_k'] as const) {
      const vocab = 21, dim = dtype.endsWith('_k') ? 256 : 64;
      const bytes = randomWeightBytes(dtype, vocab, dim, 17);
      const values = dequantizeWeight(dtype, bytes, vocab * dim);
      const ids = [0, 20, 7, -1, 21, 8, 8, 13];
      for (const cpu of both()) {
        const table = await cpu.loadWeight(bytes, [vocab, dim], dtype);
        try {
          expectClose(await cpu.embedding(ids, table), embeddingReference(ids, values, dim), TOLERANCE.exact, `embedding ${dtype}`);
        } finally {
          await cpu.freeWeight(table);
        }
      }
    }
    const small = await CpuKernels.create({ threads: 2, memoryLimit: 2 * 1024 * 1024, activationReserve: 128 * 1024 });
    try {
      const vocab = 2000, dim = 256;
      const values = randomValues(vocab * dim, 3);
      const table = await small.loadWeight(values, [vocab, dim], 'f32');
      expect(table.memorySlots.length).toBeGreaterThan(1);
      const ids = [0, 1999, 500, 1500, 1234, 7];
      expectClose(await small.embedding(ids, table), embeddingReference(ids, values, dim), TOLERANCE.exact, 'split table');
    } finally {
      await small.close();
    }
  });

  it('T5 relative bias and timestep embedding (host-side, bit for bit)', async () => {
    for (const bidirectional of [true, false]) {
      const o = { numBuckets: 32, maxDistance: 128, bidirectional };
      const w = randomValues(32 * 4, 5);
      expectClose(await multi.t5RelativeBias(w, 4, 9, 300, o), t5RelativeBiasReference(w, 4, 9, 300, o), TOLERANCE.exact, `t5 bias ${bidirectional}`);
    }
    for (const o of [{}, { flipSinToCos: true, downscaleFreqShift: 0 }, { scale: 1000, pytorchDevice: 'cpu' as const, timestepMultiplier: 1000 }]) {
      expectClose(await multi.timestepEmbedding([0, 1, 999.5, 0.25], 33, o), timestepEmbeddingReference([0, 1, 999.5, 0.25], 33, o), TOLERANCE.exact, 'timestep');
    }
  });
});
