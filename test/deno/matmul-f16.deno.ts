// linear's f16 path (f16 activations and output, f32 arithmetic) under Deno's own WebGPU on
// lavapipe: shader-f16, no subgroups, so the GEMV reduces in workgroup memory.
// Tolerance: |got − want| ≤ 2e-5 · Σ_k |x|·max_k |w| + 2^-10 · |want|: the f32 sums as on the f32
// path (see test/kernels/matmul.test.ts) plus the rounding of the output to f16 (half an ulp is
// 2^-11 relative). The reference reads the same f16-rounded activations, in f64.
import { downloadF32, KernelRecorder, openDevices, uploadTensor } from '../../deno/mod.ts';
import { fromFloat32, toFloat32 } from '../../src/formats/dtypes.ts';
import { linear, type LinearOptions } from '../../src/kernels/ops/matmul.ts';
import type { LinearWeightDtype } from '../../src/kernels/ops/matmul-wgsl.ts';
import { dequantizeWeight, linearReference } from '../../src/kernels/reference/matmul.ts';
import { randomValues, randomWeightBytes } from '../../src/kernels/reference/matmul-data.ts';
import type { GpuDevice } from '../../src/devices/gpu-device.ts';

interface Case {
  dtype: LinearWeightDtype;
  m: number;
  n: number;
  k: number;
  seed: number;
  scale?: number;
  options?: LinearOptions;
  /** Overrides of the random data. */
  x?: Float32Array;
  wBytes?: Uint8Array;
  expectKernel: 'gemv' | 'tiled';
}

async function check(gpu: GpuDevice, c: Case): Promise<Float32Array> {
  const { dtype, m, n, k, seed } = c;
  const scale = c.scale ?? 1;
  const wBytes = c.wBytes ?? randomWeightBytes(dtype, n, k, seed);
  const wValues = dequantizeWeight(dtype, wBytes, n * k);
  const xh = fromFloat32('F16', c.x ?? randomValues(m * k, seed + 1));
  const x = toFloat32('F16', xh);
  const tx = await uploadTensor(gpu, xh, [m, k], 'f16');
  const tw = await uploadTensor(gpu, wBytes, [n, k], dtype, { scale });
  const out = await uploadTensor(gpu, fromFloat32('F16', new Float32Array(m * n).fill(Number.NaN)), [m, n], 'f16');
  try {
    const rec = new KernelRecorder(gpu);
    const info = await linear(rec, tx, tw, null, out, c.options);
    await rec.submit();
    if (info.kernel !== c.expectKernel || info.path !== 'f16') throw new Error(`ran ${info.kernel} on ${info.path}`);
    if (info.variant.includes('subgroups')) throw new Error(`lavapipe under Deno has no subgroups, yet ${info.variant}`);
    const got = await downloadF32(out);
    const want = linearReference(x, wValues, m, n, k, null, scale);
    for (let i = 0; i < m; i++) {
      let sx = 0;
      for (let j = 0; j < k; j++) sx += Math.abs(x[i * k + j]!);
      for (let j = 0; j < n; j++) {
        let wmax = 0;
        for (let q = 0; q < k; q++) wmax = Math.max(wmax, Math.abs(wValues[j * k + q]!));
        const w = want[i * n + j]!;
        const g = got[i * n + j]!;
        if (Math.abs(w) > 65504) {
          if (g !== Math.sign(w) * Infinity) throw new Error(`${dtype} ${info.variant}: out[${i}, ${j}] = ${g}, expected ${Math.sign(w) * Infinity} (f16 overflow)`);
          continue;
        }
        const allowed = 2e-5 * sx * wmax * Math.abs(scale) + 2 ** -10 * Math.abs(w);
        if (!(Math.abs(g - w) <= allowed)) {
          throw new Error(`${dtype} ${info.variant} m=${m} n=${n} k=${k}: out[${i}, ${j}] = ${g}, reference ${w} (allowed ±${allowed})`);
        }
      }
    }
    return got;
  } finally {
    for (const t of [tx, tw, out]) t.destroy();
  }
}

Deno.test('linear, f16 path: GEMV and tiled kernels for plain and GGUF weights, overflow guarded by f32 accumulation', async () => {
  const set = await openDevices({ api: 'navigator' });
  try {
    const gpu = set.gpus.find((g) => g.hasFeature('shader-f16'));
    if (!gpu) throw new Error('no adapter with shader-f16: run with VK_ICD_FILENAMES pointing at lavapipe');
    // GEMV (M ≤ 4), aligned chunks and scalar, every family of decoder.
    await check(gpu, { dtype: 'f16', m: 1, n: 37, k: 64, seed: 1, expectKernel: 'gemv' });
    await check(gpu, { dtype: 'f16', m: 3, n: 11, k: 45, seed: 2, expectKernel: 'gemv', options: { gemvRows: 2, gemvThreads: 64 } });
    await check(gpu, { dtype: 'bf16', m: 1, n: 21, k: 96, seed: 3, expectKernel: 'gemv' });
    await check(gpu, { dtype: 'f8_e4m3', m: 1, n: 9, k: 48, seed: 4, scale: 0.5, expectKernel: 'gemv' });
    await check(gpu, { dtype: 'q8_0', m: 2, n: 13, k: 64, seed: 5, expectKernel: 'gemv' });
    await check(gpu, { dtype: 'q4_k', m: 1, n: 7, k: 256, seed: 6, expectKernel: 'gemv' });
    await check(gpu, { dtype: 'q6_k', m: 1, n: 7, k: 256, seed: 7, expectKernel: 'gemv' });
    // Tiled (M > 4): odd K, each tile size.
    await check(gpu, { dtype: 'f16', m: 9, n: 13, k: 23, seed: 8, expectKernel: 'tiled' });
    await check(gpu, { dtype: 'bf16', m: 70, n: 66, k: 40, seed: 9, expectKernel: 'tiled', options: { tile: '64x64' } });
    await check(gpu, { dtype: 'q5_0', m: 20, n: 17, k: 64, seed: 10, expectKernel: 'tiled' });
    await check(gpu, { dtype: 'f8_e5m2', m: 130, n: 129, k: 16, seed: 11, scale: 0.01, expectKernel: 'tiled' });

    // Overflow: bf16 weights of 2e5 (beyond f16) times small activations, and activations near
    // f16's maximum whose partial sums pass 65504 before they cancel: exact in f32.
    const k = 64;
    const big = new Float32Array(2 * k).map((_, i) => (i % 3 === 0 ? 2e5 : -1.5e5));
    const small = new Float32Array(k).map((_, i) => ((i % 7) - 3) * 1e-3);
    await check(gpu, { dtype: 'bf16', m: 1, n: 2, k, seed: 12, x: small, wBytes: fromFloat32('BF16', big), expectKernel: 'gemv' });
    await check(gpu, { dtype: 'bf16', m: 5, n: 2, k, seed: 13, x: new Float32Array(5 * k).fill(1e-3), wBytes: fromFloat32('BF16', big), expectKernel: 'tiled' });
    const halves = new Float32Array(k).map((_, i) => (i < k / 2 ? 1 : -1));
    const loud = new Float32Array(k).fill(60000);
    const got = await check(gpu, { dtype: 'f32', m: 1, n: 1, k, seed: 14, x: loud, wBytes: new Uint8Array(halves.buffer), expectKernel: 'gemv' });
    if (got[0] !== 0) throw new Error(`partial sums beyond 65504 cancel to 0 in f32, got ${got[0]}`);
    // A true result beyond f16's range is ±inf, as in PyTorch's f16.
    await check(gpu, { dtype: 'f32', m: 1, n: 1, k, seed: 15, x: loud, wBytes: new Uint8Array(new Float32Array(k).fill(1).buffer), expectKernel: 'gemv' });
  } finally {
    await set.close();
  }
});
