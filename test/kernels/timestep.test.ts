// Sinusoidal timestep embeddings: against the CPU reference on random options, and against
// sin/cos values computed independently to 17 digits (mpmath, at the f32 angles PyTorch forms)
// at t = 999 (SD) and t = 0.7·1000 (FLUX), where the angles reach 999 and 700 rad: WGSL's sin
// and cos are only specified on [-π, π], so the table comes from the host's f64 trig.
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { overrideKernelLimits } from '../../src/kernels/limits.ts';
import { timestepEmbedding, timestepTable, type TimestepEmbeddingOptions } from '../../src/kernels/ops/timestep.ts';
import { KernelRecorder } from '../../src/kernels/recorder.ts';
import { timestepEmbeddingReference } from '../../src/kernels/reference/timestep.ts';
import { downloadF32, emptyTensor } from '../../src/kernels/tensor.ts';
import { expectClose, openTestGpu, TOLERANCE, type TestGpu } from './harness.ts';

// The kernel places f32 values computed on the host: exactly the reference's.
const TOL = TOLERANCE.exact;
// Against 17-digit values: the f32 rounding of the result (half an ulp of 1 is 6e-8).
const ABS = 6e-8;

let t: TestGpu;
beforeAll(async () => {
  t = await openTestGpu();
});
afterAll(async () => {
  await t?.set.close();
});

async function run(timesteps: readonly number[], dim: number, options: TimestepEmbeddingOptions): Promise<{ got: Float32Array; dispatches: number }> {
  const out = await emptyTensor(t.gpu, [timesteps.length, dim]);
  try {
    const rec = new KernelRecorder(t.gpu);
    await timestepEmbedding(rec, timesteps, out, options);
    const dispatches = rec.pending;
    await rec.submit();
    return { got: await downloadF32(out), dispatches };
  } finally {
    out.destroy();
  }
}

describe('timestep_embedding', () => {
  it('matches the reference on random timesteps, widths (odd ones padded) and options', async () => {
    await fc.assert(fc.asyncProperty(
      fc.array(fc.float({ min: 0, max: 1000, noNaN: true }), { minLength: 1, maxLength: 4 }), fc.integer({ min: 1, max: 333 }),
      fc.record({
        flipSinToCos: fc.boolean(), downscaleFreqShift: fc.constantFrom(0, 1), scale: fc.constantFrom(1, 2.5), timestepMultiplier: fc.constantFrom(1, 1000),
        pytorchDevice: fc.constantFrom<'cuda' | 'cpu'>('cuda', 'cpu'),
      }),
      async (ts, dim, options) => {
        // half − shift must not be 0 (diffusers would divide by zero): dims 2 and 3 take shift 0.
        const o = { ...options, downscaleFreqShift: Math.floor(dim / 2) === 1 ? 0 : options.downscaleFreqShift };
        const steps = o.timestepMultiplier === 1000 ? ts.map((v) => v / 1000) : ts;
        const { got } = await run(steps, dim, o);
        expectClose(got, timestepEmbeddingReference(steps, dim, o), TOL, `timesteps ${steps} dim ${dim} ${JSON.stringify(o)}`);
      },
    ), { numRuns: 12 });
  });

  it('SD UNet at t = 999 (dim 320, flip_sin_to_cos, freq_shift 0): 17-digit sin and cos of angles up to 999 rad', async () => {
    const { got } = await run([999], 320, { flipSinToCos: true, downscaleFreqShift: 0 });
    // [j, sin, cos] at the f32 angles 999, 943.1168…, 749.1442…, 118.7313…, 0.1058…
    const want: [number, number, number][] = [
      [0, -0.026460752737064127, 0.99964985298082646],
      [1, 0.59641328453552704, 0.80267751558738984],
      [5, 0.99212759715378317, 0.12523111021571493],
      [37, -0.60449880889242266, 0.79660604444583664],
      [159, 0.10562206190565039, 0.99440634553425842],
    ];
    for (const [j, sin, cos] of want) {
      expect(Math.abs(got[j]! - cos), `cos column ${j}`).toBeLessThanOrEqual(ABS);
      expect(Math.abs(got[160 + j]! - sin), `sin column ${160 + j}`).toBeLessThanOrEqual(ABS);
    }
  });

  it('the exponent rounds as PyTorch on CUDA (× f32 reciprocal) or on the CPU (÷) asks: at t = 999 columns 10 and 12 differ', async () => {
    // [j, cuda sin, cuda cos, cpu sin, cpu cos] at the f32 angles 561.77893… / 561.77899… and 500.68600… / 500.68606…
    const want: [number, number, number, number, number][] = [
      [10, 0.53639039178190407, -0.84396999212297558, 0.53633887894249155, -0.84400272922231205],
      [12, -0.92182883756007157, -0.38759720618529642, -0.92185249289905845, -0.38754094149623907],
    ];
    const cuda = (await run([999], 320, { flipSinToCos: true, downscaleFreqShift: 0 })).got;
    const cpu = (await run([999], 320, { flipSinToCos: true, downscaleFreqShift: 0, pytorchDevice: 'cpu' })).got;
    for (const [j, cs, cc, ps, pc] of want) {
      expect(Math.abs(cuda[160 + j]! - cs), `cuda sin ${j}`).toBeLessThanOrEqual(ABS);
      expect(Math.abs(cuda[j]! - cc), `cuda cos ${j}`).toBeLessThanOrEqual(ABS);
      expect(Math.abs(cpu[160 + j]! - ps), `cpu sin ${j}`).toBeLessThanOrEqual(ABS);
      expect(Math.abs(cpu[j]! - pc), `cpu cos ${j}`).toBeLessThanOrEqual(ABS);
    }
  });

  it('FLUX at t = 0.7 (×1000 in f32 → 700 rad; dim 256, flip_sin_to_cos, shift 0)', async () => {
    const { got } = await run([0.7, 0.7], 256, { flipSinToCos: true, downscaleFreqShift: 0, timestepMultiplier: 1000 });
    const want: [number, number, number][] = [
      [0, 0.54397052336337564, -0.83910432588074244],
      [1, -0.88698385842223953, -0.46180042756411188],
      [5, -0.99934219395778167, -0.036265401909360979],
      [37, -0.98824834892850708, 0.15285679847517323],
      [127, 0.075151609315777559, 0.99717211935415078],
    ];
    for (const row of [0, 1]) {
      for (const [j, sin, cos] of want) {
        expect(Math.abs(got[row * 256 + j]! - cos), `cos column ${j}`).toBeLessThanOrEqual(ABS);
        expect(Math.abs(got[row * 256 + 128 + j]! - sin), `sin column ${128 + j}`).toBeLessThanOrEqual(ABS);
      }
    }
  });

  it('a table past one dispatch\'s uniforms takes several; odd widths end in a zero column; 2-D grid', async () => {
    const steps = Array.from({ length: 70 }, (_, i) => i * 14.3);
    const o = { flipSinToCos: false, downscaleFreqShift: 1 };
    const { got, dispatches } = await run(steps, 257, o);
    expect(dispatches).toBe(2);
    expectClose(got, timestepEmbeddingReference(steps, 257, o), TOL, '70 × 257');
    expect(got[256]).toBe(0);
    expect(timestepTable([5], 3, { downscaleFreqShift: 0 })).toEqual(Float32Array.from([Math.fround(Math.sin(5)), Math.fround(Math.cos(5)), 0]));
    expect(() => timestepTable([5], 3, {})).toThrow(/divides by zero/);
    overrideKernelLimits(t.gpu, { maxComputeWorkgroupsPerDimension: 2 });
    try {
      const r = await run(steps.slice(0, 9), 300, o);
      expectClose(r.got, timestepEmbeddingReference(steps.slice(0, 9), 300, o), TOL, '2-D grid');
    } finally {
      overrideKernelLimits(t.gpu, {});
    }
  });
});
