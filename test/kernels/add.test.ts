// add, binary (add/sub/mul/div with NumPy broadcasting; b stored as f32, f16 or bf16) and scale
// against their CPU references: random shapes and broadcast patterns, a 2-D grid.
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fromFloat32, toFloat32 } from '../../src/formats/dtypes.ts';
import { overrideKernelLimits } from '../../src/kernels/limits.ts';
import { add } from '../../src/kernels/ops/add.ts';
import { binary, broadcastPlan, mul, type BinaryOp } from '../../src/kernels/ops/binary.ts';
import { scale } from '../../src/kernels/ops/scale.ts';
import { KernelRecorder } from '../../src/kernels/recorder.ts';
import { addReference } from '../../src/kernels/reference/add.ts';
import { binaryReference } from '../../src/kernels/reference/binary.ts';
import { scaleReference } from '../../src/kernels/reference/scale.ts';
import { downloadF32, emptyTensor, uploadTensor, type GpuTensor } from '../../src/kernels/tensor.ts';
import { expectClose, openTestGpu, randomF32, TOLERANCE, type TestGpu, type Tolerance } from './harness.ts';

// add, sub and mul of two f32 values round once, as the reference does: exact. WGSL's f32
// division is good to 2.5 ulp. scale's x·s + b may be fused (one rounding) or not (two).
const TOL: Readonly<Record<BinaryOp, Tolerance>> = {
  add: TOLERANCE.exact, sub: TOLERANCE.exact, mul: TOLERANCE.exact, div: { abs: 0, rel: 4e-7 },
};
const SCALE_TOL: Tolerance = { abs: 1e-6, rel: 2.5e-7 };

let t: TestGpu;
beforeAll(async () => {
  t = await openTestGpu();
});
afterAll(async () => {
  await t?.set.close();
});

type BDtype = 'f32' | 'f16' | 'bf16';

async function stored(values: Float32Array, shape: readonly number[], dtype: BDtype): Promise<{ tensor: GpuTensor; values: Float32Array }> {
  if (dtype === 'f32') return { tensor: await uploadTensor(t.gpu, values, shape, 'f32'), values };
  const name = dtype === 'f16' ? 'F16' : 'BF16';
  const bytes = fromFloat32(name, values);
  return { tensor: await uploadTensor(t.gpu, bytes, shape, dtype), values: toFloat32(name, bytes) };
}

/** A shape of rank ≤ 4 and two operand shapes that broadcast to it (dims dropped or set to 1 at random). */
const broadcastCase = fc.array(fc.integer({ min: 1, max: 7 }), { minLength: 1, maxLength: 4 }).chain((out) => fc.record({
  out: fc.constant(out),
  aMask: fc.array(fc.boolean(), { minLength: out.length, maxLength: out.length }),
  bMask: fc.array(fc.boolean(), { minLength: out.length, maxLength: out.length }),
  bLead: fc.integer({ min: 0, max: out.length - 1 }),
}));

async function runBinary(op: BinaryOp, out: readonly number[], aShape: readonly number[], bShape: readonly number[], bd: BDtype, seed: number): Promise<void> {
  const a = randomF32(aShape.reduce((p, d) => p * d, 1), seed, 4);
  // Keep divisors away from zero.
  const bRaw = randomF32(bShape.reduce((p, d) => p * d, 1), seed + 1, 2).map((v) => (op === 'div' ? Math.sign(v || 1) * (0.5 + Math.abs(v)) : v));
  const ta = await uploadTensor(t.gpu, a, aShape);
  const b = await stored(bRaw, bShape, bd);
  const to = await emptyTensor(t.gpu, out);
  try {
    const rec = new KernelRecorder(t.gpu);
    await binary(rec, op, ta, b.tensor, to);
    await rec.submit();
    expectClose(await downloadF32(to), binaryReference(op, a, aShape, b.values, bShape, out), TOL[op],
      `${op} [${aShape}] ∘ [${bShape}] → [${out}] b=${bd}`);
  } finally {
    for (const r of [ta, b.tensor, to]) r.destroy();
  }
}

describe('binary ops', () => {
  it('broadcast plans merge what they can: NCHW + per-channel is 3 dims, a row bias 2, equal shapes flat', () => {
    expect(broadcastPlan('t', [2, 8, 5, 5], [2, 8, 5, 5], [1, 8, 1, 1]).dims).toEqual([1, 2, 8, 25]);
    expect(broadcastPlan('t', [3, 4, 16], [3, 4, 16], [16]).dims).toEqual([1, 1, 12, 16]);
    expect(broadcastPlan('t', [3, 4, 16], [3, 4, 16], [3, 4, 16]).flat).toBe(true);
    expect(() => broadcastPlan('t', [3, 4], [3, 4], [3])).toThrow(/does not broadcast/);
    expect(() => broadcastPlan('t', [2, 3, 2, 3, 2], [2, 3, 2, 3, 2], [2, 1, 2, 1, 2])).toThrow(/needs 5 dimensions/);
  });

  it('each op matches NumPy broadcasting on random shapes, b stored as f32, f16 or bf16', async () => {
    await fc.assert(fc.asyncProperty(
      fc.constantFrom<BinaryOp>('add', 'sub', 'mul', 'div'), broadcastCase, fc.constantFrom<BDtype>('f32', 'f16', 'bf16'), fc.integer({ min: 0, max: 1e6 }),
      async (op, c, bd, seed) => {
        const aShape = c.out.map((d, k) => (c.aMask[k] ? 1 : d));
        // b may also have fewer dimensions (right-aligned).
        const bShape = c.out.map((d, k) => (c.bMask[k] ? 1 : d)).slice(c.bLead);
        // a broadcasting too needs out to be the broadcast of both: restore dims both masked away.
        const outShape = c.out.map((d, k) => (aShape[k] === 1 && (bShape[k - c.bLead] ?? 1) === 1 ? 1 : d));
        await runBinary(op, outShape, aShape.map((d, k) => Math.min(d, outShape[k]!)), bShape, bd, seed);
      },
    ), { numRuns: 20 });
  });

  it('the model shapes: a bias along rows, a per-channel NCHW term, a per-batch row', async () => {
    await runBinary('add', [3, 5, 33], [3, 5, 33], [33], 'bf16', 1);
    await runBinary('add', [2, 6, 5, 7], [2, 6, 5, 7], [1, 6, 1, 1], 'f32', 2);
    await runBinary('mul', [2, 9, 16], [2, 9, 16], [2, 1, 16], 'f16', 3);
  });

  it('four dimensions that do not merge, with both operands broadcasting', async () => {
    await runBinary('sub', [2, 3, 4, 5], [2, 3, 4, 5], [2, 1, 4, 1], 'f32', 11);
    await runBinary('div', [2, 3, 4, 5], [1, 3, 1, 5], [2, 1, 4, 1], 'f32', 12);
    await runBinary('add', [3, 2, 5, 4], [3, 2, 5, 4], [2, 1, 4], 'bf16', 13);
  });

  it('beyond maxComputeWorkgroupsPerDimension the elements go on a 2-D grid', async () => {
    overrideKernelLimits(t.gpu, { maxComputeWorkgroupsPerDimension: 3 });
    try {
      await runBinary('mul', [5, 301], [5, 301], [301], 'f32', 4);
      await runBinary('add', [1100], [1100], [1100], 'f32', 5);
      const x = randomF32(1000, 6, 3);
      const tx = await uploadTensor(t.gpu, x, [1000]);
      const out = await emptyTensor(t.gpu, [1000]);
      const rec = new KernelRecorder(t.gpu);
      await add(rec, tx, tx, out);
      await rec.submit();
      expectClose(await downloadF32(out), addReference(x, x), TOLERANCE.exact, 'add on a 2-D grid');
      tx.destroy();
      out.destroy();
    } finally {
      overrideKernelLimits(t.gpu, {});
    }
  });

  it('add broadcasts through binary; mul refuses shapes that do not broadcast', async () => {
    const a = randomF32(12, 7);
    const b = randomF32(4, 8);
    const ta = await uploadTensor(t.gpu, a, [3, 4]);
    const tb = await uploadTensor(t.gpu, b, [4]);
    const out = await emptyTensor(t.gpu, [3, 4]);
    const rec = new KernelRecorder(t.gpu);
    await add(rec, ta, tb, out);
    await rec.submit();
    expectClose(await downloadF32(out), binaryReference('add', a, [3, 4], b, [4], [3, 4]), TOLERANCE.exact, 'add with a row bias');
    const bad = await emptyTensor(t.gpu, [3]);
    await expect(mul(rec, ta, bad, out)).rejects.toThrow(/does not broadcast/);
    for (const r of [ta, tb, out, bad]) r.destroy();
  });
});

describe('scale', () => {
  it('out = x·s + b on random lengths and scalars, also on a 2-D grid', async () => {
    await fc.assert(fc.asyncProperty(
      fc.integer({ min: 1, max: 2000 }), fc.float({ min: -10, max: 10, noNaN: true }), fc.float({ min: -3, max: 3, noNaN: true }), fc.boolean(),
      async (n, s, b, grid2d) => {
        if (grid2d) overrideKernelLimits(t.gpu, { maxComputeWorkgroupsPerDimension: 2 });
        try {
          const x = randomF32(n, n, 5);
          const tx = await uploadTensor(t.gpu, x, [n]);
          const out = await emptyTensor(t.gpu, [n]);
          const rec = new KernelRecorder(t.gpu);
          await scale(rec, tx, out, s, b);
          await rec.submit();
          expectClose(await downloadF32(out), scaleReference(x, s, b), { abs: SCALE_TOL.abs * (1 + Math.abs(s)), rel: SCALE_TOL.rel }, `scale n=${n} s=${s} b=${b}`);
          tx.destroy();
          out.destroy();
        } finally {
          overrideKernelLimits(t.gpu, {});
        }
      },
    ), { numRuns: 10 });
  });
});
