// T5 relative position bias: Hugging Face's bucket function (values worked out by hand from
// its formula), and the GPU gather against the CPU reference, exactly (it only copies values).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fromFloat32, toFloat32 } from '../../src/formats/dtypes.ts';
import { downloadF32, emptyTensor, KernelRecorder, uploadTensor, type GpuDevice } from '../../src/index.ts';
import { t5Bucket, t5BucketTable, t5RelativeBias } from '../../src/kernels/ops/t5-bias.ts';
import { t5BucketReference, t5RelativeBiasReference } from '../../src/kernels/reference/t5-bias.ts';
import { openTestGpu, randomF32, type TestGpu } from './harness.ts';

let t: TestGpu;
let gpu: GpuDevice;

beforeAll(async () => {
  t = await openTestGpu();
  gpu = t.gpu;
});

afterAll(async () => {
  await t?.set.close();
});

describe('t5RelativeBias', () => {
  it('buckets as Hugging Face does (32 buckets, max distance 128)', () => {
    // bidirectional: 16 buckets a side, 8 exact; log buckets up to distance 128.
    const enc: Array<[number, number]> = [[0, 0], [-1, 1], [-7, 7], [-8, 8], [-11, 8], [-12, 9], [-127, 15], [-500, 15], [1, 17], [7, 23], [8, 24], [12, 25], [200, 31]];
    for (const [rel, bucket] of enc) {
      expect(t5Bucket(rel, 32, 128, true), `rel ${rel}`).toBe(bucket);
      expect(t5BucketReference(rel, { numBuckets: 32, maxDistance: 128, bidirectional: true })).toBe(bucket);
    }
    // unidirectional (decoder): keys after the query share bucket 0; 16 exact.
    const dec: Array<[number, number]> = [[5, 0], [0, 0], [-15, 15], [-16, 16], [-127, 31], [-1000, 31]];
    for (const [rel, bucket] of dec) expect(t5Bucket(rel, 32, 128, false), `rel ${rel}`).toBe(bucket);
    for (let rel = -300; rel <= 300; rel++) {
      for (const bidirectional of [true, false]) {
        expect(t5Bucket(rel, 32, 128, bidirectional)).toBe(t5BucketReference(rel, { numBuckets: 32, maxDistance: 128, bidirectional }));
      }
    }
    expect([...t5BucketTable(2, 3, 32, 128, true)]).toEqual([1, 0, 17, 18]);
  });

  it.each(['f32', 'f16', 'bf16'] as const)('gathers the per-head bias from a %s weight, as the reference\'s [H, Lq, Lk]', async (dtype) => {
    const buckets = 32, heads = 4, lq = 23, lk = 150;
    const stored = dtype === 'f32' ? null : dtype === 'f16' ? 'F16' : 'BF16';
    const raw = randomF32(buckets * heads, 5, 8);
    const weight = stored ? toFloat32(stored, fromFloat32(stored, raw)) : raw;
    const tw = await uploadTensor(gpu, stored ? fromFloat32(stored, raw) : raw, [buckets, heads], dtype);
    const out = await emptyTensor(gpu, [heads, lq + lk - 1]);
    try {
      const rec = new KernelRecorder(gpu);
      await t5RelativeBias(rec, tw, out, { lq, lk });
      await rec.submit();
      const compact = await downloadF32(out);
      const want = t5RelativeBiasReference(weight, heads, lq, lk, { numBuckets: buckets, maxDistance: 128, bidirectional: true });
      const got = new Float32Array(heads * lq * lk);
      for (let h = 0; h < heads; h++) for (let i = 0; i < lq; i++) for (let j = 0; j < lk; j++) got[(h * lq + i) * lk + j] = compact[h * (lq + lk - 1) + j - i + lq - 1]!;
      expect(got).toEqual(want);
    } finally {
      tw.destroy();
      out.destroy();
    }
  });
});
