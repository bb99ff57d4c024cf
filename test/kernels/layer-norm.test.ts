// LayerNorm against its CPU reference: random shapes, weight and bias each f32/f16/bf16 or
// absent, both reductions forced, the fused AdaLN modulation (FLUX), a 2-D grid of rows.
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fromFloat32, toFloat32 } from '../../src/formats/dtypes.ts';
import { overrideKernelLimits } from '../../src/kernels/limits.ts';
import { layerNorm } from '../../src/kernels/ops/layer-norm.ts';
import { KernelRecorder } from '../../src/kernels/recorder.ts';
import { layerNormReference, type ModulationReference } from '../../src/kernels/reference/layer-norm.ts';
import { downloadF32, emptyTensor, uploadTensor, type GpuTensor } from '../../src/kernels/tensor.ts';
import { expectClose, openTestGpu, randomF32, type TestGpu, type Tolerance } from './harness.ts';

// Two-pass mean and variance in f32 (different summation order than the f64 reference) and
// inverseSqrt's 2 ulp; outputs are O(1–10) after the affine step and modulation.
const TOL: Tolerance = { abs: 2e-5, rel: 2e-5 };

let t: TestGpu;
beforeAll(async () => {
  t = await openTestGpu();
});
afterAll(async () => {
  await t?.set.close();
});

type WDtype = 'f32' | 'f16' | 'bf16' | 'none';

async function stored(values: Float32Array, dtype: Exclude<WDtype, 'none'>): Promise<{ tensor: GpuTensor; values: Float32Array }> {
  if (dtype === 'f32') return { tensor: await uploadTensor(t.gpu, values, [values.length], 'f32'), values };
  const name = dtype === 'f16' ? 'F16' : 'BF16';
  const bytes = fromFloat32(name, values);
  return { tensor: await uploadTensor(t.gpu, bytes, [values.length], dtype), values: toFloat32(name, bytes) };
}

interface Case {
  batch: number;
  tokens: number;
  cols: number;
  w: WDtype;
  b: WDtype;
  subgroups: boolean;
  modulate: boolean;
  seed: number;
}

async function check(c: Case): Promise<void> {
  const rows = c.batch * c.tokens;
  // An offset mean: the second pass around the mean is what keeps this accurate.
  const x = randomF32(rows * c.cols, c.seed, 4).map((v) => v + 30);
  const tx = await uploadTensor(t.gpu, x, [c.batch, c.tokens, c.cols]);
  const w = c.w === 'none' ? null : await stored(randomF32(c.cols, c.seed + 1, 2), c.w);
  const b = c.b === 'none' ? null : await stored(randomF32(c.cols, c.seed + 2, 1), c.b);
  const out = await emptyTensor(t.gpu, [c.batch, c.tokens, c.cols]);
  // FLUX: one [B, 6·D] projection; shift at chunk 3, scale at chunk 4.
  const emb = randomF32(c.batch * 6 * c.cols, c.seed + 3, 1);
  const temb = c.modulate ? await uploadTensor(t.gpu, emb, [c.batch, 6 * c.cols]) : null;
  try {
    const rec = new KernelRecorder(t.gpu);
    const stride = 6 * c.cols;
    await layerNorm(rec, tx, w?.tensor ?? null, b?.tensor ?? null, out, {
      eps: 1e-6, subgroups: c.subgroups,
      ...(temb ? { modulation: { shift: { tensor: temb, offset: 3 * c.cols, stride }, scale: { tensor: temb, offset: 4 * c.cols, stride } } } : {}),
    });
    await rec.submit();
    const mod: ModulationReference | undefined = c.modulate
      ? { shift: { data: emb, offset: 3 * c.cols, stride }, scale: { data: emb, offset: 4 * c.cols, stride }, rowsPerBatch: c.tokens }
      : undefined;
    const want = layerNormReference(x, w?.values ?? null, b?.values ?? null, c.cols, 1e-6, mod);
    expectClose(await downloadF32(out), want, TOL, `layer_norm ${JSON.stringify(c)}`);
  } finally {
    for (const r of [tx, w?.tensor, b?.tensor, out, temb]) r?.destroy();
  }
}

describe('layer_norm', () => {
  it('matches the reference on random shapes, affine dtypes, both reductions, with and without AdaLN', async () => {
    await fc.assert(fc.asyncProperty(
      fc.record({
        batch: fc.integer({ min: 1, max: 3 }), tokens: fc.integer({ min: 1, max: 5 }), cols: fc.integer({ min: 1, max: 600 }),
        w: fc.constantFrom<WDtype>('f32', 'f16', 'bf16', 'none'), b: fc.constantFrom<WDtype>('f32', 'f16', 'bf16', 'none'),
        subgroups: fc.boolean(), modulate: fc.boolean(), seed: fc.integer({ min: 0, max: 1e6 }),
      }),
      check,
    ), { numRuns: 16 });
  });

  it('each reduction, GPT-2/CLIP style (weight and bias) and FLUX style (neither, modulated)', async () => {
    for (const subgroups of [false, true]) {
      await check({ batch: 2, tokens: 3, cols: 64, w: 'f32', b: 'f32', subgroups, modulate: false, seed: 5 });
      await check({ batch: 2, tokens: 3, cols: 300, w: 'none', b: 'none', subgroups, modulate: true, seed: 6 });
    }
  });

  it('rows beyond maxComputeWorkgroupsPerDimension go on a 2-D grid', async () => {
    overrideKernelLimits(t.gpu, { maxComputeWorkgroupsPerDimension: 4 });
    try {
      await check({ batch: 3, tokens: 5, cols: 33, w: 'bf16', b: 'f16', subgroups: true, modulate: true, seed: 7 });
      await check({ batch: 1, tokens: 17, cols: 33, w: 'f32', b: 'none', subgroups: false, modulate: false, seed: 8 });
    } finally {
      overrideKernelLimits(t.gpu, {});
    }
  });

  it('shift and scale from two tensors with their own strides (AdaLayerNormContinuous chunks scale first)', async () => {
    const [batch, tokens, cols] = [2, 3, 20];
    const x = randomF32(batch * tokens * cols, 41, 2);
    const emb = randomF32(batch * 2 * cols, 42, 1);
    const other = randomF32(batch * cols, 43, 1);
    const tx = await uploadTensor(t.gpu, x, [batch, tokens, cols]);
    const temb = await uploadTensor(t.gpu, emb, [batch, 2 * cols]);
    const tother = await uploadTensor(t.gpu, other, [batch, cols]);
    const out = await emptyTensor(t.gpu, [batch, tokens, cols]);
    const rec = new KernelRecorder(t.gpu);
    await layerNorm(rec, tx, null, null, out, { eps: 1e-6, modulation: { scale: { tensor: temb, offset: 0, stride: 2 * cols }, shift: { tensor: tother } } });
    await rec.submit();
    const mod = { scale: { data: emb, offset: 0, stride: 2 * cols }, shift: { data: other, offset: 0, stride: cols }, rowsPerBatch: tokens };
    expectClose(await downloadF32(out), layerNormReference(x, null, null, cols, 1e-6, mod), TOL, 'two modulation tensors');
    for (const r of [tx, temb, tother, out]) r.destroy();
  });

  it('refuses a modulation tensor too short for its slices', async () => {
    const x = await emptyTensor(t.gpu, [2, 3, 8]);
    const m = await emptyTensor(t.gpu, [2, 8]);
    const rec = new KernelRecorder(t.gpu);
    await expect(layerNorm(rec, x, null, null, x, { eps: 1e-6, modulation: { shift: { tensor: m }, scale: { tensor: m, offset: 8 } } }))
      .rejects.toThrow(/scale reads up to element 24/);
    x.destroy();
    m.destroy();
  });
});
