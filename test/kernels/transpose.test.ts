// permute/transpose move bits: against the CPU reference, exactly, on random shapes and dtypes
// (f32 with NaN payloads, i32), the attention permutes, NCHW ↔ NHWC and 2-D transposes through
// the tiled kernel, and 2-D grids.
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { overrideKernelLimits } from '../../src/kernels/limits.ts';
import { permute, permutePlan, transpose } from '../../src/kernels/ops/transpose.ts';
import { KernelRecorder } from '../../src/kernels/recorder.ts';
import { permuteReference } from '../../src/kernels/reference/transpose.ts';
import { downloadBytes, emptyTensor, uploadTensor, type GpuTensor } from '../../src/kernels/tensor.ts';
import { openTestGpu, type TestGpu } from './harness.ts';

let t: TestGpu;
beforeAll(async () => {
  t = await openTestGpu();
});
afterAll(async () => {
  await t?.set.close();
});

/** Random 32-bit words, NaN payloads and negative zeros among them: a layout op must keep every bit. */
function words(n: number, seed: number): Uint32Array {
  let a = seed >>> 0;
  return Uint32Array.from({ length: n }, (_, i) => {
    a = (Math.imul(a ^ (a >>> 15), 0x2c1b3c6d) + 0x9e3779b9 + i) >>> 0;
    return i % 17 === 3 ? 0x7fc01234 : i % 19 === 4 ? 0x80000000 : a;
  });
}

async function upload(data: Uint32Array, shape: readonly number[], dtype: 'f32' | 'i32'): Promise<GpuTensor> {
  return uploadTensor(t.gpu, new Uint8Array(data.buffer, data.byteOffset, data.byteLength), shape, dtype);
}

async function readWords(tensor: GpuTensor): Promise<Uint32Array> {
  const bytes = await downloadBytes(tensor);
  return new Uint32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4);
}

async function checkPermute(shape: readonly number[], perm: readonly number[], dtype: 'f32' | 'i32', seed: number): Promise<void> {
  const n = shape.reduce((a, b) => a * b, 1);
  const data = words(n, seed);
  const x = await upload(data, shape, dtype);
  const out = await emptyTensor(t.gpu, perm.map((p) => shape[p]!), dtype);
  try {
    const rec = new KernelRecorder(t.gpu);
    await permute(rec, x, out, perm);
    await rec.submit();
    expect(await readWords(out), `permute [${shape}] by [${perm}]`).toEqual(permuteReference(data, shape, perm));
  } finally {
    x.destroy();
    out.destroy();
  }
}

const permutation = (rank: number) => fc.shuffledSubarray([...Array(rank).keys()], { minLength: rank, maxLength: rank });

describe('permute and transpose', () => {
  it('plans: attention permutes gather in 4 dims, NCHW → NHWC and 2-D transposes are tiled', () => {
    expect(permutePlan('t', [2, 5, 3, 4], [0, 2, 1, 3])).toMatchObject({ dims: [2, 3, 5, 4], tiled: null });
    expect(permutePlan('t', [2, 8, 4, 4], [0, 2, 3, 1]).tiled).toEqual({ batch: 2, rows: 8, cols: 16 });
    expect(permutePlan('t', [6, 7], [1, 0]).tiled).toEqual({ batch: 1, rows: 6, cols: 7 });
    expect(permutePlan('t', [3, 1, 4], [1, 0, 2]).dims).toEqual([12]);
  });

  it('matches the reference on random shapes and permutations (rank 1 to 4), bits exact', async () => {
    await fc.assert(fc.asyncProperty(
      fc.integer({ min: 1, max: 4 }).chain((rank) => fc.tuple(fc.array(fc.integer({ min: 1, max: 9 }), { minLength: rank, maxLength: rank }), permutation(rank))),
      fc.constantFrom<'f32' | 'i32'>('f32', 'i32'), fc.integer({ min: 0, max: 1e6 }),
      async ([shape, perm], dtype, seed) => checkPermute(shape, perm, dtype, seed),
    ), { numRuns: 20 });
  });

  it('the attention layouts [B, L, H, D] ↔ [B, H, L, D], NCHW ↔ NHWC (tiled), a 2-D transpose (tiled, ragged tiles)', async () => {
    await checkPermute([2, 7, 3, 5], [0, 2, 1, 3], 'f32', 1);
    await checkPermute([2, 3, 7, 5], [0, 2, 1, 3], 'f32', 2);
    await checkPermute([2, 6, 5, 7], [0, 2, 3, 1], 'f32', 3);
    await checkPermute([2, 35, 6], [0, 2, 1], 'f32', 4);
    await checkPermute([33, 17], [1, 0], 'i32', 5);
  });

  it('transpose(dim0, dim1) is permute with two dims swapped; bad permutations are refused', async () => {
    const data = words(2 * 3 * 4, 9);
    const x = await upload(data, [2, 3, 4], 'f32');
    const out = await emptyTensor(t.gpu, [4, 3, 2], 'f32');
    const rec = new KernelRecorder(t.gpu);
    await transpose(rec, x, out, 0, -1);
    await rec.submit();
    expect(await readWords(out)).toEqual(permuteReference(data, [2, 3, 4], [2, 1, 0]));
    await expect(permute(rec, x, out, [0, 0, 1])).rejects.toThrow(/not a permutation/);
    x.destroy();
    out.destroy();
  });

  it('beyond maxComputeWorkgroupsPerDimension both kernels use a 2-D grid', async () => {
    overrideKernelLimits(t.gpu, { maxComputeWorkgroupsPerDimension: 2 });
    try {
      await checkPermute([3, 40, 9, 2], [0, 2, 1, 3], 'f32', 6);
      await checkPermute([3, 40, 50], [0, 2, 1], 'i32', 7);
    } finally {
      overrideKernelLimits(t.gpu, {});
    }
  });
});
