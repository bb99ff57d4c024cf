/**
 * CPU device benchmark: our WebAssembly SIMD linear (matmul and GEMV) against
 * onnxruntime-web's WebAssembly backend (SIMD, the same thread count, the same process:
 * WASM against WASM), with native onnxruntime-node as a reported row.
 *
 *   npm run build && node dist/bench/cpu-matmul.js [--quick] [--threads N] [--out FILE]
 *
 * Each case alternates ours and the baseline in short rounds (so both see the same machine
 * load: this 2-core machine is shared). "ours" and "baseline" are each side's median round;
 * "ratio" is the median over rounds of ours' speed-up against the baseline round run right
 * after it (paired rounds cancel the load both saw, so it can differ a little from
 * ours / baseline). Writes bench/results/cpu-matmul.json:
 * {"device": "...", "rows": [{"metric", "ours", "baseline", "ratio", "unit"}]}.
 *
 * Weight types: onnxruntime-web has MatMul for f32 and com.microsoft MatMulNBits for 4-bit
 * blocks of 32 (bits 4, block_size 32, no zero points = 8: Q4_0's format with f32 scales),
 * so Q4_0 is compared with it; it has no MatMul with bf16 weights (nor f32 activations
 * times f16 weights), so bf16 is compared with its f32 MatMul on the same shape. The WGSL
 * linear kernel on SwiftShader (WebGPU on the CPU) is a reported row (CPU_BENCH_ONLY=swiftshader
 * runs only those; any other CPU_BENCH_ONLY value filters the WASM cases by "MxKxN dtype").
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { dirname } from 'node:path';
import { parseArgs } from 'node:util';
import { CpuKernels, type CpuWeight, type CpuWeightDtype } from '../src/cpu/index.ts';
import { f32ToBf16Bits, f32ToF16Bits } from '../src/formats/dtypes.ts';
import { matmulModel, matmulNBitsModel } from './cpu-onnx.ts';

const { values: args } = parseArgs({
  options: {
    quick: { type: 'boolean', default: false },
    threads: { type: 'string' },
    out: { type: 'string', default: 'bench/results/cpu-matmul.json' },
  },
});
const threads = Number(args.threads ?? os.availableParallelism());
const ROUNDS = args.quick ? 5 : 31;
const ROUND_MS = args.quick ? 60 : 60;
const WARMUP_MS = args.quick ? 500 : 1500;

interface Row { metric: string; ours: number; baseline: number; ratio: number; unit: string }
const rows: Row[] = [];

function rnd(n: number, seed: number, scale = 1): Float32Array {
  let a = seed >>> 0;
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = Math.imul(a ^ (a >>> 15), a | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    out[i] = ((((t ^ (t >>> 14)) >>> 0) / 4294967296) * 2 - 1) * scale;
  }
  return out;
}

type Runner = () => Promise<unknown>;

/**
 * Seconds per call of each runner: a warm-up (V8 tiers WebAssembly up from Liftoff to TurboFan
 * while it runs), then short alternating rounds with a pause between runners (so one side's
 * spinning threads have gone to sleep before the other starts); the median round counts, so
 * both sides see the same machine load (this machine is shared) and no lucky round decides.
 */
async function race(runners: Runner[]): Promise<Race> {
  const pause = () => new Promise((resolve) => setTimeout(resolve, 20));
  for (const r of runners) {
    const t0 = performance.now();
    while (performance.now() - t0 < WARMUP_MS) await r();
    await pause();
  }
  const per: number[][] = runners.map(() => []);
  for (let round = 0; round < ROUNDS; round++) {
    for (let i = 0; i < runners.length; i++) {
      let calls = 0;
      const t0 = performance.now();
      let t = t0;
      while (t - t0 < ROUND_MS || calls < 2) {
        await runners[i]!();
        calls++;
        t = performance.now();
      }
      per[i]!.push((t - t0) / 1000 / calls);
      await pause();
    }
  }
  // Round r of runner 1 ran right after round r of runner 0: their ratio cancels the load both saw.
  const paired = per[0]!.map((t0, r) => per[1]![r]! / t0);
  return { times: per.map((p) => median(p)), pairedRatio: median(paired) };
}

interface Race {
  /** Median seconds per call of each runner. */
  readonly times: number[];
  /** Median over rounds of (runner 1's time / runner 0's time): ours' speed-up in adjacent rounds. */
  readonly pairedRatio: number;
}

function median(values: number[]): number {
  const v = [...values].sort((a, b) => a - b);
  return v[Math.floor(v.length / 2)]!;
}

// ---- onnxruntime ---------------------------------------------------------------------

interface OrtSession { run(feeds: Record<string, unknown>): Promise<unknown>; release(): Promise<void> }
interface OrtModule {
  env: { wasm: { numThreads: number; simd?: boolean }; logLevel?: string };
  InferenceSession: { create(model: Uint8Array, options: Record<string, unknown>): Promise<OrtSession> };
  Tensor: new (type: string, data: Float32Array, dims: number[]) => unknown;
}

const ortWeb = (await import('onnxruntime-web')) as unknown as OrtModule;
ortWeb.env.wasm.numThreads = threads;
let ortNode: OrtModule | null = null;
try {
  ortNode = (await import('onnxruntime-node')) as unknown as OrtModule;
} catch (error) {
  console.warn(`onnxruntime-node unavailable: ${String(error)}`);
}

async function ortRunner(ort: OrtModule, model: Uint8Array, x: Float32Array, m: number, k: number, native: boolean): Promise<{ run: Runner; release: () => Promise<void> }> {
  const options = native
    ? { executionProviders: ['cpu'], intraOpNumThreads: threads, interOpNumThreads: 1 }
    : { executionProviders: ['wasm'] };
  const session = await ort.InferenceSession.create(model, options);
  const feeds = { x: new ort.Tensor('float32', x, [m, k]) };
  return { run: () => session.run(feeds), release: () => session.release() };
}

// ---- our kernels -----------------------------------------------------------------------

const cpu = await CpuKernels.create({ threads });

function encodeWeights(dtype: CpuWeightDtype, w: Float32Array, n: number, k: number): Uint8Array {
  if (dtype === 'f32') return new Uint8Array(w.buffer.slice(0));
  if (dtype === 'bf16' || dtype === 'f16') {
    const enc = dtype === 'bf16' ? f32ToBf16Bits : f32ToF16Bits;
    const out = new Uint16Array(w.length);
    for (let i = 0; i < w.length; i++) out[i] = enc(w[i]!);
    return new Uint8Array(out.buffer);
  }
  if (dtype === 'q4_0') {
    // ggml's block_q4_0: f16 d, then 16 bytes: element j in the low nibble of byte j, j + 16 in the high.
    const blocks = (n * k) / 32;
    const out = new Uint8Array(blocks * 18);
    for (let b = 0; b < blocks; b++) {
      let amax = 0;
      let max = 0;
      for (let j = 0; j < 32; j++) {
        const v = w[b * 32 + j]!;
        if (Math.abs(v) > amax) {
          amax = Math.abs(v);
          max = v;
        }
      }
      const d = max / -8;
      const id = d ? 1 / d : 0;
      const h = f32ToF16Bits(d);
      out[b * 18] = h & 0xff;
      out[b * 18 + 1] = h >> 8;
      for (let j = 0; j < 16; j++) {
        const q0 = Math.min(15, Math.trunc(w[b * 32 + j]! * id + 8.5));
        const q1 = Math.min(15, Math.trunc(w[b * 32 + j + 16]! * id + 8.5));
        out[b * 18 + 2 + j] = q0 | (q1 << 4);
      }
    }
    return out;
  }
  throw new RangeError(`bench: no encoder for ${dtype}`);
}

function storedBytes(dtype: CpuWeightDtype, n: number, k: number): number {
  return dtype === 'f32' ? n * k * 4 : dtype === 'q4_0' ? (n * k / 32) * 18 : n * k * 2;
}

interface Case { m: number; k: number; n: number; dtype: CpuWeightDtype }

const device = `${os.cpus()[0]?.model ?? 'unknown CPU'}, ${threads} threads (${os.availableParallelism()} cores), Node ${process.versions.node}`;
console.log(device);

async function benchCase(c: Case): Promise<void> {
  const { m, k, n, dtype } = c;
  const w = rnd(n * k, 1, 0.5);
  const x = rnd(m * k, 2);
  const weight: CpuWeight = await cpu.loadWeight(encodeWeights(dtype, w, n, k), [n, k], dtype);
  const ours: Runner = () => cpu.linear(x, m, weight);

  // The baseline model: MatMulNBits for Q4_0, else f32 MatMul (b = wᵀ, [k, n]).
  let model: Uint8Array;
  let baselineName: string;
  if (dtype === 'q4_0') {
    const q = new Uint8Array(n * k / 2);
    for (let i = 0; i < q.length; i++) q[i] = (i * 2654435761) >>> 24;
    const scales = rnd(n * k / 32, 3, 0.01);
    model = matmulNBitsModel(m, k, n, q, scales);
    baselineName = 'onnxruntime-web MatMulNBits (4-bit, block 32)';
  } else {
    const b = new Float32Array(k * n);
    for (let i = 0; i < n; i++) for (let j = 0; j < k; j++) b[j * n + i] = w[i * k + j]!;
    model = matmulModel(m, k, n, new Uint8Array(b.buffer));
    baselineName = dtype === 'f32' ? 'onnxruntime-web MatMul f32' : 'onnxruntime-web MatMul f32 (it has no bf16 MatMul)';
  }
  const web = await ortRunner(ortWeb, model, x, m, k, false);
  const native = ortNode ? await ortRunner(ortNode, model, x, m, k, true) : null;
  // Two races: ours against the WASM baseline alone (native ORT's spinning threads stay out of
  // it), then ours against native ORT (reported).
  const vsWeb = await race([ours, web.run]);
  const [tOurs, tWeb] = vsWeb.times;
  await web.release();
  const vsNative = native ? await race([ours, native.run]) : null;
  const [tOursN, tNative] = vsNative ? vsNative.times : [undefined, undefined];
  await native?.release();
  await cpu.freeWeight(weight);

  const flops = 2 * m * n * k;
  const shape = `${m}x${k}x${n}`;
  const kind = m === 1 ? 'gemv' : 'matmul';
  const gf = (t: number) => flops / t / 1e9;
  const gb = (t: number, bytes: number) => bytes / t / 1e9;
  const push = (metric: string, o: number, b: number, ratio: number, unit: string) => {
    rows.push({ metric, ours: round(o), baseline: round(b), ratio: round(ratio, 3), unit });
    console.log(`${metric.padEnd(96)} ours ${o.toFixed(2).padStart(8)}  baseline ${b.toFixed(2).padStart(8)}  ratio ${ratio.toFixed(3)} ${unit}`);
  };
  push(`${kind} ${shape} ${dtype} weights vs ${baselineName}, ${threads} threads`, gf(tOurs!), gf(tWeb!), vsWeb.pairedRatio, 'GFLOP/s');
  if (kind === 'gemv') {
    // Bytes each side reads: its own weight format (the baseline's f32 or 4-bit + f32 scales).
    const baseBytes = dtype === 'q4_0' ? n * k / 2 + (n * k / 32) * 4 : n * k * 4;
    const o = gb(tOurs!, storedBytes(dtype, n, k)), b = gb(tWeb!, baseBytes);
    push(`${kind} ${shape} ${dtype} weight bandwidth vs ${baselineName}, ${threads} threads`, o, b, vsWeb.pairedRatio * (storedBytes(dtype, n, k) / baseBytes), 'GB/s');
  }
  if (vsNative) push(`${kind} ${shape} ${dtype} weights vs onnxruntime-node native (reported), ${threads} threads`, gf(tOursN!), gf(tNative!), vsNative.pairedRatio, 'GFLOP/s');
}

function round(v: number, digits = 2): number {
  const f = 10 ** digits;
  return Math.round(v * f) / f;
}

/**
 * A reported row: the WGSL linear kernel (src/kernels/ops/matmul.ts) on SwiftShader, the
 * CPU-emulated WebGPU this machine has, on the same shapes (f32), when that kernel exists.
 */
async function swiftShaderRows(): Promise<void> {
  let mod: typeof import('../src/kernels/ops/matmul.ts');
  let lib: typeof import('../src/index.ts');
  let tensors: typeof import('../src/kernels/tensor.ts');
  try {
    mod = await import('../src/kernels/ops/matmul.ts');
    lib = await import('../src/index.ts');
    tensors = await import('../src/kernels/tensor.ts');
  } catch (error) {
    console.warn(`no WGSL linear to compare with: ${String(error)}`);
    return;
  }
  // SwiftShader asks for a Wayland runtime dir it never uses (as vitest.config.ts sets it).
  process.env.XDG_RUNTIME_DIR ??= '/tmp';
  const set = await lib.openDevices();
  try {
    const gpu = set.gpus[0];
    if (!gpu) return;
    for (const { m, k, n } of [{ m: 512, k: 512, n: 512 }, { m: 1, k: 4096, n: 4096 }]) {
      const w = rnd(n * k, 1, 0.5);
      const x = rnd(m * k, 2);
      const weight = await cpu.loadWeight(w, [n, k], 'f32');
      const tx = await tensors.uploadTensor(gpu, x, [m, k]);
      const tw = await tensors.uploadTensor(gpu, w, [n, k]);
      const to = await tensors.emptyTensor(gpu, [m, n]);
      try {
        const wgsl: Runner = async () => {
          const rec = new lib.KernelRecorder(gpu);
          await mod.linear(rec, tx, tw, null, to);
          await rec.submit();
        };
        const result = await race([() => cpu.linear(x, m, weight), wgsl]);
        const [tOurs, tWgsl] = result.times;
        const flops = 2 * m * n * k;
        const metric = `${m === 1 ? 'gemv' : 'matmul'} ${m}x${k}x${n} f32 weights vs the WGSL linear on SwiftShader (${gpu.name}, reported)`;
        const o = flops / tOurs! / 1e9, b = flops / tWgsl! / 1e9;
        rows.push({ metric, ours: round(o), baseline: round(b), ratio: round(result.pairedRatio, 3), unit: 'GFLOP/s' });
        console.log(`${metric.padEnd(96)} ours ${o.toFixed(2).padStart(8)}  baseline ${b.toFixed(2).padStart(8)}  ratio ${result.pairedRatio.toFixed(3)} GFLOP/s`);
      } finally {
        tx.destroy();
        tw.destroy();
        to.destroy();
        await cpu.freeWeight(weight);
      }
    }
  } finally {
    await set.close();
  }
}

const CASES: Case[] = [
  { m: 512, k: 512, n: 512, dtype: 'f32' },
  { m: 1, k: 4096, n: 4096, dtype: 'f32' },
  { m: 512, k: 512, n: 512, dtype: 'bf16' },
  { m: 1, k: 4096, n: 4096, dtype: 'bf16' },
  { m: 512, k: 512, n: 512, dtype: 'q4_0' },
  { m: 1, k: 4096, n: 4096, dtype: 'q4_0' },
];
const only = process.env.CPU_BENCH_ONLY;
for (const c of CASES) {
  if (only && !`${c.m}x${c.k}x${c.n} ${c.dtype}`.includes(only)) continue;
  await benchCase(c);
}
if (!only || only === 'swiftshader') await swiftShaderRows();
await cpu.close();

mkdirSync(dirname(args.out!), { recursive: true });
writeFileSync(args.out!, JSON.stringify({ device, rows }, null, 2) + '\n');
console.log(`wrote ${args.out}`);
process.exit(0);
