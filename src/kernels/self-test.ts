import type { GpuDevice } from '../devices/gpu-device.ts';
import { add } from './ops/add.ts';
import { KernelRecorder } from './recorder.ts';
import { addReference } from './reference/add.ts';
import { downloadF32, emptyTensor, uploadTensor } from './tensor.ts';

export interface SelfTestResult {
  readonly device: string;
  readonly ok: boolean;
  readonly elements: number;
  readonly maxError: number;
  readonly ms: number;
}

/**
 * Proves a device computes: uploads two vectors, adds them with a WGSL kernel, reads the
 * sum back and compares with the CPU reference. The ledger returns to where it started.
 */
export async function selfTest(gpu: GpuDevice, elements = 100_003): Promise<SelfTestResult> {
  const start = performance.now();
  const a = new Float32Array(elements).map((_, i) => Math.sin(i) * 100);
  const b = new Float32Array(elements).map((_, i) => Math.cos(i * 0.5) * 3);
  const ta = await uploadTensor(gpu, a, [elements], 'f32', { label: 'selftest.a' });
  const tb = await uploadTensor(gpu, b, [elements], 'f32', { label: 'selftest.b' });
  const out = await emptyTensor(gpu, [elements], 'f32', 'selftest.out');
  try {
    const rec = new KernelRecorder(gpu);
    await add(rec, ta, tb, out);
    await rec.submit();
    const got = await downloadF32(out);
    const want = addReference(a, b);
    let maxError = 0;
    for (let i = 0; i < elements; i++) maxError = Math.max(maxError, Math.abs(got[i]! - want[i]!));
    return { device: gpu.name, ok: maxError === 0, elements, maxError, ms: performance.now() - start };
  } finally {
    ta.destroy();
    tb.destroy();
    out.destroy();
  }
}
