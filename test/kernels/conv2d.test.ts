// conv2d on NCHW against its CPU reference: random shapes, kernels, strides, paddings (the
// asymmetric VAE downsampler included) and weight/bias stored forms; the model's three
// convolutions; a 2-D grid of workgroups.
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fromFloat32, toFloat32 } from '../../src/formats/dtypes.ts';
import { overrideKernelLimits } from '../../src/kernels/limits.ts';
import { conv2d, conv2dKernelFor, conv2dOutputShape, type Conv2dKernel, type Conv2dOptions } from '../../src/kernels/ops/conv2d.ts';
import { KernelRecorder } from '../../src/kernels/recorder.ts';
import { conv2dReference } from '../../src/kernels/reference/conv2d.ts';
import { downloadF32, emptyTensor, uploadTensor, type GpuTensor } from '../../src/kernels/tensor.ts';
import { expectClose, openTestGpu, randomF32, type TestGpu, type Tolerance } from './harness.ts';

// f32 sums of up to Cin·KH·KW = 9·40 = 360 products of values in [-1, 1] and [-0.5, 0.5], in a
// different order than the f64 reference: the error is a few ulp of the sum of |terms| (≤ ~90):
// under 1e-5 for these sizes.
const TOL: Tolerance = { abs: 2e-5, rel: 1e-5 };

let t: TestGpu;
beforeAll(async () => {
  t = await openTestGpu();
});
afterAll(async () => {
  await t?.set.close();
});

type WDtype = 'f32' | 'f16' | 'bf16';

async function stored(values: Float32Array, shape: readonly number[], dtype: WDtype): Promise<{ tensor: GpuTensor; values: Float32Array }> {
  if (dtype === 'f32') return { tensor: await uploadTensor(t.gpu, values, shape, 'f32'), values };
  const name = dtype === 'f16' ? 'F16' : 'BF16';
  const bytes = fromFloat32(name, values);
  return { tensor: await uploadTensor(t.gpu, bytes, shape, dtype), values: toFloat32(name, bytes) };
}

interface Case {
  n: number;
  cin: number;
  cout: number;
  h: number;
  w: number;
  kh: number;
  kw: number;
  stride: [number, number];
  dilation?: [number, number];
  pad: { top: number; bottom: number; left: number; right: number };
  wd: WDtype;
  bias: WDtype | 'none';
  seed: number;
  kernel?: Conv2dKernel;
  tol?: Tolerance;
}

async function checkCase(c: Case): Promise<void> {
  const xShape = [c.n, c.cin, c.h, c.w] as [number, number, number, number];
  const wShape = [c.cout, c.cin, c.kh, c.kw] as [number, number, number, number];
  const x = randomF32(c.n * c.cin * c.h * c.w, c.seed, 1);
  const tx = await uploadTensor(t.gpu, x, xShape);
  const w = await stored(randomF32(c.cout * c.cin * c.kh * c.kw, c.seed + 1, 0.5), wShape, c.wd);
  const b = c.bias === 'none' ? null : await stored(randomF32(c.cout, c.seed + 2, 1), [c.cout], c.bias);
  const options: Conv2dOptions = { stride: c.stride, padding: c.pad, dilation: c.dilation ?? [1, 1] };
  const outShape = conv2dOutputShape(xShape, wShape, options);
  const out = await emptyTensor(t.gpu, outShape);
  try {
    const rec = new KernelRecorder(t.gpu);
    await conv2d(rec, tx, w.tensor, b?.tensor ?? null, out, options, c.kernel);
    await rec.submit();
    const want = conv2dReference(x, xShape, w.values, wShape, b?.values ?? null, { stride: c.stride, pad: c.pad, dilation: c.dilation ?? [1, 1] });
    expect(want.shape).toEqual(outShape);
    expectClose(await downloadF32(out), want.data, c.tol ?? TOL, `conv2d ${JSON.stringify(c)}`);
  } finally {
    for (const r of [tx, w.tensor, b?.tensor, out]) r?.destroy();
  }
}

const same = (p: number) => ({ top: p, bottom: p, left: p, right: p });

describe.each(['direct', 'tiled', 'tiled-wide'] as const)('conv2d, %s kernel', (kernel) => {
  const check = (c: Case) => checkCase({ ...c, kernel });
  it('matches the reference on random shapes, kernels, strides, paddings and stored forms', async () => {
    await fc.assert(fc.asyncProperty(
      fc.record({
        n: fc.integer({ min: 1, max: 2 }), cin: fc.integer({ min: 1, max: 20 }), cout: fc.integer({ min: 1, max: 20 }),
        h: fc.integer({ min: 5, max: 11 }), w: fc.integer({ min: 5, max: 11 }), kh: fc.integer({ min: 1, max: 3 }), kw: fc.integer({ min: 1, max: 3 }),
        stride: fc.tuple(fc.integer({ min: 1, max: 2 }), fc.integer({ min: 1, max: 2 })),
        dilation: fc.tuple(fc.integer({ min: 1, max: 2 }), fc.integer({ min: 1, max: 2 })),
        pad: fc.record({ top: fc.nat(1), bottom: fc.nat(1), left: fc.nat(1), right: fc.nat(1) }),
        wd: fc.constantFrom<WDtype>('f32', 'f16', 'bf16'), bias: fc.constantFrom<WDtype | 'none'>('f32', 'f16', 'bf16', 'none'), seed: fc.nat(),
      }),
      check,
    ), { numRuns: 12 });
  });

  it('the SD convolutions: 3×3 pad 1, 1×1, the UNet downsampler (3×3 stride 2 pad 1) and the VAE one (pad (0, 1, 0, 1), stride 2); dilation', async () => {
    await check({ n: 1, cin: 40, cout: 33, h: 6, w: 7, kh: 3, kw: 3, stride: [1, 1], pad: same(1), wd: 'f32', bias: 'f32', seed: 1 });
    await check({ n: 2, cin: 70, cout: 17, h: 5, w: 5, kh: 1, kw: 1, stride: [1, 1], pad: same(0), wd: 'bf16', bias: 'bf16', seed: 2 });
    await check({ n: 1, cin: 8, cout: 8, h: 9, w: 8, kh: 3, kw: 3, stride: [2, 2], pad: same(1), wd: 'f16', bias: 'f16', seed: 3 });
    await check({ n: 1, cin: 8, cout: 8, h: 8, w: 8, kh: 3, kw: 3, stride: [2, 2], pad: { top: 0, bottom: 1, left: 0, right: 1 }, wd: 'f32', bias: 'f32', seed: 4 });
    await check({ n: 1, cin: 3, cout: 5, h: 9, w: 8, kh: 3, kw: 2, stride: [1, 1], dilation: [2, 3], pad: same(1), wd: 'f32', bias: 'none', seed: 14 });
    // The VAE's pad keeps 8 → 4; symmetric pad 1 would too, but reads different pixels.
    expect(conv2dOutputShape([1, 8, 8, 8], [8, 8, 3, 3], { stride: 2, padding: { top: 0, bottom: 1, left: 0, right: 1 } })).toEqual([1, 8, 4, 4]);
  });

  it('beyond maxComputeWorkgroupsPerDimension the workgroups go on a 2-D grid', async () => {
    overrideKernelLimits(t.gpu, { maxComputeWorkgroupsPerDimension: 3 });
    try {
      await check({ n: 2, cin: 3, cout: 35, h: 9, w: 10, kh: 3, kw: 3, stride: [1, 1], pad: same(1), wd: 'f32', bias: 'none', seed: 5 });
    } finally {
      overrideKernelLimits(t.gpu, {});
    }
  });

  it('a VAE-width layer: 64 → 72 and 64 → 136 channels, 3×3 pad 1 on 17×19, bf16 filter (576 taps: partial tiles of channels, pixels and taps)', async () => {
    // 576 products a sum: a few ulp of sums up to ~150.
    await check({ n: 1, cin: 64, cout: 72, h: 17, w: 19, kh: 3, kw: 3, stride: [1, 1], pad: same(1), wd: 'bf16', bias: 'f32', seed: 21, tol: { abs: 6e-5, rel: 2e-5 } });
    await check({ n: 1, cin: 64, cout: 136, h: 17, w: 19, kh: 3, kw: 3, stride: [1, 1], pad: same(1), wd: 'f32', bias: 'bf16', seed: 22, tol: { abs: 6e-5, rel: 2e-5 } });
  });
});

describe('conv2d', () => {
  it('auto picks the implicit GEMM where its 64-channel tile fills, the direct kernel for narrow outputs', () => {
    expect(conv2dKernelFor(512, 128 * 128)).toBe('tiled-wide');
    expect(conv2dKernelFor(128, 64)).toBe('tiled-wide');
    expect(conv2dKernelFor(64, 64)).toBe('tiled');
    expect(conv2dKernelFor(3, 1024 * 1024)).toBe('direct');
    expect(conv2dKernelFor(32, 4096)).toBe('direct');
    expect(conv2dKernelFor(512, 16)).toBe('direct');
  });

  it('refuses a wrong out shape and mismatched channels', async () => {
    const x = await emptyTensor(t.gpu, [1, 3, 4, 4]);
    const w = await emptyTensor(t.gpu, [2, 3, 3, 3]);
    const bad = await emptyTensor(t.gpu, [1, 2, 4, 4]);
    const rec = new KernelRecorder(t.gpu);
    await expect(conv2d(rec, x, w, null, bad)).rejects.toThrow(/out must have shape \[1, 2, 2, 2\]/);
    const w4 = await emptyTensor(t.gpu, [2, 4, 3, 3]);
    await expect(conv2d(rec, x, w4, null, bad, { padding: 1 })).rejects.toThrow(/expects 4 input channels/);
    for (const r of [x, w, bad, w4]) r.destroy();
  });
});
