// Byte-exact copies that copyBufferToBuffer cannot do: any offset, any length (odd-length f16
// tensors, slices starting mid-word), destination bytes around the range kept, copies split
// over bindings (lowered maxStorageBufferBindingSize), a 2-D grid.
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fromFloat32 } from '../../src/formats/dtypes.ts';
import { overrideKernelLimits } from '../../src/kernels/limits.ts';
import { copy, copyBytes } from '../../src/kernels/ops/copy.ts';
import { KernelRecorder } from '../../src/kernels/recorder.ts';
import { copyBytesReference } from '../../src/kernels/reference/copy.ts';
import { downloadBytes, uploadTensor, type GpuTensor } from '../../src/kernels/tensor.ts';
import { openTestGpu, type TestGpu } from './harness.ts';

let t: TestGpu;
beforeAll(async () => {
  t = await openTestGpu();
});
afterAll(async () => {
  await t?.set.close();
});

function bytes(n: number, seed: number): Uint8Array {
  let a = seed >>> 0;
  return Uint8Array.from({ length: n }, () => {
    a = (Math.imul(a, 1664525) + 1013904223) >>> 0;
    return a >>> 24;
  });
}

/** u8 tensors hold any byte length; their buffers are padded to whole words. */
const u8 = (data: Uint8Array) => uploadTensor(t.gpu, data, [data.length], 'f8_e4m3');

async function checkCopy(srcLen: number, dstLen: number, srcOffset: number, dstOffset: number, length: number, seed: number): Promise<number> {
  const s = bytes(srcLen, seed);
  const d = bytes(dstLen, seed + 1);
  const src = await u8(s);
  const dst = await u8(d);
  try {
    const rec = new KernelRecorder(t.gpu);
    await copyBytes(rec, src, srcOffset, dst, dstOffset, length);
    const dispatches = rec.pending;
    await rec.submit();
    expect(await downloadBytes(dst), `copy ${length} bytes ${srcOffset} → ${dstOffset}`).toEqual(copyBytesReference(s, srcOffset, d, dstOffset, length));
    return dispatches;
  } finally {
    src.destroy();
    dst.destroy();
  }
}

const copyCase = fc.record({ srcLen: fc.integer({ min: 1, max: 3000 }), dstLen: fc.integer({ min: 1, max: 3000 }), a: fc.nat(), b: fc.nat(), c: fc.nat(), seed: fc.nat() })
  .map(({ srcLen, dstLen, a, b, c, seed }) => {
    const length = c % (Math.min(srcLen, dstLen) + 1);
    return { srcLen, dstLen, srcOffset: a % (srcLen - length + 1), dstOffset: b % (dstLen - length + 1), length, seed };
  });

describe('copy', () => {
  it('copies any byte range at any offsets and keeps the bytes around it', async () => {
    await fc.assert(fc.asyncProperty(copyCase, async (c) => {
      await checkCopy(c.srcLen, c.dstLen, c.srcOffset, c.dstOffset, c.length, c.seed);
    }), { numRuns: 30 });
  });

  it('odd-length f16 tensors: a whole copy, and a slice into the middle of another', async () => {
    const values = Float32Array.from({ length: 1001 }, (_, i) => i / 8 - 60);
    const src = await uploadTensor(t.gpu, fromFloat32('F16', values), [1001], 'f16');
    const dstBytes = bytes(2 * 1003, 5);
    const dst = await uploadTensor(t.gpu, dstBytes, [1003], 'f16');
    const rec = new KernelRecorder(t.gpu);
    await copy(rec, src, dst, { srcOffset: 3, dstOffset: 1, count: 997 });
    await rec.submit();
    const f16 = fromFloat32('F16', values);
    expect(await downloadBytes(dst)).toEqual(copyBytesReference(f16, 6, dstBytes, 2, 2 * 997));
    const whole = await uploadTensor(t.gpu, bytes(2 * 1001, 6), [1001], 'f16');
    await copy(rec, src, whole);
    await rec.submit();
    expect(await downloadBytes(whole)).toEqual(f16);
    for (const r of [src, dst, whole]) r.destroy();
  });

  it('a range larger than one binding is copied in windows, each bound at an aligned offset', async () => {
    overrideKernelLimits(t.gpu, { maxStorageBufferBindingSize: 1024 });
    try {
      // 1024-byte bindings leave 256-byte windows (room for alignment slack): 4000 bytes take 16 or 17 dispatches.
      expect(await checkCopy(5000, 4700, 333, 601, 4000, 7)).toBeGreaterThanOrEqual(8);
      expect(await checkCopy(4099, 4099, 1, 3, 4093, 8)).toBeGreaterThanOrEqual(8);
      await fc.assert(fc.asyncProperty(copyCase, async (c) => {
        await checkCopy(c.srcLen, c.dstLen, c.srcOffset, c.dstOffset, c.length, c.seed);
      }), { numRuns: 10 });
    } finally {
      overrideKernelLimits(t.gpu, {});
    }
  });

  it('beyond maxComputeWorkgroupsPerDimension the words go on a 2-D grid', async () => {
    overrideKernelLimits(t.gpu, { maxComputeWorkgroupsPerDimension: 2 });
    try {
      await checkCopy(9000, 9000, 5, 2, 8990, 9);
    } finally {
      overrideKernelLimits(t.gpu, {});
    }
  });

  it('refuses ranges outside a tensor and a copy within one buffer', async () => {
    const a: GpuTensor = await u8(bytes(10, 1));
    const rec = new KernelRecorder(t.gpu);
    await expect(copyBytes(rec, a, 5, a, 0, 3)).rejects.toThrow(/one buffer/);
    const b = await u8(bytes(10, 2));
    await expect(copyBytes(rec, a, 8, b, 0, 3)).rejects.toThrow(/outside the 10-byte source/);
    a.destroy();
    b.destroy();
  });
});
