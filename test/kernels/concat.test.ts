// concat moves bits: against the CPU reference, exactly (f32 with NaN payloads), on random
// shapes, axes and input counts, the model's concatenations, and a 2-D grid.
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { overrideKernelLimits } from '../../src/kernels/limits.ts';
import { concat, sliceAlong } from '../../src/kernels/ops/concat.ts';
import { KernelRecorder } from '../../src/kernels/recorder.ts';
import { concatReference } from '../../src/kernels/reference/concat.ts';
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

describe('concat', () => {
  async function checkConcat(shapes: readonly (readonly number[])[], axis: number, seed: number): Promise<void> {
    const datas = shapes.map((s, i) => words(s.reduce((a, b) => a * b, 1), seed + i));
    const inputs = await Promise.all(datas.map((d, i) => upload(d, shapes[i]!, 'f32')));
    const rank = shapes[0]!.length;
    const ax = axis < 0 ? axis + rank : axis;
    const outShape = shapes[0]!.map((d, k) => (k === ax ? shapes.reduce((s, x) => s + x[k]!, 0) : d));
    const out = await emptyTensor(t.gpu, outShape, 'f32');
    try {
      const rec = new KernelRecorder(t.gpu);
      await concat(rec, inputs, out, axis);
      await rec.submit();
      expect(await readWords(out), `concat along ${axis}`).toEqual(concatReference(datas.map((data, i) => ({ data, shape: shapes[i]! })), axis));
    } finally {
      for (const r of [...inputs, out]) r.destroy();
    }
  }

  it('matches the reference on random shapes, axes and input counts, bits exact', async () => {
    await fc.assert(fc.asyncProperty(
      fc.array(fc.integer({ min: 1, max: 6 }), { minLength: 1, maxLength: 4 }).chain((shape) => fc.tuple(
        fc.constant(shape), fc.integer({ min: 0, max: shape.length - 1 }), fc.array(fc.integer({ min: 1, max: 5 }), { minLength: 1, maxLength: 4 }),
      )),
      fc.integer({ min: 0, max: 1e6 }),
      async ([shape, axis, sizes], seed) => checkConcat(sizes.map((s) => shape.map((d, k) => (k === axis ? s : d))), axis, seed),
    ), { numRuns: 15 });
  });

  it('FLUX text + image tokens (dim 1), UNet skips along channels (dim 1 of NCHW), a negative axis, a 2-D grid', async () => {
    await checkConcat([[1, 7, 24], [1, 16, 24]], 1, 1);
    await checkConcat([[2, 8, 3, 3], [2, 5, 3, 3]], 1, 2);
    await checkConcat([[3, 2], [3, 5], [3, 1]], -1, 3);
    overrideKernelLimits(t.gpu, { maxComputeWorkgroupsPerDimension: 2 });
    try {
      await checkConcat([[4, 300], [3, 300]], 0, 4);
    } finally {
      overrideKernelLimits(t.gpu, {});
    }
  });

  it('sliceAlong undoes concat: every input back from the concatenation, bits exact, any axis; bad slices are refused', async () => {
    await fc.assert(fc.asyncProperty(
      fc.array(fc.integer({ min: 1, max: 6 }), { minLength: 1, maxLength: 4 }).chain((shape) => fc.tuple(
        fc.constant(shape), fc.integer({ min: 0, max: shape.length - 1 }), fc.array(fc.integer({ min: 1, max: 5 }), { minLength: 1, maxLength: 3 }),
      )),
      fc.integer({ min: 0, max: 1e6 }),
      async ([shape, axis, sizes], seed) => {
        const shapes = sizes.map((s) => shape.map((d, k) => (k === axis ? s : d)));
        const datas = shapes.map((sh, i) => words(sh.reduce((a, b) => a * b, 1), seed + i));
        const whole = concatReference(datas.map((data, i) => ({ data, shape: shapes[i]! })), axis);
        const x = await upload(whole, shape.map((d, k) => (k === axis ? sizes.reduce((a, b) => a + b, 0) : d)), 'i32');
        const outs = await Promise.all(shapes.map((sh) => emptyTensor(t.gpu, sh, 'i32')));
        try {
          const rec = new KernelRecorder(t.gpu);
          let start = 0;
          for (const [i, out] of outs.entries()) {
            await sliceAlong(rec, x, out, axis - shape.length, start);
            start += sizes[i]!;
          }
          await rec.submit();
          for (const [i, out] of outs.entries()) expect(await readWords(out), `part ${i} along ${axis}`).toEqual(datas[i]);
          await expect(sliceAlong(rec, x, outs[0]!, axis, start)).rejects.toThrow(/is not a slice of x/);
        } finally {
          for (const r of [x, ...outs]) r.destroy();
        }
      },
    ), { numRuns: 12 });
  });
});
