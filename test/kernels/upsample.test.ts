// Nearest upsampling against its CPU reference: random NCHW shapes and integer factors
// (×2 as Upsample2D, others too), exact (values are moved, not computed); a 2-D grid.
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { overrideKernelLimits } from '../../src/kernels/limits.ts';
import { upsampleNearest } from '../../src/kernels/ops/upsample.ts';
import { KernelRecorder } from '../../src/kernels/recorder.ts';
import { upsampleNearestReference } from '../../src/kernels/reference/upsample.ts';
import { downloadF32, emptyTensor, uploadTensor } from '../../src/kernels/tensor.ts';
import { expectClose, openTestGpu, randomF32, TOLERANCE, type TestGpu } from './harness.ts';

let t: TestGpu;
beforeAll(async () => {
  t = await openTestGpu();
});
afterAll(async () => {
  await t?.set.close();
});

async function check(n: number, c: number, h: number, w: number, fy: number, fx: number, seed: number): Promise<void> {
  const x = randomF32(n * c * h * w, seed, 2);
  const tx = await uploadTensor(t.gpu, x, [n, c, h, w]);
  const out = await emptyTensor(t.gpu, [n, c, h * fy, w * fx]);
  try {
    const rec = new KernelRecorder(t.gpu);
    await upsampleNearest(rec, tx, out);
    await rec.submit();
    expectClose(await downloadF32(out), upsampleNearestReference(x, n * c, h, w, fy, fx), TOLERANCE.exact, `upsample ${n}×${c}×${h}×${w} by ${fy}×${fx}`);
  } finally {
    tx.destroy();
    out.destroy();
  }
}

describe('upsample_nearest', () => {
  it('matches the reference on random shapes and factors', async () => {
    await fc.assert(fc.asyncProperty(
      fc.integer({ min: 1, max: 2 }), fc.integer({ min: 1, max: 5 }), fc.integer({ min: 1, max: 9 }), fc.integer({ min: 1, max: 9 }),
      fc.integer({ min: 1, max: 3 }), fc.integer({ min: 1, max: 3 }), fc.nat(),
      async (n, c, h, w, fy, fx, seed) => check(n, c, h, w, fy, fx, seed),
    ), { numRuns: 12 });
  });

  it('×2 as the VAE and UNet upsample, on a 2-D grid; non-integer factors are refused', async () => {
    overrideKernelLimits(t.gpu, { maxComputeWorkgroupsPerDimension: 3 });
    try {
      await check(1, 4, 8, 7, 2, 2, 1);
    } finally {
      overrideKernelLimits(t.gpu, {});
    }
    const x = await emptyTensor(t.gpu, [1, 1, 2, 2]);
    const out = await emptyTensor(t.gpu, [1, 1, 3, 4]);
    await expect(upsampleNearest(new KernelRecorder(t.gpu), x, out)).rejects.toThrow(/integer factors/);
    x.destroy();
    out.destroy();
  });
});
