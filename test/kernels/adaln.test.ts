// AdaLN modulation and the gated residual against their CPU references: random shapes, slices
// of one [B, 6·D] projection at their offsets and strides (FLUX), a 2-D grid.
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { overrideKernelLimits } from '../../src/kernels/limits.ts';
import { adaLNModulate, gatedResidual } from '../../src/kernels/ops/adaln.ts';
import { KernelRecorder } from '../../src/kernels/recorder.ts';
import { adaLNModulateReference, gatedResidualReference } from '../../src/kernels/reference/adaln.ts';
import { downloadF32, emptyTensor, uploadTensor } from '../../src/kernels/tensor.ts';
import { expectClose, openTestGpu, randomF32, type TestGpu, type Tolerance } from './harness.ts';

// One multiply and one add in f32 (fused or not): one or two roundings against f64.
const TOL: Tolerance = { abs: 1e-6, rel: 2.5e-7 };

let t: TestGpu;
beforeAll(async () => {
  t = await openTestGpu();
});
afterAll(async () => {
  await t?.set.close();
});

async function check(batch: number, tokens: number, cols: number, chunks: [number, number, number], seed: number): Promise<void> {
  const stride = 6 * cols;
  const x = randomF32(batch * tokens * cols, seed, 3);
  const y = randomF32(batch * tokens * cols, seed + 1, 3);
  const emb = randomF32(batch * stride, seed + 2, 1);
  const tx = await uploadTensor(t.gpu, x, [batch, tokens, cols]);
  const ty = await uploadTensor(t.gpu, y, [batch, tokens, cols]);
  const temb = await uploadTensor(t.gpu, emb, [batch, stride]);
  const o1 = await emptyTensor(t.gpu, [batch, tokens, cols]);
  const o2 = await emptyTensor(t.gpu, [batch, tokens, cols]);
  try {
    const [shiftAt, scaleAt, gateAt] = chunks;
    const rec = new KernelRecorder(t.gpu);
    await adaLNModulate(rec, tx, { tensor: temb, offset: shiftAt * cols, stride }, { tensor: temb, offset: scaleAt * cols, stride }, o1);
    await gatedResidual(rec, tx, ty, { tensor: temb, offset: gateAt * cols, stride }, o2);
    await rec.submit();
    const slice = (at: number) => ({ data: emb, offset: at * cols, stride });
    expectClose(await downloadF32(o1), adaLNModulateReference(x, cols, tokens, slice(shiftAt), slice(scaleAt)), TOL, `modulate ${batch}×${tokens}×${cols}`);
    expectClose(await downloadF32(o2), gatedResidualReference(x, y, cols, tokens, slice(gateAt)), TOL, `gated residual ${batch}×${tokens}×${cols}`);
  } finally {
    for (const r of [tx, ty, temb, o1, o2]) r.destroy();
  }
}

describe('adaln', () => {
  it('modulation and gated residual match the reference on random shapes and chunk positions', async () => {
    await fc.assert(fc.asyncProperty(
      fc.integer({ min: 1, max: 3 }), fc.integer({ min: 1, max: 9 }), fc.integer({ min: 1, max: 200 }),
      fc.tuple(fc.integer({ min: 0, max: 5 }), fc.integer({ min: 0, max: 5 }), fc.integer({ min: 0, max: 5 })), fc.nat(),
      async (batch, tokens, cols, chunks, seed) => check(batch, tokens, cols, chunks, seed),
    ), { numRuns: 12 });
  });

  it('FLUX\'s msa chunks (shift 0, scale 1, gate 2) on a 2-D grid', async () => {
    overrideKernelLimits(t.gpu, { maxComputeWorkgroupsPerDimension: 2 });
    try {
      await check(2, 9, 48, [0, 1, 2], 3);
    } finally {
      overrideKernelLimits(t.gpu, {});
    }
  });

  it('refuses a slice that runs past its tensor', async () => {
    const x = await emptyTensor(t.gpu, [2, 3, 4]);
    const m = await emptyTensor(t.gpu, [2, 8]);
    await expect(adaLNModulate(new KernelRecorder(t.gpu), x, { tensor: m, offset: 5, stride: 8 }, { tensor: m }, x)).rejects.toThrow(/shift reads up to element 17/);
    x.destroy();
    m.destroy();
  });
});
