/**
 * Batch-1 decode (GEMV) bandwidth of linear with bf16 weights, against PyTorch's bf16 GEMV on
 * the same GPU. Each shape rotates 8 weight matrices (different buffers, so the 50 MB L2 holds
 * none of them between uses, for us as for PyTorch); GB/s counts weights, x and out once each.
 *
 * GPU machine (after `npm run build && bash scripts/gpu-pack.sh` here, carrying [".gpu", "dist"]):
 *   bash .gpu/run-lite.sh dist/bench/gemv.js --out $OUT/gemv.json
 * Locally, on SwiftShader: `node dist/bench/gemv.js --quick --no-baseline`.
 * Shapes are K×N of out[1, N] = x[1, K] · w[N, K]ᵀ: 4096×4096 (attention projections),
 * 4096×14336 (MLP up/gate) and 14336×4096 (MLP down). Every output of the first matrix is
 * checked against the CPU reference before timing.
 */
import { writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { bf16BitsToF32, fromFloat32, toFloat32 } from '../src/formats/dtypes.ts';
import { openDevices, type GpuDevice } from '../src/index.ts';
import { linear, type LinearOptions } from '../src/kernels/ops/matmul.ts';
import type { LinearWeightDtype } from '../src/kernels/ops/matmul-wgsl.ts';
import { dequantizeWeight } from '../src/kernels/reference/matmul.ts';
import { prng, randomValues, randomWeightBytes } from '../src/kernels/reference/matmul-data.ts';
import { emptyTensor, uploadTensor, type GpuTensor } from '../src/kernels/tensor.ts';
import {
  BENCH_DAWN_FLAGS, CapturingRecorder, checkCase, prepareReplay, printRows, row, runLinear, timeAdaptive, torchBaseline,
  type BenchOptions, type BenchResult, type BenchRow, type LinearCase, type Replay,
} from './matmul.ts';

const ROTATE = 8;

/** Random bf16 weights straight as bits (fast for 10⁸ elements): |w| in [2^-7, 2), random signs. */
function randomBf16(elements: number, seed: number): Uint8Array {
  const next = prng(seed);
  const out = new Uint16Array(elements);
  for (let i = 0; i < elements; i += 2) {
    const r = (next() * 4294967296) >>> 0;
    out[i] = ((r & 0x8000) | ((120 + ((r >>> 7) & 7)) << 7) | (r & 0x7f)) & 0xffff;
    if (i + 1 < elements) out[i + 1] = (((r >>> 16) & 0x8000) | ((120 + ((r >>> 23) & 7)) << 7) | ((r >>> 16) & 0x7f)) & 0xffff;
  }
  return new Uint8Array(out.buffer);
}

interface Shape {
  readonly k: number;
  readonly n: number;
}

export async function run(options: BenchOptions = {}): Promise<BenchResult> {
  const log = options.log ?? ((line: string) => console.log(line));
  const shapes: Shape[] = options.quick ? [{ k: 256, n: 512 }] : [{ k: 4096, n: 4096 }, { k: 4096, n: 14336 }, { k: 14336, n: 4096 }];
  const torch = options.baseline === false ? null : torchBaseline(['gemv', '--shapes', shapes.map((s) => `${s.k}x${s.n}`).join(','), '--rotate', String(ROTATE)], log);
  const set = await openDevices({ dawnFlags: BENCH_DAWN_FLAGS });
  const rows: BenchRow[] = [];
  const checks: string[] = [];
  const notes: string[] = torch?.device ? [`PyTorch on ${torch.device}`] : [];
  try {
    const gpu = set.gpus[0];
    if (!gpu) throw new Error('no GPU');
    log(`${gpu.adapterName} (${gpu.backend}); subgroups: ${gpu.hasFeature('subgroups')}, shader-f16: ${gpu.hasFeature('shader-f16')}`);
    const f16 = gpu.hasFeature('shader-f16');
    const variants: Array<{ name: string; activations: 'f32' | 'f16'; options: LinearOptions }> = [
      { name: 'f32 x, 4 rows × 256 threads', activations: 'f32', options: { gemvRows: 4, gemvThreads: 256 } },
      { name: 'f32 x, 2 rows × 256 threads', activations: 'f32', options: { gemvRows: 2, gemvThreads: 256 } },
      { name: 'f32 x, 8 rows × 256 threads', activations: 'f32', options: { gemvRows: 8, gemvThreads: 256 } },
      { name: 'f32 x, 4 rows × 128 threads', activations: 'f32', options: { gemvRows: 4, gemvThreads: 128 } },
      { name: 'f32 x, 2 rows × 128 threads', activations: 'f32', options: { gemvRows: 2, gemvThreads: 128 } },
      { name: 'f32 x, 4 rows × 256 threads, workgroup-memory reduction', activations: 'f32', options: { gemvRows: 4, gemvThreads: 256, subgroups: false } },
    ];
    if (f16) variants.push({ name: 'f16 x, 4 rows × 256 threads', activations: 'f16', options: { gemvRows: 4, gemvThreads: 256 } });
    const bestByShape: number[] = [];
    for (const { k, n } of shapes) {
      const label = `1x${k}x${n}`;
      // One random matrix, copied into ROTATE buffers: different addresses, same bytes.
      const bytes = randomBf16(n * k, n + k);
      const weights: GpuTensor[] = [];
      for (let i = 0; i < ROTATE; i++) weights.push(await uploadTensor(gpu, bytes, [n, k], 'bf16'));
      const xf = randomValues(k, 7);
      const xs = { f32: await uploadTensor(gpu, xf, [1, k]), f16: f16 ? await uploadTensor(gpu, fromFloat32('F16', xf), [1, k], 'f16') : null };
      const outs: Record<'f32' | 'f16', GpuTensor[]> = { f32: [], f16: [] };
      for (let i = 0; i < ROTATE; i++) {
        outs.f32.push(await emptyTensor(gpu, [1, n]));
        if (f16) outs.f16.push(await emptyTensor(gpu, [1, n], 'f16'));
      }
      const wValues = new Float32Array(n * k);
      const u16 = new Uint16Array(bytes.buffer, bytes.byteOffset, n * k);
      for (let i = 0; i < n * k; i++) wValues[i] = bf16BitsToF32(u16[i]!);
      let best = 0;
      for (const v of variants) {
        const x = xs[v.activations]!;
        const c: LinearCase = { m: 1, n, k, x: v.activations === 'f16' ? toFloat32('F16', fromFloat32('F16', xf)) : xf, w: wValues, tx: x, tw: weights[0]!, out: outs[v.activations][0]! };
        let ran;
        try {
          ran = await runLinear(gpu, c, v.options);
        } catch (error) {
          checks.push(`FAIL ${label} ${v.name}: ${String((error as Error).message)}`);
          log(checks[checks.length - 1]!);
          continue;
        }
        const r = await checkCase(c, n, v.activations === 'f16' ? 2e-3 : 1e-4, false);
        const line = `${r.ok ? 'ok  ' : 'FAIL'} ${label} ${ran.variant} (${v.activations} x): all ${n} outputs, worst error ${r.worst.toExponential(2)} of Σ|x|·max|w|`;
        checks.push(line);
        log(line);
        if (!r.ok) {
          rows.push(row(`bf16 GEMV ${label}, ${v.name} [failed its check: not timed]`, null, null, 'GB/s'));
          continue;
        }
        const replays: Replay[] = [];
        for (let i = 0; i < ROTATE; i++) {
          const rec = new CapturingRecorder(gpu);
          await linear(rec, x, weights[i]!, null, outs[v.activations][i]!, v.options);
          replays.push(prepareReplay(gpu, rec.captured));
        }
        const t = await timeAdaptive(gpu, replays);
        for (const r2 of replays) for (const b of r2.buffers) b.destroy();
        const perGemv = t.seconds / ROTATE;
        const xb = v.activations === 'f16' ? 2 : 4;
        const gbps = (n * k * 2 + k * xb + n * xb) / perGemv / 1e9;
        const base = torch?.results[`gemv_bf16_${label}`]?.gbps ?? null;
        rows.push(row(`bf16 GEMV ${label}, ${v.name}`, gbps, base, 'GB/s'));
        log(`bf16 GEMV ${label}, ${v.name}: ${gbps.toFixed(0)} GB/s (${(perGemv * 1e6).toFixed(1)} µs, ${t.clock})`);
        best = Math.max(best, gbps);
      }
      bestByShape.push(best);
      rows.push(row(`target: bf16 GEMV ${label}, best variant vs PyTorch bf16; needs ≥ 0.6`, best || null, torch?.results[`gemv_bf16_${label}`]?.gbps ?? null, 'GB/s'));
      for (const t of [...weights, xs.f32, ...(xs.f16 ? [xs.f16] : []), ...outs.f32, ...outs.f16]) t.destroy();
    }

    // GGUF decode bandwidth, for information (no PyTorch counterpart).
    const { k, n } = shapes[1] ?? shapes[0]!;
    for (const dtype of ['q8_0', 'q4_k', 'q6_k'] as LinearWeightDtype[]) {
      const bytes = randomWeightBytes(dtype, n, k, 99);
      const weights: GpuTensor[] = [];
      for (let i = 0; i < ROTATE; i++) weights.push(await uploadTensor(gpu, bytes, [n, k], dtype));
      const xf = randomValues(k, 8);
      const x = await uploadTensor(gpu, xf, [1, k]);
      const out = await emptyTensor(gpu, [1, n]);
      const c: LinearCase = { m: 1, n, k, x: xf, w: dequantizeWeight(dtype, bytes, n * k), tx: x, tw: weights[0]!, out };
      const ran = await runLinear(gpu, c, {});
      const r = await checkCase(c, n, 1e-4, false);
      checks.push(`${r.ok ? 'ok  ' : 'FAIL'} 1x${k}x${n} ${ran.variant} (${dtype}): worst error ${r.worst.toExponential(2)}`);
      log(checks[checks.length - 1]!);
      if (r.ok) {
        const replays: Replay[] = [];
        for (let i = 0; i < ROTATE; i++) {
          const rec = new CapturingRecorder(gpu);
          await linear(rec, x, weights[i]!, null, out, {});
          replays.push(prepareReplay(gpu, rec.captured));
        }
        const t = await timeAdaptive(gpu, replays);
        const gbps = (bytes.byteLength + 4 * k + 4 * n) / (t.seconds / ROTATE) / 1e9;
        rows.push(row(`${dtype} GEMV 1x${k}x${n} (f32 x, stored-block bytes)`, gbps, null, 'GB/s'));
        log(`${dtype} GEMV 1x${k}x${n}: ${gbps.toFixed(0)} GB/s`);
      }
      for (const t of [...weights, x, out]) t.destroy();
    }
    printRows(rows, log);
    const result: BenchResult = { device: `${gpu.adapterName} (${gpu.backend}, Dawn)`, rows, checks, notes };
    if (options.out) writeFileSync(options.out, `${JSON.stringify(result, null, 2)}\n`);
    return result;
  } finally {
    await set.close();
  }
}

if (process.argv[1]?.endsWith('gemv.js')) {
  const { values } = parseArgs({ options: { out: { type: 'string' }, quick: { type: 'boolean' }, 'no-baseline': { type: 'boolean' } } });
  await run({ out: values.out, quick: values.quick ?? false, baseline: !(values['no-baseline'] ?? false) });
}
