import type { GpuDevice } from '../devices/gpu-device.ts';
import { readF32, uploadF32 } from '../runtime/transfer.ts';
import { addF32 } from './add.ts';

export interface SelfTestResult {
  readonly device: string;
  readonly ok: boolean;
  readonly elements: number;
  readonly maxError: number;
  readonly ms: number;
}

/**
 * Proves a device computes: uploads two vectors, adds them with a WGSL kernel, reads the
 * sum back and compares with the host's. The ledger must return to where it started.
 */
export async function selfTest(gpu: GpuDevice, elements = 100_003): Promise<SelfTestResult> {
  const start = performance.now();
  const a = new Float32Array(elements).map((_, i) => Math.sin(i) * 100);
  const b = new Float32Array(elements).map((_, i) => Math.cos(i * 0.5) * 3);
  const bufA = await uploadF32(gpu, 'selftest.a', a);
  const bufB = await uploadF32(gpu, 'selftest.b', b);
  const bufOut = await uploadF32(gpu, 'selftest.out', new Float32Array(elements));
  try {
    await addF32(gpu, bufA, bufB, bufOut, elements);
    const out = await readF32(gpu, bufOut.buffer, elements);
    let maxError = 0;
    for (let i = 0; i < elements; i++) maxError = Math.max(maxError, Math.abs(out[i]! - Math.fround(a[i]! + b[i]!)));
    return { device: gpu.name, ok: maxError === 0, elements, maxError, ms: performance.now() - start };
  } finally {
    bufA.destroy();
    bufB.destroy();
    bufOut.destroy();
  }
}
