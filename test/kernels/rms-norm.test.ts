// RMSNorm against its CPU reference: random shapes (odd sizes), weights f32/f16/bf16 or none,
// subgroup and workgroup-memory reductions both forced, and a 2-D grid of rows.
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fromFloat32, toFloat32 } from '../../src/formats/dtypes.ts';
import { overrideKernelLimits } from '../../src/kernels/limits.ts';
import { rmsNorm } from '../../src/kernels/ops/rms-norm.ts';
import { KernelRecorder } from '../../src/kernels/recorder.ts';
import { rmsNormReference } from '../../src/kernels/reference/rms-norm.ts';
import { downloadF32, emptyTensor, uploadTensor, type GpuTensor } from '../../src/kernels/tensor.ts';
import { expectClose, openTestGpu, randomF32, type TestGpu, type Tolerance } from './harness.ts';

// f32 sums of up to ~1000 squares in a different order than the f64 reference, and inverseSqrt's
// 2 ulp: well under 1e-5 relative; values are O(1) after normalization.
const TOL: Tolerance = { abs: 1e-5, rel: 1e-5 };

let t: TestGpu;
beforeAll(async () => {
  t = await openTestGpu();
});
afterAll(async () => {
  await t?.set.close();
});

type WDtype = 'f32' | 'f16' | 'bf16' | 'none';

async function weightTensor(values: Float32Array, dtype: Exclude<WDtype, 'none'>): Promise<{ tensor: GpuTensor; values: Float32Array }> {
  if (dtype === 'f32') return { tensor: await uploadTensor(t.gpu, values, [values.length], 'f32'), values };
  const name = dtype === 'f16' ? 'F16' : 'BF16';
  const bytes = fromFloat32(name, values);
  return { tensor: await uploadTensor(t.gpu, bytes, [values.length], dtype), values: toFloat32(name, bytes) };
}

async function check(rows: number, cols: number, wdtype: WDtype, subgroups: boolean, seed: number, scale = 3): Promise<void> {
  const x = randomF32(rows * cols, seed, scale);
  const tx = await uploadTensor(t.gpu, x, [rows, cols]);
  const w = wdtype === 'none' ? null : await weightTensor(randomF32(cols, seed + 1, 2), wdtype);
  const out = await emptyTensor(t.gpu, [rows, cols]);
  try {
    const rec = new KernelRecorder(t.gpu);
    await rmsNorm(rec, tx, w?.tensor ?? null, out, { eps: 1e-5, subgroups });
    await rec.submit();
    expectClose(await downloadF32(out), rmsNormReference(x, w?.values ?? null, cols, 1e-5), TOL, `rms_norm ${rows}×${cols} w=${wdtype} subgroups=${subgroups}`);
  } finally {
    tx.destroy();
    w?.tensor.destroy();
    out.destroy();
  }
}

describe('rms_norm', () => {
  it('the device has subgroups (SwiftShader), so both reductions are exercised', () => {
    expect(t.gpu.hasFeature('subgroups')).toBe(true);
  });

  it('matches the reference on random shapes, weight dtypes and both reductions', async () => {
    await fc.assert(fc.asyncProperty(
      fc.integer({ min: 1, max: 9 }), fc.integer({ min: 1, max: 700 }), fc.constantFrom<WDtype>('f32', 'f16', 'bf16', 'none'),
      fc.boolean(), fc.integer({ min: 0, max: 1e6 }),
      async (rows, cols, wdtype, subgroups, seed) => check(rows, cols, wdtype, subgroups, seed),
    ), { numRuns: 16 });
  });

  it('T5 and Llama sizes, both reductions: a row longer than the workgroup, and one shorter', async () => {
    for (const subgroups of [false, true]) {
      await check(3, 1000, 'f32', subgroups, 11);
      await check(5, 3, 'bf16', subgroups, 12);
    }
  });

  it('rows beyond maxComputeWorkgroupsPerDimension go on a 2-D grid', async () => {
    overrideKernelLimits(t.gpu, { maxComputeWorkgroupsPerDimension: 3 });
    try {
      await check(11, 37, 'f16', true, 21);
      await check(10, 37, 'f32', false, 22);
    } finally {
      overrideKernelLimits(t.gpu, {});
    }
  });

  it('rejects a weight of the wrong length and mixed activation dtypes', async () => {
    const x = await emptyTensor(t.gpu, [2, 8]);
    const w = await emptyTensor(t.gpu, [7]);
    const rec = new KernelRecorder(t.gpu);
    await expect(rmsNorm(rec, x, w, x, { eps: 1e-6 })).rejects.toThrow(/weight must have shape \[8\]/);
    x.destroy();
    w.destroy();
  });
});
