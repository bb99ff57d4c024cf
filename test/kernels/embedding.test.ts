// Embedding gather against its CPU reference: tables f32/f16/bf16 in stored form, random ids
// (out-of-range ones included), tables split over several bindings (lowered
// maxStorageBufferBindingSize), a 2-D grid. A gather moves values exactly: tolerance 0.
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fromFloat32, toFloat32 } from '../../src/formats/dtypes.ts';
import { bindingChunks, kernelLimits, overrideKernelLimits } from '../../src/kernels/limits.ts';
import { embedding } from '../../src/kernels/ops/embedding.ts';
import { KernelRecorder } from '../../src/kernels/recorder.ts';
import { embeddingReference } from '../../src/kernels/reference/embedding.ts';
import { downloadF32, emptyTensor, uploadTensor, type GpuTensor } from '../../src/kernels/tensor.ts';
import { expectClose, openTestGpu, randomF32, TOLERANCE, type TestGpu } from './harness.ts';

let t: TestGpu;
beforeAll(async () => {
  t = await openTestGpu();
});
afterAll(async () => {
  await t?.set.close();
});

type TDtype = 'f32' | 'f16' | 'bf16';

async function table(vocab: number, dim: number, dtype: TDtype, seed: number): Promise<{ tensor: GpuTensor; values: Float32Array }> {
  const values = randomF32(vocab * dim, seed, 3);
  if (dtype === 'f32') return { tensor: await uploadTensor(t.gpu, values, [vocab, dim], 'f32'), values };
  const name = dtype === 'f16' ? 'F16' : 'BF16';
  const bytes = fromFloat32(name, values);
  return { tensor: await uploadTensor(t.gpu, bytes, [vocab, dim], dtype), values: toFloat32(name, bytes) };
}

async function check(vocab: number, dim: number, dtype: TDtype, ids: Int32Array, idsShape: readonly number[], seed: number): Promise<number> {
  const tab = await table(vocab, dim, dtype, seed);
  const tids = await uploadTensor(t.gpu, new Uint8Array(ids.buffer, ids.byteOffset, ids.byteLength), idsShape, 'i32');
  const out = await emptyTensor(t.gpu, [...idsShape, dim]);
  // Garbage in out first: rows of invalid ids must be written (zeros), not left alone.
  const rec = new KernelRecorder(t.gpu);
  try {
    t.gpu.device.queue.writeBuffer(out.buffer, 0, new Float32Array(out.elements).fill(7));
    await embedding(rec, tids, tab.tensor, out);
    const dispatches = rec.pending;
    await rec.submit();
    expectClose(await downloadF32(out), embeddingReference(ids, tab.values, dim), TOLERANCE.exact, `embedding ${vocab}×${dim} ${dtype}`);
    return dispatches;
  } finally {
    for (const r of [tab.tensor, tids, out]) r.destroy();
  }
}

const idsFor = (n: number, vocab: number, seed: number) => Int32Array.from(randomF32(n, seed), (v, i) => (i % 11 === 5 ? vocab + i : i % 13 === 7 ? -1 - i : Math.floor(((v + 1) / 2) * vocab)));

describe('embedding', () => {
  it('matches the reference on random vocabularies, widths (odd f16/bf16 rows included) and ids', async () => {
    await fc.assert(fc.asyncProperty(
      fc.integer({ min: 1, max: 300 }), fc.integer({ min: 1, max: 65 }), fc.constantFrom<TDtype>('f32', 'f16', 'bf16'),
      fc.integer({ min: 1, max: 3 }), fc.integer({ min: 1, max: 13 }), fc.integer({ min: 0, max: 1e6 }),
      async (vocab, dim, dtype, batch, seq, seed) => {
        await check(vocab, dim, dtype, idsFor(batch * seq, vocab, seed), [batch, seq], seed);
      },
    ), { numRuns: 14 });
  });

  it('a table larger than one binding is split over several, for every stored form', async () => {
    overrideKernelLimits(t.gpu, { maxStorageBufferBindingSize: 4096 });
    try {
      for (const [dtype, dim] of [['f32', 7], ['f16', 5], ['bf16', 9]] as const) {
        const vocab = 997;
        const rowBytes = dim * (dtype === 'f32' ? 4 : 2);
        const chunks = bindingChunks(vocab, rowBytes, kernelLimits(t.gpu));
        expect(chunks.length, `${dtype} chunks`).toBeGreaterThan(2);
        // Ids in every chunk, at its edges, and invalid ones.
        const ids = Int32Array.from([0, vocab - 1, ...chunks.flatMap((c) => [c.first, c.first + c.count - 1]), 500, -3, vocab, 2 ** 31 - 1, 123]);
        const dispatches = await check(vocab, dim, dtype, ids, [ids.length], 31);
        expect(dispatches).toBe(chunks.length);
      }
    } finally {
      overrideKernelLimits(t.gpu, {});
    }
  });

  it('beyond maxComputeWorkgroupsPerDimension the elements go on a 2-D grid', async () => {
    overrideKernelLimits(t.gpu, { maxComputeWorkgroupsPerDimension: 3 });
    try {
      await check(50, 300, 'bf16', idsFor(5, 50, 3), [5], 3);
    } finally {
      overrideKernelLimits(t.gpu, {});
    }
  });

  it('refuses f32 ids and a mismatched out', async () => {
    const tab = await table(4, 3, 'f32', 1);
    const ids = await emptyTensor(t.gpu, [2], 'f32');
    const out = await emptyTensor(t.gpu, [2, 3]);
    await expect(embedding(new KernelRecorder(t.gpu), ids, tab.tensor, out)).rejects.toThrow(/ids must be i32/);
    for (const r of [tab.tensor, ids, out]) r.destroy();
  });
});
