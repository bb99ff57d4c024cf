/**
 * linear / matmul benchmark and tensor-core correctness check, against PyTorch on the same GPU.
 *
 * GPU machine (after `npm run build && bash scripts/gpu-pack.sh` here, carrying [".gpu", "dist"]):
 *   bash .gpu/run-lite.sh dist/bench/matmul.js --out $OUT/matmul.json
 * It first checks every path it will time on the GPU against the CPU reference (the
 * subgroup-matrix kernel on odd shapes and several weight layouts, the f16 path), then times
 * 4096×4096×4096 on the f32 path (f32 weights) and on the subgroup-matrix path (f16 operands),
 * and runs bench/gpu/matmul_torch.py for PyTorch's numbers (f32 with TF32 off, bf16).
 * Locally, on SwiftShader: `node dist/bench/matmul.js --quick --no-baseline` (small shapes).
 */
import { execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { fromFloat32, toFloat32 } from '../src/formats/dtypes.ts';
import { openDevices, type GpuDevice } from '../src/index.ts';
import { dispatchGrid } from '../src/kernels/grid.ts';
import {
  linear, packForSubgroupMatrix, SGMAT_PACKED_TILES, subgroupMatrixReady, type LinearInfo, type LinearOptions, type SgmatPackedTile, type SgmatPackedWeight,
} from '../src/kernels/ops/matmul.ts';
import type { LinearWeightDtype } from '../src/kernels/ops/matmul-wgsl.ts';
import { KernelRecorder, type Binding } from '../src/kernels/recorder.ts';
import { dequantizeWeight, linearReference } from '../src/kernels/reference/matmul.ts';
import { prng, randomValues, randomWeightBytes } from '../src/kernels/reference/matmul-data.ts';
import { downloadF32, emptyTensor, uploadTensor, type GpuTensor } from '../src/kernels/tensor.ts';

export interface BenchRow {
  readonly metric: string;
  readonly ours: number | null;
  readonly baseline: number | null;
  readonly ratio: number | null;
  readonly unit: string;
}

export interface BenchResult {
  readonly device: string;
  readonly rows: BenchRow[];
  readonly checks?: readonly string[];
  readonly notes?: readonly string[];
}

export interface BenchOptions {
  /** Write the result JSON here. */
  readonly out?: string;
  /** Run PyTorch (python3 bench/gpu/matmul_torch.py) for the baseline (default true). */
  readonly baseline?: boolean;
  /** Small shapes, for a smoke run on SwiftShader. */
  readonly quick?: boolean;
  /** Only the subgroup-matrix checks and rows (and PyTorch), while iterating on that kernel. */
  readonly sgmatOnly?: boolean;
  /** Logs progress (default console.log). */
  readonly log?: (line: string) => void;
}

/** Dawn flags as openDevices' defaults, with timestamps unquantized for timing. */
export const BENCH_DAWN_FLAGS = ['enable-dawn-features=allow_unsafe_apis,vulkan_enable_f16_on_nvidia', 'disable-dawn-features=timestamp_quantization'];

// ---- timing -------------------------------------------------------------------------------

interface Captured {
  readonly pipeline: GPUComputePipeline;
  readonly bindings: readonly Binding[];
  readonly uniforms: Uint8Array | null;
  readonly grid: readonly [number, number, number];
}

/** Records what an op dispatches instead of submitting it, so a benchmark can replay it. */
export class CapturingRecorder extends KernelRecorder {
  readonly captured: Captured[] = [];

  override dispatch(pipeline: GPUComputePipeline, bindings: readonly Binding[], uniforms: ArrayBufferView | null,
    groups: number | readonly [number, number, number]): void {
    const grid: [number, number, number] = typeof groups === 'number'
      ? [...dispatchGrid(groups, this.limits.maxComputeWorkgroupsPerDimension), 1]
      : [groups[0], groups[1], groups[2]];
    const bytes = uniforms ? new Uint8Array(uniforms.buffer, uniforms.byteOffset, uniforms.byteLength).slice() : null;
    this.captured.push({ pipeline, bindings, uniforms: bytes, grid });
  }
}

/** A replayable list of dispatches: bind groups built once, uniforms in one buffer. */
export interface Replay {
  readonly steps: ReadonlyArray<{ pipeline: GPUComputePipeline; group: GPUBindGroup; grid: readonly [number, number, number] }>;
  readonly buffers: GPUBuffer[];
}

export function prepareReplay(gpu: GpuDevice, captured: readonly Captured[]): Replay {
  const device = gpu.device;
  const align = 256;
  const total = Math.max(align, captured.length * align);
  const uniformBuffer = device.createBuffer({ label: 'bench uniforms', size: total, usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST });
  const staging = new Uint8Array(total);
  const steps = captured.map((c, i) => {
    const entries: GPUBindGroupEntry[] = c.bindings.map((b, binding) => ({
      binding, resource: 'buffer' in b ? { buffer: b.buffer, offset: b.offset ?? 0, size: b.size } : { buffer: b },
    }));
    if (c.uniforms) {
      staging.set(c.uniforms, i * align);
      entries.push({ binding: c.bindings.length, resource: { buffer: uniformBuffer, offset: i * align, size: Math.max(16, Math.ceil(c.uniforms.byteLength / 16) * 16) } });
    }
    return { pipeline: c.pipeline, group: device.createBindGroup({ layout: c.pipeline.getBindGroupLayout(0), entries }), grid: c.grid };
  });
  device.queue.writeBuffer(uniformBuffer, 0, staging);
  return { steps, buffers: [uniformBuffer] };
}

/**
 * Seconds per pass over `replays` (one after another, e.g. 8 weight matrices), the median of
 * `samples` submits of `reps` passes each, by GPU timestamps where the device has them
 * (else wall clock around submit → done).
 */
export async function timeReplays(gpu: GpuDevice, replays: readonly Replay[], reps: number, samples = 5): Promise<{ seconds: number; clock: string }> {
  const device = gpu.device;
  const timestamps = gpu.hasFeature('timestamp-query');
  const querySet = timestamps ? device.createQuerySet({ type: 'timestamp', count: 2 }) : null;
  const resolve = timestamps ? device.createBuffer({ size: 16, usage: GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC }) : null;
  const read = timestamps ? device.createBuffer({ size: 16, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST }) : null;
  const times: number[] = [];
  try {
    for (let s = 0; s <= samples; s++) {
      const encoder = device.createCommandEncoder();
      const pass = encoder.beginComputePass(querySet ? { timestampWrites: { querySet, beginningOfPassWriteIndex: 0, endOfPassWriteIndex: 1 } } : {});
      for (let r = 0; r < (s === 0 ? 1 : reps); r++) {
        for (const replay of replays) {
          for (const step of replay.steps) {
            pass.setPipeline(step.pipeline);
            pass.setBindGroup(0, step.group);
            pass.dispatchWorkgroups(step.grid[0], step.grid[1], step.grid[2]);
          }
        }
      }
      pass.end();
      if (querySet) {
        encoder.resolveQuerySet(querySet, 0, 2, resolve!, 0);
        encoder.copyBufferToBuffer(resolve!, 0, read!, 0, 16);
      }
      const commands = encoder.finish();
      const t0 = performance.now();
      device.queue.submit([commands]);
      await device.queue.onSubmittedWorkDone();
      const wall = (performance.now() - t0) / 1000;
      let seconds = wall;
      if (read) {
        await read.mapAsync(GPUMapMode.READ);
        const [begin, end] = new BigUint64Array(read.getMappedRange().slice(0));
        read.unmap();
        const gpuSeconds = Number(end! - begin!) / 1e9;
        if (gpuSeconds > 0 && gpuSeconds <= wall * 1.5) seconds = gpuSeconds;
      }
      if (s > 0) times.push(seconds / reps);
    }
  } finally {
    querySet?.destroy();
    resolve?.destroy();
    read?.destroy();
  }
  times.sort((a, b) => a - b);
  return { seconds: times[Math.floor(times.length / 2)]!, clock: timestamps ? 'GPU timestamps' : 'wall clock' };
}

/** Picks reps so one timed submit lasts about `target` seconds, then times. */
export async function timeAdaptive(gpu: GpuDevice, replays: readonly Replay[], target = 0.15): Promise<{ seconds: number; clock: string }> {
  const probe = await timeReplays(gpu, replays, 2, 1);
  const reps = Math.max(2, Math.min(2000, Math.round(target / Math.max(probe.seconds, 1e-7))));
  return timeReplays(gpu, replays, reps, 5);
}

// ---- checking -----------------------------------------------------------------------------

/** Host-side data of a linear case, and its GPU tensors. */
export interface LinearCase {
  readonly m: number;
  readonly n: number;
  readonly k: number;
  readonly x: Float32Array;        // as the GPU sees it (f16-rounded for f16 activations)
  readonly w: Float32Array;        // decoded weights
  readonly tx: GpuTensor;
  readonly tw: GpuTensor;
  readonly out: GpuTensor;
}

export async function makeCase(gpu: GpuDevice, m: number, n: number, k: number, dtype: LinearWeightDtype, activations: 'f32' | 'f16', seed: number): Promise<LinearCase> {
  const wBytes = randomWeightBytes(dtype, n, k, seed);
  const w = dequantizeWeight(dtype, wBytes, n * k);
  let x = randomValues(m * k, seed + 1);
  let tx: GpuTensor;
  if (activations === 'f16') {
    const bytes = fromFloat32('F16', x);
    x = toFloat32('F16', bytes);
    tx = await uploadTensor(gpu, bytes, [m, k], 'f16');
  } else {
    tx = await uploadTensor(gpu, x, [m, k]);
  }
  const tw = await uploadTensor(gpu, wBytes, [n, k], dtype);
  const out = await emptyTensor(gpu, [m, n], activations);
  return { m, n, k, x, w, tx, tw, out };
}

export function destroyCase(c: LinearCase): void {
  c.tx.destroy();
  c.tw.destroy();
  c.out.destroy();
}

/**
 * Compares `samples` outputs (all when samples ≥ m·n) with the f64 reference; the error is
 * scaled by Σ_k |x|·max_k |w| (see test/kernels/matmul.test.ts). Operands that the kernel
 * rounds to f16 (subgroup-matrix path) are rounded so in the reference too.
 */
export async function checkCase(c: LinearCase, samples: number, tolerance: number, f16Operands: boolean): Promise<{ worst: number; ok: boolean; relative: number }> {
  const got = await downloadF32(c.out);
  const f16 = (v: Float32Array) => (f16Operands ? toFloat32('F16', fromFloat32('F16', v)) : v);
  const next = prng(12345);
  const all = samples >= c.m * c.n;
  let worst = 0;
  let ok = true;
  let diff2 = 0;
  let want2 = 0;
  for (let s = 0; s < (all ? c.m * c.n : samples); s++) {
    const idx = all ? s : Math.floor(next() * c.m * c.n);
    const i = Math.floor(idx / c.n);
    const j = idx % c.n;
    const x = f16(c.x.subarray(i * c.k, (i + 1) * c.k));
    const w = f16(c.w.subarray(j * c.k, (j + 1) * c.k));
    const want = linearReference(x, w, 1, 1, c.k)[0]!;
    let sx = 0;
    let wmax = 0;
    for (let q = 0; q < c.k; q++) {
      sx += Math.abs(x[q]!);
      wmax = Math.max(wmax, Math.abs(w[q]!));
    }
    const err = Math.abs(got[idx]! - want) / Math.max(sx * wmax, 1e-30);
    if (!(err <= tolerance)) ok = false;
    worst = Math.max(worst, Number.isNaN(err) ? Infinity : err);
    diff2 += (got[idx]! - want) ** 2;
    want2 += want ** 2;
  }
  // And as a whole: ‖got − want‖ / ‖want‖ (f32 sums of K terms: about 2^-24·√K; f16 outputs near 3e-4).
  const relative = Math.sqrt(diff2 / Math.max(want2, 1e-300));
  if (!(relative <= (tolerance >= 1e-3 ? 2e-3 : 5e-5))) ok = false;
  return { worst, ok, relative };
}

/** `w` replaces the case's weight (packed weights). */
export async function runLinear(gpu: GpuDevice, c: LinearCase, options: LinearOptions, w: GpuTensor = c.tw): Promise<LinearInfo> {
  const rec = new KernelRecorder(gpu);
  const info = await linear(rec, c.tx, w, null, c.out, options);
  await rec.submit();
  return info;
}

export async function captureLinear(gpu: GpuDevice, c: LinearCase, options: LinearOptions, w: GpuTensor = c.tw): Promise<{ replay: Replay; info: LinearInfo }> {
  const rec = new CapturingRecorder(gpu);
  const info = await linear(rec, c.tx, w, null, c.out, options);
  return { replay: prepareReplay(gpu, rec.captured), info };
}

/** The case's weight packed once for the packed subgroup-matrix kernel (as at load time: not timed). */
export async function packCase(gpu: GpuDevice, c: LinearCase): Promise<SgmatPackedWeight> {
  const rec = new KernelRecorder(gpu);
  const packed = await packForSubgroupMatrix(rec, c.tw);
  await rec.submit();
  return packed;
}

// ---- PyTorch ------------------------------------------------------------------------------

export interface TorchResult {
  readonly device?: string;
  readonly results: Record<string, { seconds: number; tflops?: number; gbps?: number }>;
}

/** Runs bench/gpu/matmul_torch.py with these arguments; null where python3/torch is missing. */
export function torchBaseline(args: readonly string[], log: (line: string) => void): TorchResult | null {
  try {
    // Without .gpu/run.sh's library path: its Debian libraries are for Dawn, not for PyTorch.
    const env: NodeJS.ProcessEnv = { ...process.env, PYTHONUNBUFFERED: '1' };
    delete env.LD_LIBRARY_PATH;
    const text = execFileSync('python3', ['bench/gpu/matmul_torch.py', ...args], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'], timeout: 300_000, env });
    return JSON.parse(text.trim().split('\n').pop()!) as TorchResult;
  } catch (error) {
    log(`PyTorch baseline unavailable: ${String((error as Error).message).split('\n')[0]}`);
    return null;
  }
}

export function row(metric: string, ours: number | null, baseline: number | null, unit: string): BenchRow {
  const r = (v: number | null) => (v === null ? null : Number(v.toPrecision(4)));
  return { metric, ours: r(ours), baseline: r(baseline), ratio: ours !== null && baseline ? r(ours / baseline) : null, unit };
}

export function printRows(rows: readonly BenchRow[], log: (line: string) => void): void {
  log('metric | ours | baseline | ratio | unit');
  for (const r of rows) log(`${r.metric} | ${r.ours ?? '—'} | ${r.baseline ?? '—'} | ${r.ratio ?? '—'} | ${r.unit}`);
}

// ---- the benchmark ------------------------------------------------------------------------

interface Variant {
  readonly metric: string;
  readonly activations: 'f32' | 'f16';
  readonly weights: LinearWeightDtype;
  readonly options: LinearOptions;
  /** Operands rounded to f16 by the kernel. */
  readonly f16Operands: boolean;
  readonly baselineKey: string;
  /** Weights packed once (packForSubgroupMatrix) before timing; the activations' packing is timed. */
  readonly packed?: boolean;
}

export async function run(options: BenchOptions = {}): Promise<BenchResult> {
  const log = options.log ?? ((line: string) => console.log(line));
  const set = await openDevices({ dawnFlags: BENCH_DAWN_FLAGS });
  const checks: string[] = [];
  const notes: string[] = [];
  const rows: BenchRow[] = [];
  try {
    const gpu = set.gpus[0];
    if (!gpu) throw new Error('no GPU');
    const info = (gpu.device as GPUDevice & { adapterInfo?: Record<string, unknown> }).adapterInfo;
    log(`${gpu.adapterName} (${gpu.backend}); features: ${[...gpu.device.features].filter((f) => /f16|subgroup|timestamp/.test(f)).join(', ')}`);
    log(`subgroups ${String(info?.subgroupMinSize)}..${String(info?.subgroupMaxSize)}; subgroupMatrixConfigs ${JSON.stringify(info?.subgroupMatrixConfigs ?? [])}`);
    log(`limits: maxStorageBufferBindingSize ${gpu.limits.maxStorageBufferBindingSize}, workgroup storage ${gpu.limits.maxComputeWorkgroupStorageSize}`);
    const sgmat = subgroupMatrixReady(gpu);
    const f16 = gpu.hasFeature('shader-f16');

    // 1. Correctness on the GPU of every path this machine has, before any timing.
    const checkShapes: Array<[number, number, number, LinearWeightDtype, 'f32' | 'f16', LinearOptions, boolean, boolean?]> = [];
    const sgmatOnly = options.sgmatOnly ?? false;
    if (f16 && !sgmatOnly) {
      checkShapes.push([77, 91, 200, 'bf16', 'f16', { path: 'f16' }, false], [1, 300, 512, 'q4_k', 'f16', { path: 'f16' }, false]);
    }
    if (sgmat) {
      for (const [m, n, k, wd, act, opt] of [
        [77, 91, 200, 'f16', 'f16', { sgmatTile: '64x64' }], [130, 260, 96, 'f16', 'f16', { sgmatTile: '128x128' }],
        [77, 91, 203, 'bf16', 'f32', {}], [200, 150, 256, 'q4_k', 'f16', {}], [64, 48, 96, 'f8_e4m3', 'f32', {}],
        [144, 272, 160, 'f16', 'f16', { sgmatDirect: true, sgmatTile: '128x256' }], [80, 96, 64, 'f16', 'f16', { sgmatDirect: true, sgmatTile: '64x64' }],
        [130, 270, 96, 'bf16', 'f16', { sgmatTile: '128x256' }],
        [256, 256, 512, 'f16', 'f16', { sgmatDirect: true, sgmatTile: '128x128' }],
      ] as Array<[number, number, number, LinearWeightDtype, 'f32' | 'f16', LinearOptions]>) {
        checkShapes.push([m, n, k, wd, act, { ...opt, path: 'subgroup-matrix' }, true]);
      }
      // Packed weights: every tile on an odd shape, then odd K, other weight and activation dtypes.
      for (const tile of Object.keys(SGMAT_PACKED_TILES) as SgmatPackedTile[]) {
        checkShapes.push([77, 91, 200, 'f16', 'f16', { path: 'subgroup-matrix', sgmatPackedTile: tile }, true, true]);
      }
      for (const [m, n, k, wd, act, opt] of [
        [144, 272, 160, 'f16', 'f16', {}], [130, 270, 96, 'bf16', 'f32', {}], [33, 300, 37, 'f32', 'f32', { sgmatPackedTile: '64x128-w4' }],
        [256, 256, 512, 'f16', 'f16', { sgmatPackedTile: '128x128' }], [300, 520, 1000, 'f16', 'f16', { sgmatPackedTile: '256x128' }],
      ] as Array<[number, number, number, LinearWeightDtype, 'f32' | 'f16', LinearOptions]>) {
        checkShapes.push([m, n, k, wd, act, { ...opt, path: 'subgroup-matrix' }, true, true]);
      }
    }
    if (!sgmatOnly) checkShapes.push([67, 45, 256, 'q6_k', 'f32', { path: 'f32' }, false]);
    let seed = 100;
    for (const [m, n, k, wd, act, opt, f16Operands, packed] of checkShapes) {
      const c = await makeCase(gpu, m, n, k, wd, act, seed++);
      let pw: SgmatPackedWeight | null = null;
      try {
        let ran: LinearInfo;
        try {
          if (packed) pw = await packCase(gpu, c);
          ran = await runLinear(gpu, c, opt, pw ?? c.tw);
        } catch (error) {
          const line = `FAIL ${JSON.stringify(opt)} ${wd} x ${act} m=${m} n=${n} k=${k}: ${String((error as Error).message)}`;
          checks.push(line);
          log(line);
          continue;
        }
        // f16 operands: the products are exact in f32; what is left is f32 accumulation and the f16 output.
        const tol = act === 'f16' || f16Operands ? 2e-3 : 1e-4;
        const r = await checkCase(c, m * n, tol, f16Operands);
        const line = `${r.ok ? 'ok  ' : 'FAIL'} ${ran.variant} (${ran.path}) ${wd} x ${act} m=${m} n=${n} k=${k}: worst error ${r.worst.toExponential(2)} of Σ|x|·max|w| (tolerance ${tol}), ‖Δ‖/‖ref‖ ${r.relative.toExponential(2)}`;
        checks.push(line);
        log(line);
      } finally {
        pw?.destroy();
        destroyCase(c);
      }
    }
    const failed = (variant: string) => checks.some((l) => l.startsWith('FAIL') && l.includes(variant));

    // 2. 4096³ (or 256³ with --quick).
    const size = options.quick ? 256 : 4096;
    const flops = 2 * size ** 3;
    const torch = options.baseline === false ? null : torchBaseline(['matmul', '--size', String(size)], log);
    if (torch?.device) notes.push(`PyTorch on ${torch.device}`);
    const variants: Variant[] = sgmatOnly ? [] : [
      { metric: `f32 matmul ${size}³ (f32 weights, tiled 128x128)`, activations: 'f32', weights: 'f32', options: { path: 'f32', tile: '128x128' }, f16Operands: false, baselineKey: 'f32' },
      { metric: `f32 matmul ${size}³ (f32 weights, tiled 128x128-k16)`, activations: 'f32', weights: 'f32', options: { path: 'f32', tile: '128x128-k16' }, f16Operands: false, baselineKey: 'f32' },
      { metric: `f32 matmul ${size}³ (f32 weights, tiled 64x64)`, activations: 'f32', weights: 'f32', options: { path: 'f32', tile: '64x64' }, f16Operands: false, baselineKey: 'f32' },
    ];
    if (f16 && !sgmatOnly) {
      variants.push({ metric: `f16-path matmul ${size}³ (f16 x, bf16 weights, f32 arithmetic)`, activations: 'f16', weights: 'bf16', options: { path: 'f16' }, f16Operands: false, baselineKey: 'bf16' });
    }
    if (sgmat) {
      const unpacked = sgmatOnly ? [['128x256', true]] as const
        : [['128x128', false], ['128x256', false], ['64x64', false], ['128x128', true], ['128x256', true], ['64x64', true]] as const;
      for (const [tile, direct] of unpacked) {
        variants.push({
          metric: `subgroup-matrix matmul ${size}³ (f16 x, f16 weights, ${tile} ${direct ? 'direct' : 'shared'})`, activations: 'f16', weights: 'f16',
          options: { path: 'subgroup-matrix', sgmatTile: tile, sgmatDirect: direct }, f16Operands: true, baselineKey: 'bf16',
        });
      }
      if (!sgmatOnly) {
        variants.push({
          metric: `subgroup-matrix matmul ${size}³ (f16 x, bf16 weights, 128x128 shared)`, activations: 'f16', weights: 'bf16',
          options: { path: 'subgroup-matrix', sgmatTile: '128x128' }, f16Operands: true, baselineKey: 'bf16',
        });
      }
      for (const tile of Object.keys(SGMAT_PACKED_TILES) as SgmatPackedTile[]) {
        variants.push({
          metric: `subgroup-matrix matmul ${size}³ (f16 x, f16 weights packed at load, packed ${tile}, x packing timed)`, activations: 'f16', weights: 'f16',
          options: { path: 'subgroup-matrix', sgmatPackedTile: tile }, f16Operands: true, baselineKey: 'bf16', packed: true,
        });
      }
    }
    const best: Record<string, number> = {};
    // One case per (weights, activations): generating 4096² random operands takes seconds here.
    const cases = new Map<string, LinearCase>();
    const packedCases = new Map<string, SgmatPackedWeight>();
    for (const v of variants) {
      const key = `${v.weights}/${v.activations}`;
      let c = cases.get(key);
      if (!c) cases.set(key, (c = await makeCase(gpu, size, size, size, v.weights, v.activations, seed++)));
      try {
        let w: GpuTensor = c.tw;
        if (v.packed) {
          let pw = packedCases.get(key);
          if (!pw) packedCases.set(key, (pw = await packCase(gpu, c)));
          w = pw;
        }
        const ran = await runLinear(gpu, c, v.options, w);
        const r = await checkCase(c, 256, v.activations === 'f16' || v.f16Operands ? 2e-3 : 1e-4, v.f16Operands);
        const line = `${r.ok ? 'ok  ' : 'FAIL'} ${ran.variant} ${size}³ sampled: worst error ${r.worst.toExponential(2)}, ‖Δ‖/‖ref‖ ${r.relative.toExponential(2)}`;
        checks.push(line);
        log(line);
        if (!r.ok || failed(ran.variant)) {
          rows.push(row(`${v.metric} [failed its check: not timed]`, null, null, 'TFLOP/s'));
          continue;
        }
        const { replay } = await captureLinear(gpu, c, v.options, w);
        const t = await timeAdaptive(gpu, [replay]);
        if (v.packed && replay.steps.length === 2) {
          // What the activations' packing pre-pass alone costs (it is part of t).
          const p = await timeAdaptive(gpu, [{ steps: [replay.steps[0]!], buffers: [] }]);
          log(`  of which packing x: ${(p.seconds * 1e6).toFixed(1)} µs`);
          notes.push(`${v.metric}: packing x alone ${(p.seconds * 1e6).toFixed(1)} µs of ${(t.seconds * 1e6).toFixed(1)} µs`);
        }
        for (const b of replay.buffers) b.destroy();
        const tflops = flops / t.seconds / 1e12;
        const base = torch?.results[`matmul_${v.baselineKey}`]?.tflops ?? null;
        rows.push(row(v.metric, tflops, base, 'TFLOP/s'));
        const family = v.metric.split(' ')[0]!;
        best[family] = Math.max(best[family] ?? 0, tflops);
        log(`${v.metric}: ${tflops.toFixed(2)} TFLOP/s (${(t.seconds * 1e3).toFixed(3)} ms, ${t.clock})`);
      } catch (error) {
        const line = `FAIL ${v.metric}: ${String((error as Error).message)}`;
        checks.push(line);
        log(line);
        rows.push(row(`${v.metric} [error: not timed]`, null, null, 'TFLOP/s'));
      }
    }
    for (const c of cases.values()) destroyCase(c);
    for (const p of packedCases.values()) p.destroy();
    const f32Base = torch?.results.matmul_f32?.tflops ?? null;
    const bf16Base = torch?.results.matmul_bf16?.tflops ?? null;
    if (!sgmatOnly) rows.push(row(`target: f32 ${size}³, best variant vs PyTorch f32 (TF32 off); needs ≥ 0.5`, best.f32 ?? null, f32Base, 'TFLOP/s'));
    if (sgmatOnly) notes.push('--sgmat-only: only the subgroup-matrix rows (and their checks) ran');
    if (sgmat) rows.push(row(`target: subgroup-matrix ${size}³, best variant vs PyTorch bf16; needs ≥ 0.25`, best['subgroup-matrix'] ?? null, bf16Base, 'TFLOP/s'));
    if (torch) {
      for (const [key, v] of Object.entries(torch.results)) rows.push(row(`PyTorch ${key}`, null, v.tflops ?? null, 'TFLOP/s'));
    }
    printRows(rows, log);
    const result: BenchResult = { device: `${gpu.adapterName} (${gpu.backend}, Dawn)`, rows, checks, notes };
    if (options.out) writeFileSync(options.out, `${JSON.stringify(result, null, 2)}\n`);
    return result;
  } finally {
    await set.close();
  }
}

if (process.argv[1]?.endsWith('matmul.js')) {
  const { values } = parseArgs({ options: { out: { type: 'string' }, quick: { type: 'boolean' }, 'no-baseline': { type: 'boolean' }, 'sgmat-only': { type: 'boolean' } } });
  await run({ out: values.out, quick: values.quick ?? false, baseline: !(values['no-baseline'] ?? false), sgmatOnly: values['sgmat-only'] ?? false });
}
