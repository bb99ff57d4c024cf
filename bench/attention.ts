/**
 * Attention benchmark for GPU machines: sequence 4096, B=1, H=32, D=128, causal and not, our
 * three kernels (f32, f16, subgroup-matrix) against PyTorch's scaled_dot_product_attention on
 * the same GPU in the same run (float32 with TF32 off, and bfloat16). Every output is checked
 * against PyTorch's float32 result before it is timed; the subgroup-matrix kernel, which no
 * CI machine can run, is also checked against the f64 CPU reference on small shapes with every
 * option (causal, GQA, masks, key padding, T5 bias, cross-attention, odd lengths).
 *
 * On the GPU machine (after `npm run build && bash scripts/gpu-pack.sh` here, carrying .gpu and dist):
 *
 *   bash .gpu/run-lite.sh dist/bench/attention.js --out $OUT/attention.json
 *
 * Writes {"device", "rows": [{metric, ours, baseline, ratio, unit}], ...details}; the
 * committed copy is bench/results/attention.json.
 */
import { spawnSync } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { fromFloat32, toFloat32 } from '../src/formats/dtypes.ts';
import { downloadF32, emptyTensor, KernelRecorder, openDevices, uploadTensor, type GpuDevice, type GpuTensor } from '../src/index.ts';
import { attention, attentionFlops, subgroupMatrixUnfit, type AttentionKernel, type AttentionOptions, type AttentionRun } from '../src/kernels/ops/attention.ts';
import { attentionReference } from '../src/kernels/reference/attention.ts';

export interface AttentionBenchOptions {
  readonly batch?: number;
  readonly heads?: number;
  readonly seq?: number;
  readonly headDim?: number;
  /** Where the PyTorch side writes its tensors. */
  readonly work?: string;
  readonly out?: string;
  readonly python?: string;
  /** Wall-clock milliseconds each timing aims for. */
  readonly minMs?: number;
}

export interface BenchRow { readonly metric: string; readonly ours: number | null; readonly baseline: number; readonly ratio: number | null; readonly unit: string }

export interface AttentionBenchReport {
  readonly device: string;
  readonly rows: BenchRow[];
  readonly shape: { batch: number; heads: number; seq: number; headDim: number };
  readonly torch: unknown;
  readonly kernels: unknown[];
  readonly checks: unknown[];
  readonly notes: string[];
}

/** Our kernels, the tensor-core one with each way of loading its operands. */
const KERNELS: ReadonlyArray<{ kernel: Exclude<AttentionKernel, 'decode'>; loads?: 'direct' | 'staged'; keys?: 32 | 64 }> = [
  { kernel: 'f32' }, { kernel: 'f16' },
  { kernel: 'subgroup-matrix', loads: 'direct', keys: 64 }, { kernel: 'subgroup-matrix', loads: 'direct', keys: 32 }, { kernel: 'subgroup-matrix', loads: 'staged', keys: 32 },
];

function random(n: number, seed: number, scale = 1): Float32Array {
  let a = seed >>> 0;
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    out[i] = ((((t ^ (t >>> 14)) >>> 0) / 4294967296) * 2 - 1) * scale;
  }
  return out;
}

const toF16 = (x: Float32Array) => fromFloat32('F16', x);
const f16Values = (x: Float32Array) => toFloat32('F16', toF16(x));

function maxErrors(got: Float32Array, want: Float32Array): { maxAbs: number; relToMax: number; nonFinite: number } {
  let maxAbs = 0;
  let maxRef = 0;
  let nonFinite = 0;
  for (let i = 0; i < want.length; i++) {
    if (!Number.isFinite(got[i]!)) nonFinite++;
    maxAbs = Math.max(maxAbs, Math.abs(got[i]! - want[i]!));
    maxRef = Math.max(maxRef, Math.abs(want[i]!));
  }
  return { maxAbs, relToMax: maxAbs / (maxRef || 1), nonFinite };
}

/** Milliseconds per call: calls recorded back to back in one submit, repeated, best of 3. */
async function timeCalls(gpu: GpuDevice, call: (rec: KernelRecorder) => Promise<unknown>, minMs: number): Promise<number> {
  const once = async (n: number) => {
    const rec = new KernelRecorder(gpu);
    for (let i = 0; i < n; i++) await call(rec);
    const t0 = performance.now();
    await rec.submit();
    return (performance.now() - t0) / n;
  };
  const single = await once(1); // warm-up (pipelines are compiled by the check before)
  const n = Math.max(1, Math.min(100, Math.ceil(minMs / Math.max(single, 0.01))));
  let best = Infinity;
  for (let r = 0; r < 3; r++) best = Math.min(best, await once(n));
  return best;
}

async function smallChecks(gpu: GpuDevice): Promise<unknown[]> {
  // The subgroup-matrix kernel (and the f16 kernel beside it) against the f64 reference.
  const cases = [
    // Diagnostics first: q = k = 0 (uniform weights: only P·V and the output path), then one 16×16×16 block.
    { B: 1, Lq: 16, Lk: 32, H: 1, Hkv: 1, D: 16, magnitude: 0 },
    { B: 1, Lq: 16, Lk: 16, H: 1, Hkv: 1, D: 16 },
    // Whole tiles, so the direct-load variants run here too.
    { B: 2, Lq: 128, Lk: 128, H: 2, Hkv: 2, D: 64, causal: true, magnitude: 4 },
    { B: 1, Lq: 64, Lk: 192, H: 4, Hkv: 2, D: 128, mask: true, keyPadding: true },
    { B: 1, Lq: 100, Lk: 100, H: 4, Hkv: 4, D: 128, causal: true },
    { B: 2, Lq: 77, Lk: 77, H: 8, Hkv: 2, D: 64, causal: true },
    { B: 1, Lq: 130, Lk: 301, H: 4, Hkv: 1, D: 64, mask: true, keyPadding: true },
    { B: 1, Lq: 65, Lk: 65, H: 4, Hkv: 4, D: 64, relBias: true, scale: 1, magnitude: 6 },
    { B: 2, Lq: 1, Lk: 333, H: 8, Hkv: 2, D: 128, causal: true },
    { B: 1, Lq: 200, Lk: 7, H: 8, Hkv: 8, D: 32 },
    { B: 1, Lq: 63, Lk: 150, H: 2, Hkv: 2, D: 16, causal: true, magnitude: 12 },
    { B: 1, Lq: 40, Lk: 40, H: 2, Hkv: 2, D: 96 },
  ];
  const results: unknown[] = [];
  for (const [i, c] of cases.entries()) {
    const mag = c.magnitude ?? 1;
    const q = f16Values(random(c.B * c.Lq * c.H * c.D, 100 + i, mag));
    const k = f16Values(random(c.B * c.Lk * c.Hkv * c.D, 200 + i, mag));
    const v = f16Values(random(c.B * c.Lk * c.Hkv * c.D, 300 + i));
    const keep: GpuTensor[] = [];
    try {
      const up16 = async (x: Float32Array, shape: number[]) => { const t = await uploadTensor(gpu, toF16(x), shape, 'f16'); keep.push(t); return t; };
      const up32 = async (x: Float32Array | Uint32Array, shape: number[], dtype: 'f32' | 'u32') => {
        const t = await uploadTensor(gpu, new Uint8Array(x.buffer, x.byteOffset, x.byteLength), shape, dtype);
        keep.push(t);
        return t;
      };
      const opts: { -readonly [K in keyof AttentionOptions]: AttentionOptions[K] } = { causal: c.causal, scale: c.scale };
      let mask: { data: Float32Array; shape: number[] } | undefined;
      if (c.mask) {
        mask = { data: random(c.Lq * c.Lk, 400 + i, 2).map((x, j) => (j % 9 === 4 ? -Infinity : x)), shape: [c.Lq, c.Lk] };
        opts.mask = await up32(mask.data, mask.shape, 'f32');
      }
      let kp: Uint32Array | undefined;
      if (c.keyPadding) {
        kp = Uint32Array.from({ length: c.B * c.Lk }, (_, j) => (j % 5 === 2 ? 0 : 1));
        opts.keyPadding = await up32(kp, [c.B, c.Lk], 'u32');
      }
      let rb: Float32Array | undefined;
      if (c.relBias) {
        rb = random(c.H * (c.Lq + c.Lk - 1), 500 + i, 4);
        opts.relativeBias = await up32(rb, [c.H, c.Lq + c.Lk - 1], 'f32');
      }
      const want = attentionReference(q, k, v, { batch: c.B, lq: c.Lq, lk: c.Lk, heads: c.H, kvHeads: c.Hkv, headDim: c.D, causal: c.causal, scale: c.scale, mask, keyPadding: kp, relativeBias: rb });
      const tq = await up16(q, [c.B, c.Lq, c.H, c.D]);
      const tk = await up16(k, [c.B, c.Lk, c.Hkv, c.D]);
      const tv = await up16(v, [c.B, c.Lk, c.Hkv, c.D]);
      for (const [path, loads, keys] of [['subgroup-matrix', 'direct', 64], ['subgroup-matrix', 'direct', 32], ['subgroup-matrix', 'staged', 32], ['f16', undefined, undefined]] as const) {
        const out = await emptyTensor(gpu, [c.B, c.Lq, c.H, c.D], 'f16');
        keep.push(out);
        try {
          const rec = new KernelRecorder(gpu);
          const run = await attention(rec, tq, tk, tv, out, { ...opts, path, tensorCoreLoads: loads, tensorCoreKeys: keys });
          await rec.submit();
          const got = await downloadF32(out);
          let worstExcess = 0;
          for (let j = 0; j < want.length; j++) worstExcess = Math.max(worstExcess, Math.abs(got[j]! - want[j]!) - (2e-3 + 2e-2 * Math.abs(want[j]!)));
          results.push({ case: c, path, loads, keys, ran: run.kernel, ranLoads: run.tensorCoreLoads, ranKeys: run.tensorCoreKeys, fallback: run.fallback, ...maxErrors(got, want), pass: worstExcess <= 0 && got.every(Number.isFinite) });
        } catch (error) {
          results.push({ case: c, path, loads, keys, error: String((error as Error).message ?? error), pass: false });
        }
      }
    } finally {
      for (const t of keep) t.destroy();
    }
  }
  return results;
}

export async function run(options: AttentionBenchOptions = {}): Promise<AttentionBenchReport> {
  const B = options.batch ?? 1, H = options.heads ?? 32, L = options.seq ?? 4096, D = options.headDim ?? 128;
  const work = options.work ?? '/tmp/attention-bench';
  const minMs = options.minMs ?? 400;
  const notes: string[] = [];
  mkdirSync(work, { recursive: true });
  const script = new URL('../../bench/gpu/attention_torch.py', import.meta.url);
  const py = spawnSync(options.python ?? 'python3', [script.pathname, '--batch', `${B}`, '--heads', `${H}`, '--seq', `${L}`, '--dim', `${D}`, '--dir', work],
    { stdio: ['ignore', 'inherit', 'inherit'] });
  if (py.status !== 0) throw new Error(`the PyTorch side failed (exit ${py.status}${py.error ? `, ${py.error.message}` : ''})`);
  const torch = JSON.parse(readFileSync(`${work}/torch.json`, 'utf8')) as { device: string; ms: Record<string, number> };
  const read = (name: string) => { const b = readFileSync(`${work}/${name}`); return new Float32Array(b.buffer, b.byteOffset, b.byteLength / 4); };
  const q = read('q.f32'), k = read('k.f32'), v = read('v.f32');
  const refs = [read('ref.causal0.f32'), read('ref.causal1.f32')];

  const set = await openDevices();
  const gpu = set.gpus[0];
  if (!gpu) throw new Error('no GPU adapter');
  const kernels: unknown[] = [];
  const rows: BenchRow[] = [];
  try {
    const shape = [B, L, H, D];
    const t32 = await Promise.all([q, k, v].map((x) => uploadTensor(gpu, x, shape, 'f32')));
    const t16 = gpu.hasFeature('shader-f16') ? await Promise.all([q, k, v].map((x) => uploadTensor(gpu, toF16(x), shape, 'f16'))) : null;
    const o32 = await emptyTensor(gpu, shape, 'f32');
    const o16 = t16 ? await emptyTensor(gpu, shape, 'f16') : null;
    const why = subgroupMatrixUnfit(gpu, D, new KernelRecorder(gpu).limits);
    if (why) notes.push(`subgroup-matrix unavailable: ${why}`);
    for (const causal of [false, true]) {
      const flops = attentionFlops({ batch: B, lq: L, lk: L, heads: H, kvHeads: H, headDim: D }, causal);
      const tag = `L=${L} B=${B} H=${H} D=${D} ${causal ? 'causal' : 'non-causal'}`;
      for (const { kernel, loads, keys } of KERNELS) {
        const f32 = kernel === 'f32';
        const baseMs = torch.ms[`${f32 ? 'f32' : 'bf16'}.causal${causal ? 1 : 0}`]!;
        const baseline = flops / (baseMs * 1e9);
        const metric = `attention ${kernel}${loads ? ` (${loads} loads, ${keys}-key tiles)` : ''} kernel vs torch SDPA ${f32 ? 'float32 (TF32 off)' : 'bfloat16'}, ${tag}`;
        const record: Record<string, unknown> = { kernel, loads, keys, causal, torchMs: baseMs };
        kernels.push(record);
        const tensors = f32 ? t32 : t16;
        const out = f32 ? o32 : o16;
        if (!tensors || !out) {
          record.error = 'no shader-f16';
          rows.push({ metric, ours: null, baseline: round(baseline), ratio: null, unit: 'TFLOP/s' });
          continue;
        }
        const call = (rec: KernelRecorder) => attention(rec, tensors[0]!, tensors[1]!, tensors[2]!, out, { causal, ...(f32 ? {} : { path: kernel, tensorCoreLoads: loads, tensorCoreKeys: keys }) });
        try {
          const rec = new KernelRecorder(gpu);
          const ran: AttentionRun = await call(rec);
          await rec.submit();
          record.ran = ran;
          const err = maxErrors(await downloadF32(out), refs[causal ? 1 : 0]!);
          record.vsTorchF32 = err;
          const limit = f32 ? 1e-4 : 2e-2;
          const ok = err.nonFinite === 0 && err.relToMax <= limit;
          record.verified = ok;
          if (!ok || ran.kernel !== kernel || ran.tensorCoreLoads !== loads || ran.tensorCoreKeys !== keys) {
            record.error = !ok ? `output differs from PyTorch: max |err| / max |ref| = ${err.relToMax} > ${limit}` : `ran ${ran.kernel} (${ran.tensorCoreLoads ?? '-'}): ${ran.fallback ?? ''}`;
            rows.push({ metric, ours: null, baseline: round(baseline), ratio: null, unit: 'TFLOP/s' });
            continue;
          }
          const ms = await timeCalls(gpu, call, minMs);
          record.ms = ms;
          const ours = flops / (ms * 1e9);
          rows.push({ metric, ours: round(ours), baseline: round(baseline), ratio: round(ours / baseline), unit: 'TFLOP/s' });
        } catch (error) {
          record.error = String((error as Error).message ?? error);
          rows.push({ metric, ours: null, baseline: round(baseline), ratio: null, unit: 'TFLOP/s' });
        }
      }
    }
    for (const t of [...t32, ...(t16 ?? []), o32, o16]) t?.destroy();
    const checks = await smallChecks(gpu);
    const device = `${torch.device} (ours: Dawn ${gpu.backend}, adapter "${gpu.adapterName}"; baseline: PyTorch ${(torch as { torch?: string }).torch ?? ''})`;
    return { device, rows, shape: { batch: B, heads: H, seq: L, headDim: D }, torch, kernels, checks, notes };
  } finally {
    await set.close();
  }
}

/** Four significant digits. */
function round(x: number): number {
  return Number(x.toPrecision(4));
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const { values } = parseArgs({
    options: {
      out: { type: 'string' }, seq: { type: 'string' }, heads: { type: 'string' }, dim: { type: 'string' }, batch: { type: 'string' },
      work: { type: 'string' }, python: { type: 'string' }, 'min-ms': { type: 'string' },
    },
  });
  const num = (s: string | undefined) => (s === undefined ? undefined : Number(s));
  const report = await run({
    out: values.out, seq: num(values.seq), heads: num(values.heads), headDim: num(values.dim), batch: num(values.batch),
    work: values.work, python: values.python, minMs: num(values['min-ms']),
  });
  const text = JSON.stringify(report, null, 2);
  console.log(text);
  if (values.out) writeFileSync(values.out, text + '\n');
}
