// softmax (f32 path on SwiftShader) against the f64 reference. Tolerance: TOLERANCE.f32
// (|err| ≤ 1e-5 + 1e-4·|want|).
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { downloadF32, emptyTensor, KernelRecorder, overrideKernelLimits, uploadTensor, type GpuDevice } from '../../src/index.ts';
import { softmax } from '../../src/kernels/ops/softmax.ts';
import { softmaxReference } from '../../src/kernels/reference/softmax.ts';
import { expectClose, openTestGpu, randomF32, TOLERANCE, type TestGpu } from './harness.ts';

let t: TestGpu;
let gpu: GpuDevice;

beforeAll(async () => {
  t = await openTestGpu();
  gpu = t.gpu;
});

afterAll(async () => {
  await t?.set.close();
});

async function run(x: Float32Array, rows: number, n: number, o: { scale?: number; subgroups?: boolean; inPlace?: boolean } = {}): Promise<Float32Array> {
  const tx = await uploadTensor(gpu, x, [rows, n]);
  const out = o.inPlace ? tx : await emptyTensor(gpu, [rows, n]);
  try {
    const rec = new KernelRecorder(gpu);
    await softmax(rec, tx, out, { scale: o.scale, subgroups: o.subgroups });
    await rec.submit();
    return await downloadF32(out);
  } finally {
    tx.destroy();
    out.destroy();
  }
}

describe('softmax, f32 path', () => {
  it('matches the reference on random rows (lengths 1..700, offsets up to 1e4, scales, in place or not, subgroups on and off)', async () => {
    await fc.assert(fc.asyncProperty(
      fc.integer({ min: 1, max: 6 }), fc.integer({ min: 1, max: 700 }), fc.double({ min: -1e4, max: 1e4, noNaN: true }),
      fc.option(fc.double({ min: 0.01, max: 4, noNaN: true }), { nil: undefined }), fc.boolean(), fc.boolean(), fc.integer({ min: 1, max: 1e6 }),
      async (rows, n, offset, scale, subgroups, inPlace, seed) => {
        const x = randomF32(rows * n, seed, 20).map((v) => v + offset);
        const got = await run(x, rows, n, { scale, subgroups, inPlace });
        expectClose(got, softmaxReference(x, rows, n, scale ?? 1), TOLERANCE.f32, `rows ${rows} n ${n} offset ${offset} scale ${scale}`);
      }), { numRuns: 16, seed: 7 });
  });

  it('is numerically stable: values whose exp() overflows f32, −inf entries, a row of −inf (zeros)', async () => {
    const x = new Float32Array([1000, 999, 998, -Infinity, 88.8, 89, -1e30, -Infinity, -Infinity, -Infinity, -Infinity, -Infinity]);
    const got = await run(x, 3, 4);
    expect(got.every(Number.isFinite)).toBe(true);
    expectClose(got, softmaxReference(x, 3, 4), TOLERANCE.f32, 'extremes');
    expect([...got.subarray(8)]).toEqual([0, 0, 0, 0]);
  });

  it('spreads rows over a 2-D grid and splits tensors larger than a binding (limits lowered)', async () => {
    overrideKernelLimits(gpu, { maxComputeWorkgroupsPerDimension: 7, maxStorageBufferBindingSize: 1024 });
    try {
      const rows = 50, n = 37;
      const x = randomF32(rows * n, 3, 10);
      expectClose(await run(x, rows, n), softmaxReference(x, rows, n), TOLERANCE.f32, 'split');
      expectClose(await run(x, rows, n, { inPlace: true, subgroups: false }), softmaxReference(x, rows, n), TOLERANCE.f32, 'split in place');
      await expect(run(randomF32(300, 1), 1, 300)).rejects.toThrow(/larger than a binding/);
    } finally {
      overrideKernelLimits(gpu, {});
    }
  });
});
