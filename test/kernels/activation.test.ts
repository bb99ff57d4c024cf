// Activations and gated MLPs against their f64 CPU references: random inputs of odd lengths,
// every kind, separate and fused gates, a 2-D grid; the traps: erf's accuracy over the whole
// range (the negative tail relative), tanh-GELU at ±100 and beyond, no NaN or infinity anywhere.
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { overrideKernelLimits } from '../../src/kernels/limits.ts';
import { activation, ACTIVATIONS, gatedMlp, gatedMlpFused, geglu, swiglu, type ActivationKind } from '../../src/kernels/ops/activation.ts';
import { KernelRecorder } from '../../src/kernels/recorder.ts';
import {
  activationReference, erf64, gatedMlpFusedReference, gatedMlpReference, gelu64,
} from '../../src/kernels/reference/activation.ts';
import { downloadF32, emptyTensor, uploadTensor } from '../../src/kernels/tensor.ts';
import { expectClose, openTestGpu, randomF32, type TestGpu, type Tolerance } from './harness.ts';

// f32 arithmetic against f64: the exp builtin (a few ulp; the argument's rounding), one division;
// for gelu our erfc fit (≤ 4.5e-7 relative). Inputs are O(10), outputs likewise.
const TOL: Tolerance = { abs: 1e-6, rel: 4e-6 };

let t: TestGpu;
beforeAll(async () => {
  t = await openTestGpu();
});
afterAll(async () => {
  await t?.set.close();
});

async function run(kind: ActivationKind, x: Float32Array): Promise<Float32Array> {
  const tx = await uploadTensor(t.gpu, x, [x.length]);
  const out = await emptyTensor(t.gpu, [x.length]);
  try {
    const rec = new KernelRecorder(t.gpu);
    await activation(rec, kind, tx, out);
    await rec.submit();
    return await downloadF32(out);
  } finally {
    tx.destroy();
    out.destroy();
  }
}

describe('activations', () => {
  it('each kind matches its f64 reference on random inputs of random odd and even lengths', async () => {
    await fc.assert(fc.asyncProperty(
      fc.constantFrom(...ACTIVATIONS), fc.integer({ min: 1, max: 3000 }), fc.integer({ min: 0, max: 1e6 }),
      async (kind, n, seed) => {
        const x = randomF32(n, seed, 12);
        expectClose(await run(kind, x), activationReference(kind, x), TOL, `${kind} n=${n}`);
      },
    ), { numRuns: 12 });
  });

  it('GELU (erf): accurate across [-14, 14], relative in the negative tail where 1 + erf(x) cancels', async () => {
    const n = 4001;
    const x = Float32Array.from({ length: n }, (_, i) => -14 + (28 * i) / (n - 1));
    const got = await run('gelu', x);
    let worstAbs = 0;
    let worstTailRel = 0;
    for (let i = 0; i < n; i++) {
      const want = gelu64(x[i]!);
      worstAbs = Math.max(worstAbs, Math.abs(got[i]! - want));
      // Where f32 is still normal: there a naive 0.5·x·(1 + erf) would have no correct digits left.
      if (x[i]! < -1 && Math.abs(want) > 1e-30) worstTailRel = Math.max(worstTailRel, Math.abs(got[i]! - want) / Math.abs(want));
    }
    expect(worstAbs, 'max |GELU error|').toBeLessThan(2e-6);
    expect(worstTailRel, 'max relative error for x < -1').toBeLessThan(2e-5);
    // erf itself, read back through Φ: erf(x/√2) = 2·gelu(x)/x − 1 for x ≠ 0, at moderate x where the division is exact enough.
    for (let i = 0; i < n; i++) {
      if (Math.abs(x[i]!) < 0.5) continue;
      const erfGot = (2 * got[i]!) / x[i]! - 1;
      expect(Math.abs(erfGot - erf64(x[i]! / Math.SQRT2)), `erf at ${x[i]! / Math.SQRT2}`).toBeLessThan(2e-6);
    }
  });

  it('GELU-tanh (gelu_new) is finite and right at ±100, ±1e4 and ±3e38: the tanh never sees a large argument', async () => {
    const x = Float32Array.from([100, -100, 50, -50, 10, -10, 1e4, -1e4, 3e38, -3e38, 0, -0.5]);
    const got = await run('gelu_tanh', x);
    for (let i = 0; i < x.length; i++) expect(Number.isFinite(got[i]!), `gelu_tanh(${x[i]}) = ${got[i]}`).toBe(true);
    const want = Float32Array.from(x, (v) => (v > 5 ? v : v < -5 ? 0 : 0.5 * v * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (v + 0.044715 * v ** 3)))));
    expectClose(got, want, TOL, 'gelu_tanh at large |x|');
    for (const kind of ['gelu', 'quick_gelu', 'silu'] as const) {
      const y = await run(kind, x);
      for (let i = 0; i < x.length; i++) {
        expect(Number.isFinite(y[i]!), `${kind}(${x[i]}) = ${y[i]}`).toBe(true);
        if (x[i]! >= 50) expect(y[i]).toBeCloseTo(x[i]!, 0);
        if (x[i]! <= -50) expect(Math.abs(y[i]!)).toBeLessThan(1e-6);
      }
    }
  });

  it('beyond maxComputeWorkgroupsPerDimension the elements go on a 2-D grid', async () => {
    overrideKernelLimits(t.gpu, { maxComputeWorkgroupsPerDimension: 3 });
    try {
      const x = randomF32(256 * 7 + 5, 77, 8);
      expectClose(await run('silu', x), activationReference('silu', x), TOL, 'silu on a 2-D grid');
    } finally {
      overrideKernelLimits(t.gpu, {});
    }
  });
});

describe('gated MLPs', () => {
  it('separate gate and up (SwiGLU, gated-gelu) match the reference on random shapes', async () => {
    await fc.assert(fc.asyncProperty(
      fc.constantFrom(...ACTIVATIONS), fc.integer({ min: 1, max: 7 }), fc.integer({ min: 1, max: 300 }), fc.integer({ min: 0, max: 1e6 }),
      async (kind, rows, cols, seed) => {
        const g = randomF32(rows * cols, seed, 6);
        const u = randomF32(rows * cols, seed + 1, 2);
        const tg = await uploadTensor(t.gpu, g, [rows, cols]);
        const tu = await uploadTensor(t.gpu, u, [rows, cols]);
        const out = await emptyTensor(t.gpu, [rows, cols]);
        const rec = new KernelRecorder(t.gpu);
        await gatedMlp(rec, kind, tg, tu, out);
        await rec.submit();
        expectClose(await downloadF32(out), gatedMlpReference(kind, g, u), TOL, `gated ${kind} ${rows}×${cols}`);
        for (const r of [tg, tu, out]) r.destroy();
      },
    ), { numRuns: 8 });
  });

  it('halves of one projection: GEGLU (gate second, erf GELU) and a fused gate_up (gate first)', async () => {
    for (const [rows, cols] of [[3, 5], [2, 129]] as const) {
      const x = randomF32(rows * 2 * cols, rows * cols, 5);
      const tx = await uploadTensor(t.gpu, x, [1, rows, 2 * cols]);
      const o1 = await emptyTensor(t.gpu, [1, rows, cols]);
      const o2 = await emptyTensor(t.gpu, [1, rows, cols]);
      const rec = new KernelRecorder(t.gpu);
      await geglu(rec, tx, o1);
      await gatedMlpFused(rec, 'silu', tx, o2, { gate: 'first' });
      await rec.submit();
      expectClose(await downloadF32(o1), gatedMlpFusedReference('gelu', x, cols, 'second'), TOL, `geglu ${rows}×${cols}`);
      expectClose(await downloadF32(o2), gatedMlpFusedReference('silu', x, cols, 'first'), TOL, `gate_up ${rows}×${cols}`);
      for (const r of [tx, o1, o2]) r.destroy();
    }
  });

  it('swiglu on a 2-D grid, and shape checks', async () => {
    overrideKernelLimits(t.gpu, { maxComputeWorkgroupsPerDimension: 2 });
    try {
      const g = randomF32(3 * 300, 1, 6);
      const u = randomF32(3 * 300, 2, 2);
      const tg = await uploadTensor(t.gpu, g, [3, 300]);
      const tu = await uploadTensor(t.gpu, u, [3, 300]);
      const out = await emptyTensor(t.gpu, [3, 300]);
      const rec = new KernelRecorder(t.gpu);
      await swiglu(rec, tg, tu, out);
      await rec.submit();
      expectClose(await downloadF32(out), gatedMlpReference('silu', g, u), TOL, 'swiglu 2-D grid');
      await expect(gatedMlpFused(rec, 'gelu', tg, out, { gate: 'second' })).rejects.toThrow(/x must have shape \[3, 600\]/);
      for (const r of [tg, tu, out]) r.destroy();
    } finally {
      overrideKernelLimits(t.gpu, {});
    }
  });
});
