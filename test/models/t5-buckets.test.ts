import { describe, expect, it } from 'vitest';
import { t5Bucket as gpuBucket, t5BucketTable } from '../../src/kernels/ops/t5-bias.ts';
import { t5Bucket as cpuBucket, t5RelativeBiasTable } from '../../src/cpu/kernels.ts';

/**
 * T5's relative-position buckets (transformers' T5Attention._relative_position_bucket), far
 * beyond the tiny fixture's 10 tokens, against values derived here from the definition:
 *
 *   rel = key − query. Bidirectional: half = numBuckets / 2, offset = half when rel > 0, n = |rel|;
 *   otherwise half = numBuckets, offset 0, n = max(−rel, 0). exact = half / 2.
 *   n < exact → offset + n; else offset + min(exact + trunc(log(n / exact) / log(maxD / exact) · (half − exact)), half − 1).
 *
 * The expected values do not reuse that log formula: trunc(v) ≥ k ⇔ n ≥ t_k with
 * t_k = exact · (maxD / exact)^(k / (half − exact)), so a bucket is exact + (the number of
 * thresholds t_1..t_(half−exact−1) that n reaches). Where t_k is not an integer, f32 rounding
 * in HF's arithmetic (|rel. err| ~ 1e-7) cannot move n across it (every non-integer t_k here is
 * more than 1e-4 · t_k from an integer). Where t_k IS an integer (n = 16, 32, 64, 128 for 32 buckets / 128), HF's
 * float32 log decides, and the hand derivation is: maxD / exact = 16 = 2^4 and n / exact = 2^m,
 * torch computes float32(log(2^m)) / float32(log 16) · (half − exact) in float32. Scaling by a
 * power of two commutes with rounding, so float32(ln 4) = 2·float32(ln 2) and float32(ln 16) =
 * 4·float32(ln 2): m = 1, 2, 4 give exactly 1/4, 1/2, 1 → v = 2, 4, 8 exactly. For m = 3,
 * float32(ln 8) / float32(ln 16) rounds to exactly 0.75 (checked below) → v = 6. So HF lands ON
 * each integer threshold: n = t_k is in the upper bucket, as in exact arithmetic.
 */

interface Config { readonly numBuckets: number; readonly maxDistance: number; readonly bidirectional: boolean }

/** Thresholds t_1..t_(half−exact−1) in f64, and which of them are integers (the f32-sensitive cases). */
function thresholds(o: Config): { exact: number; half: number; t: number[]; integral: number[] } {
  const half = o.bidirectional ? o.numBuckets / 2 : o.numBuckets;
  const exact = half / 2;
  const steps = half - exact;
  const t: number[] = [];
  const integral: number[] = [];
  for (let k = 1; k <= steps; k++) {
    const tk = exact * Math.pow(o.maxDistance / exact, k / steps);
    const r = Math.round(tk);
    if (Math.abs(tk - r) < 1e-9 * tk) integral.push(r);
    if (k < steps) t.push(Math.abs(tk - r) < 1e-9 * tk ? r : tk);
  }
  return { exact, half, t, integral };
}

/** The expected bucket, by counting thresholds reached (integer thresholds: reached, see above). */
function expectedBucket(rel: number, o: Config): number {
  const { exact, half, t } = thresholds(o);
  let offset = 0;
  let n: number;
  if (o.bidirectional) {
    offset = rel > 0 ? half : 0;
    n = Math.abs(rel);
  } else {
    n = rel < 0 ? -rel : 0;
  }
  if (n < exact) return offset + n;
  return offset + Math.min(exact + t.filter((tk) => n >= tk).length, half - 1);
}

const T5: Config = { numBuckets: 32, maxDistance: 128, bidirectional: true };
const T5_DECODER: Config = { numBuckets: 32, maxDistance: 128, bidirectional: false };
const WIDE: Config = { numBuckets: 64, maxDistance: 256, bidirectional: true };

/** Written out by hand from the thresholds 8·2^(k/2) = 11.31, 16, 22.63, 32, 45.25, 64, 90.51, 128. */
const T5_RANGES: ReadonlyArray<readonly [number, number, number]> = [
  // [n from, n to (inclusive), bucket for rel = −n]
  [8, 11, 8], [12, 15, 9], [16, 22, 10], [23, 31, 11], [32, 45, 12], [46, 63, 13], [64, 90, 14], [91, 1000, 15],
];
/** From the thresholds 16·2^(3k/16) = 18.22, 20.75, 23.63, 26.91, 30.64, 34.90, 39.74, 45.25, 51.54, 58.69, 66.83, 76.11, 86.67, 98.70, 112.40, 128. */
const DECODER_RANGES: ReadonlyArray<readonly [number, number, number]> = [
  [16, 18, 16], [19, 20, 17], [21, 23, 18], [24, 26, 19], [27, 30, 20], [31, 34, 21], [35, 39, 22], [40, 45, 23],
  [46, 51, 24], [52, 58, 25], [59, 66, 26], [67, 76, 27], [77, 86, 28], [87, 98, 29], [99, 112, 30], [113, 1000, 31],
];

const implementations = [
  ['ops.t5Bucket (GPU host table)', (rel: number, o: Config) => gpuBucket(rel, o.numBuckets, o.maxDistance, o.bidirectional)],
  ['cpu t5Bucket', (rel: number, o: Config) => cpuBucket(rel, o)],
] as const;

describe('T5 relative-position buckets', () => {
  it('the hand-written tables agree with the threshold derivation (32 buckets, max distance 128)', () => {
    for (const [from, to, bucket] of T5_RANGES) {
      for (let n = from; n <= to; n++) {
        expect(expectedBucket(-n, T5)).toBe(bucket);
        expect(expectedBucket(n, T5)).toBe(bucket + 16);
      }
    }
    for (let n = 1; n < 8; n++) {
      expect(expectedBucket(-n, T5)).toBe(n);
      expect(expectedBucket(n, T5)).toBe(16 + n);
    }
    expect(expectedBucket(0, T5)).toBe(0);
    for (const [from, to, bucket] of DECODER_RANGES) for (let n = from; n <= to; n++) expect(expectedBucket(-n, T5_DECODER)).toBe(bucket);
    for (let n = 0; n < 16; n++) expect(expectedBucket(-n, T5_DECODER)).toBe(n);
    for (let n = 1; n <= 1000; n++) expect(expectedBucket(n, T5_DECODER)).toBe(0);
  });

  it('integer thresholds (the float32-sensitive cases) are exactly the powers of two derived by hand', () => {
    expect(thresholds(T5).integral).toEqual([16, 32, 64, 128]);
    expect(thresholds(T5_DECODER).integral).toEqual([128]);
    expect(thresholds(WIDE).integral).toEqual([32, 64, 128, 256]);
    // Every non-integer threshold is far from an integer: f32 rounding cannot cross it.
    for (const o of [T5, T5_DECODER, WIDE]) {
      for (const tk of thresholds(o).t) if (!Number.isInteger(tk)) expect(Math.abs(tk - Math.round(tk))).toBeGreaterThan(1e-4 * tk);
    }
    // The float32 facts the derivation uses (float32(ln x) = correctly rounded ln x).
    const f = Math.fround;
    expect(f(Math.log(4))).toBe(2 * f(Math.log(2)));
    expect(f(Math.log(16))).toBe(4 * f(Math.log(2)));
    expect(f(f(Math.log(8)) / f(Math.log(16)))).toBe(0.75);
    expect(f(f(Math.log(8)) / f(Math.log(8)))).toBe(1);
  });

  for (const [label, bucket] of implementations) {
    for (const [name, o] of [['encoder 32/128', T5], ['decoder 32/128', T5_DECODER], ['encoder 64/256', WIDE]] as const) {
      it(`${label}: ${name}, relative positions −5000..5000`, () => {
        const wrong: string[] = [];
        for (let rel = -5000; rel <= 5000; rel++) {
          const want = expectedBucket(rel, o);
          const got = bucket(rel, o);
          if (got !== want) wrong.push(`rel ${rel}: ${got}, expected ${want}`);
        }
        expect(wrong.slice(0, 10)).toEqual([]);
      });
    }
    it(`${label}: the threshold points themselves, by hand`, () => {
      // n = 16, 32, 64 sit on integer thresholds: upper bucket; one below: lower bucket.
      const cases: Array<[number, number]> = [
        [-15, 9], [-16, 10], [-31, 11], [-32, 12], [-63, 13], [-64, 14], [-90, 14], [-91, 15], [-127, 15], [-128, 15], [-1000, 15],
        [15, 25], [16, 26], [31, 27], [32, 28], [63, 29], [64, 30], [90, 30], [91, 31], [1000, 31],
        [-11, 8], [-12, 9], [-22, 10], [-23, 11], [-45, 12], [-46, 13], [0, 0], [1, 17], [-1, 1], [7, 23], [8, 24],
      ];
      for (const [rel, want] of cases) expect([rel, bucket(rel, T5)]).toEqual([rel, want]);
      const decoder: Array<[number, number]> = [[5, 0], [0, 0], [-15, 15], [-16, 16], [-18, 16], [-19, 17], [-112, 30], [-113, 31], [-128, 31], [-1000, 31]];
      for (const [rel, want] of decoder) expect([rel, bucket(rel, T5_DECODER)]).toEqual([rel, want]);
    });
  }

  it('the GPU bucket table of a 1000 × 1500 attention indexes rel = r − (Lq − 1)', () => {
    const lq = 1000;
    const lk = 1500;
    const table = t5BucketTable(lq, lk, 32, 128, true);
    expect(table.length).toBe(lq + lk - 1);
    for (let r = 0; r < table.length; r++) expect(table[r]).toBe(expectedBucket(r - (lq - 1), T5));
  });

  it('the CPU bias table [H, Lq + Lk − 1] reads weight[bucket(j − i), h] (Lq ≠ Lk, far positions)', () => {
    const heads = 3;
    const lq = 700;
    const lk = 1200;
    const weight = Float32Array.from({ length: 32 * heads }, (_, i) => Math.floor(i / heads) * 10 + (i % heads));
    const table = t5RelativeBiasTable(weight, heads, lq, lk, T5);
    const width = lq + lk - 1;
    for (const [i, j] of [[0, 0], [0, 1199], [699, 0], [350, 351], [350, 349], [10, 900], [699, 1199], [500, 20]] as const) {
      const b = expectedBucket(j - i, T5);
      for (let h = 0; h < heads; h++) expect(table[h * width + j - i + lq - 1]).toBe(b * 10 + h);
    }
  });
});
