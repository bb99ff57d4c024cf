/**
 * Stream mode and the pipeline at real size: a Llama-3-8B-shaped model (bf16, random weights
 * that bench/gpu/stream_ref.py generated and saved as safetensors in the same session), decoded
 * with everything resident and with 25/50/75% of the layers stored on cpu in stream, pipeline
 * and auto mode, against transformers eager bf16 (resident) and accelerate's cpu offload at the
 * same splits, and our best host-to-GPU path against PyTorch's pinned copies. Logits of the
 * prompt are checked against a float32 reference (the same bf16 weights) before anything is timed.
 *
 * GPU machine (after `npm run build && bash scripts/gpu-pack.sh` here, carrying [".gpu", "dist"]):
 *   python3 bench/gpu/stream_ref.py --model-dir gpu-work/llama8b --json gpu-work/torch.json
 *   bash .gpu/run-lite.sh dist/bench/stream.js --model gpu-work/llama8b --torch gpu-work/torch.json --out $OUT/stream.json
 * Two GPUs (kind nvidia-h100-x2): --configs resident,two-gpu --rounds 7 loads the model on gpu:0
 * and split over gpu:0 and gpu:1 at once and decodes them in alternation (ratio of medians);
 * add --memory gpu:0=12gb,gpu:1=12gb for a model too large for one GPU's declared capacity.
 * Locally (SwiftShader): node dist/bench/stream.js --model test/fixtures/llama-tiny --tokens 4
 */
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { PerformanceObserver } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import { openDevices } from '../src/devices/open.ts';
import type { GpuDevice } from '../src/devices/gpu-device.ts';
import { openWeights } from '../src/formats/open-weights.ts';
import { openSafetensors } from '../src/formats/safetensors.ts';
import { linear } from '../src/kernels/ops/matmul.ts';
import { KernelRecorder } from '../src/kernels/recorder.ts';
import { emptyTensor } from '../src/kernels/tensor.ts';
import { loadModel } from '../src/runtime/model.ts';
import { decodeKernelProfile } from './profile.ts';
import type { ExecutionMode } from '../src/allocation/planner.ts';
import { BENCH_DAWN_FLAGS, printRows, row, type BenchRow } from './matmul.ts';

const { values: args } = parseArgs({
  options: {
    model: { type: 'string', default: 'gpu-work/llama8b' },
    torch: { type: 'string' },
    out: { type: 'string' },
    tokens: { type: 'string', default: '32' },
    splits: { type: 'string', default: '0.25,0.5,0.75' },
    modes: { type: 'string', default: 'stream,pipeline,auto' },
    /** resident, splits (cpu), two-gpu (pipeline over gpu:0 and gpu:1, when there are two), ring (the first split streamed through the ring). */
    configs: { type: 'string', default: 'resident,splits,two-gpu' },
    /** Declared capacities (e.g. gpu:0=12gb,gpu:1=12gb: a model too large for one GPU). */
    memory: { type: 'string' },
    /** Stop starting new configurations after this many seconds (the device tool's 10-minute limit). */
    'max-seconds': { type: 'string', default: '400' },
    /** After each configuration's timed run, GPU time per kernel of a decoded token (timestamp queries). */
    profile: { type: 'boolean', default: false },
    /** Stream mode's prefetch depths to run (comma-separated; default the library's). */
    prefetch: { type: 'string' },
    /** two-gpu: generate runs alternating between one GPU and two (the host's speed drifts between runs and machines). */
    rounds: { type: 'string', default: '5' },
  },
});
const log = (line: string) => console.log(line);
const tokens = Number(args.tokens);
const splits = args.splits!.split(',').map(Number);
const modes = args.modes!.split(',') as ExecutionMode[];

interface TorchJson {
  device?: string;
  torch_resident?: { decode_tok_s?: number; prefill_ms?: number };
  accelerate_offload?: Record<string, { decode_tok_s?: number; error?: string }>;
  pinned_h2d_GBps?: number;
  pageable_h2d_GBps?: number;
}
const torch: TorchJson = args.torch && existsSync(args.torch) ? JSON.parse(readFileSync(args.torch, 'utf8')) as TorchJson : {};

/** Host-visible (MAP_WRITE | COPY_SRC) → device copies, 256 MiB, best of 5: the link as WebGPU sees it. */
async function hostVisibleGBps(gpu: GpuDevice, bytes: number): Promise<number> {
  const src = await gpu.createBuffer({ label: 'bench.host', size: bytes, usage: GPUBufferUsage.MAP_WRITE | GPUBufferUsage.COPY_SRC, mappedAtCreation: true });
  src.buffer.unmap();
  const dst = await gpu.createBuffer({ label: 'bench.device', size: bytes, usage: GPUBufferUsage.COPY_DST | GPUBufferUsage.STORAGE });
  let best = Infinity;
  try {
    for (let i = 0; i < 6; i++) {
      const t = performance.now();
      const e = gpu.device.createCommandEncoder();
      e.copyBufferToBuffer(src.buffer, 0, dst.buffer, 0, bytes);
      gpu.device.queue.submit([e.finish()]);
      await gpu.device.queue.onSubmittedWorkDone();
      if (i > 0) best = Math.min(best, performance.now() - t);
    }
  } finally {
    src.destroy();
    dst.destroy();
  }
  return bytes / (best / 1000) / 1e9;
}

/**
 * Does Dawn overlap a copy with compute on its one queue? Times a 256 MiB host-visible copy, a
 * compute load of similar length (GEMVs over a 64 MiB weight), and both in one submit.
 */
async function overlap(gpu: GpuDevice): Promise<{ copyMs: number; computeMs: number; bothMs: number; overlapped: number }> {
  const bytes = 256 << 20;
  const src = await gpu.createBuffer({ label: 'bench.host', size: bytes, usage: GPUBufferUsage.MAP_WRITE | GPUBufferUsage.COPY_SRC, mappedAtCreation: true });
  src.buffer.unmap();
  const dst = await gpu.createBuffer({ label: 'bench.device', size: bytes, usage: GPUBufferUsage.COPY_DST | GPUBufferUsage.STORAGE });
  const w = await emptyTensor(gpu, [4096, 8192], 'bf16');
  const x = await emptyTensor(gpu, [1, 8192]);
  const y = await emptyTensor(gpu, [1, 4096]);
  const time = async (copy: boolean, compute: number) => {
    let best = Infinity;
    for (let i = 0; i < 4; i++) {
      const rec = new KernelRecorder(gpu);
      for (let j = 0; j < compute; j++) await linear(rec, x, w, null, y);
      const t = performance.now();
      if (copy) {
        const e = gpu.device.createCommandEncoder();
        e.copyBufferToBuffer(src.buffer, 0, dst.buffer, 0, bytes);
        gpu.device.queue.submit([e.finish()]);
      }
      await rec.submit({ wait: false });
      await gpu.device.queue.onSubmittedWorkDone();
      if (i > 0) best = Math.min(best, performance.now() - t);
    }
    return best;
  };
  try {
    const copyMs = await time(true, 0);
    // Size the compute to about the copy's length.
    const one = await time(false, 8);
    const n = Math.max(8, Math.round((8 * copyMs) / one));
    const computeMs = await time(false, n);
    const bothMs = await time(true, n);
    return { copyMs, computeMs, bothMs, overlapped: Math.max(0, Math.min(1, (copyMs + computeMs - bothMs) / Math.min(copyMs, computeMs))) };
  } finally {
    src.destroy();
    dst.destroy();
    w.destroy();
    x.destroy();
    y.destroy();
  }
}

/** max |got − ref| / max |ref| over the prompt's last-position logits. */
function logitsError(got: Float32Array, ref: Float32Array): number {
  let maxRef = 0;
  let maxErr = 0;
  for (let i = 0; i < ref.length; i++) {
    maxRef = Math.max(maxRef, Math.abs(ref[i]!));
    maxErr = Math.max(maxErr, Math.abs(got[i]! - ref[i]!));
  }
  return maxErr / maxRef;
}

const checkLine = (g: { tokens: number[] }, err: number, refTokens: number[] | null) => {
  const same = refTokens ? g.tokens.slice(0, refTokens.length).filter((t, i) => t === refTokens[i]).length : 0;
  return `prompt logits max|err|/max|ref| ${err.toExponential(2)} (f32 reference); greedy ${same}/${Math.min(refTokens?.length ?? 0, tokens)} tokens equal`;
};

/** Garbage-collection pauses so far (ms): a host-bound token loop slows down when V8 collects. */
let gcMs = 0;
new PerformanceObserver((list) => {
  for (const e of list.getEntries()) gcMs += e.duration;
}).observe({ entryTypes: ['gc'] });

const median = (xs: readonly number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

/**
 * The 2-GPU pipeline against one GPU, both loaded at once and decoded in alternation, `rounds`
 * times each: the host's speed drifts from run to run (on one H200 machine the same process
 * decoded the narrow model at 14.5 or 23.5 ms a token), so the ratio is of medians over
 * interleaved runs, never of two runs minutes apart.
 */
async function compareTwoGpus(set: Awaited<ReturnType<typeof openDevices>>, weights: Awaited<ReturnType<typeof openWeights>>, prompt: number[],
  refLogits: Float32Array | null, refTokens: number[] | null, rounds: number): Promise<{ row: BenchRow; checks: string[]; run: Record<string, unknown> }> {
  const checks: string[] = [];
  // With declared capacities too small for one GPU (--memory), the two GPUs run alone.
  const one = await loadModel(set, weights, { allocation: 'gpu:0,*', mode: 'stream' }).catch((error: Error) => {
    checks.push(`one GPU: ${error.name}: ${error.message.split('\n')[0]}`);
    log(checks.at(-1)!);
    return null;
  });
  const two = await loadModel(set, weights, { allocation: 'gpu:0,50%;gpu:1,*', mode: 'pipeline' });
  try {
    const models = { one, two };
    const rates: Record<'one' | 'two', number[]> = { one: [], two: [] };
    const host: Record<'one' | 'two', Array<Record<string, number>>> = { one: [], two: [] };
    for (const m of Object.values(models)) await m?.generate(prompt, 3);
    for (let r = 0; r < rounds; r++) {
      for (const key of ['one', 'two'] as const) {
        const model = models[key];
        if (!model) continue;
        const gc0 = gcMs;
        const g = await model.generate(prompt, tokens);
        await new Promise((resolve) => setImmediate(resolve)); // the observer's entries arrive a turn later
        const steps = tokens - 1;
        rates[key].push(steps / (g.ms.decode / 1000));
        host[key].push({ ...Object.fromEntries(Object.entries(g.decodeHostMs).map(([k, v]) => [k, v / steps])), gc: (gcMs - gc0) / tokens });
        if (r === 0 && refLogits) {
          checks.push(`${key === 'one' ? 'one GPU' : 'two GPUs, pipeline'}: ${checkLine(g, logitsError(g.stepLogits[0]!, refLogits), refTokens)}`);
          log(checks.at(-1)!);
        }
      }
      const perToken = (h?: Record<string, number>) => (h ? Object.entries(h).map(([k, v]) => `${k} ${v.toFixed(2)}`).join(', ') : '-');
      log(`round ${r + 1}: one GPU ${rates.one.at(-1)?.toFixed(2) ?? '-'} tok/s (${perToken(host.one.at(-1))}), two GPUs ${rates.two.at(-1)!.toFixed(2)} tok/s (${perToken(host.two.at(-1))})`);
    }
    const oneTokS = one ? median(rates.one) : null;
    const twoTokS = median(rates.two);
    return {
      row: row(`decode, two GPUs (gpu:0,50%;gpu:1,* pipeline) vs all on gpu:0, medians of ${rounds} alternating runs`, twoTokS, oneTokS, 'tokens/s'),
      checks,
      run: { label: 'two GPUs vs one, interleaved', rounds, tokens, oneTokS: rates.one, twoTokS: rates.two, perTokenHostMs: host, ratioOfMedians: oneTokS ? twoTokS / oneTokS : null,
        roundRatios: one ? rates.two.map((t, i) => t / rates.one[i]!) : null },
    };
  } finally {
    await two.unload();
    await one?.unload();
  }
}

async function main(): Promise<void> {
  const set = await openDevices({ dawnFlags: BENCH_DAWN_FLAGS, memory: args.memory });
  const started = performance.now();
  const wanted = new Set(args.configs!.split(','));
  const rows: BenchRow[] = [];
  const checks: string[] = [];
  const notes: string[] = [];
  const runs: Record<string, unknown>[] = [];
  try {
    const gpu = set.gpus[0];
    if (!gpu) throw new Error('no GPU');
    log(`${gpu.adapterName}; cpu ${set.cpu.cores} cores; model ${args.model}`);
    const refPath = join(args.model!, 'reference.safetensors');
    let prompt = [1, 2, 3, 4, 5, 6, 7, 8];
    let refLogits: Float32Array | null = null;
    let refTokens: number[] | null = null;
    if (existsSync(refPath)) {
      const ref = await openSafetensors(refPath);
      prompt = [...await ref.readF32('input_ids')];
      refLogits = await ref.readF32('logits_last');
      refTokens = [...await ref.readF32('greedy_tokens')];
      await ref.close();
    }
    const raw = await hostVisibleGBps(gpu, 256 << 20);
    rows.push(row('host-visible → GPU copy (256 MiB) vs PyTorch pinned', raw, torch.pinned_h2d_GBps ?? null, 'GB/s'));
    const ov = await overlap(gpu);
    notes.push(`copy/compute overlap on one queue: copy ${ov.copyMs.toFixed(2)} ms, compute ${ov.computeMs.toFixed(2)} ms, both in order ${ov.bothMs.toFixed(2)} ms → ${(ov.overlapped * 100).toFixed(0)}% of the shorter hidden`);
    log(notes.at(-1)!);

    const depths = args.prefetch ? args.prefetch.split(',').map(Number) : [undefined];
    const configs: Array<{ label: string; allocation: string; mode: ExecutionMode; split: number; prefetch?: number; hostVisibleBudget?: number }> = [
      ...(wanted.has('resident') ? [{ label: 'resident', allocation: 'gpu:0,*', mode: 'stream' as const, split: 0 }] : []),
      ...(wanted.has('splits') ? splits.flatMap((s) => modes.flatMap((mode) => (mode === 'pipeline' ? [undefined] : depths).map((prefetch) => ({
        label: `${mode} ${s * 100}% on cpu${prefetch ? `, prefetch ${prefetch}` : ''}`, allocation: `gpu:0,${Math.round((1 - s) * 100)}%;cpu,*`, mode, split: s, prefetch,
      })))) : []),
      // The fallback when host-visible memory runs out: the same split with none of it, through the ring.
      ...(wanted.has('ring') ? [{ label: `stream ${splits[0]! * 100}% on cpu, ring (no host-visible memory)`, allocation: `gpu:0,${Math.round((1 - splits[0]!) * 100)}%;cpu,*`, mode: 'stream' as const, split: splits[0]!, hostVisibleBudget: 0 }] : []),
    ];
    const weights = await openWeights(args.model!);
    try {
      let residentTokS = 0;
      for (const c of configs) {
        if ((performance.now() - started) / 1000 > Number(args['max-seconds'])) {
          notes.push(`not run (time budget): ${c.label}`);
          log(notes.at(-1)!);
          continue;
        }
        const t0 = performance.now();
        let model;
        try {
          model = await loadModel(set, weights, { allocation: c.allocation, mode: c.mode, tokensPerPass: 1, prefetch: c.prefetch, hostVisibleBudget: c.hostVisibleBudget });
        } catch (error) {
          notes.push(`${c.label}: ${String((error as Error).message).split('\n')[0]}`);
          log(notes.at(-1)!);
          continue;
        }
        const loadS = (performance.now() - t0) / 1000;
        try {
          const onCpu = model.plan.blocks.filter((b) => b.device === 'cpu').length;
          const how = model.plan.blocks.filter((b) => b.device === 'cpu').reduce((m, b) => ({ ...m, [b.exec]: (m[b.exec] ?? 0) + 1 }), {} as Record<string, number>);
          // Warm-up: the decode kernels (GEMV, attention over a cache) compile on their first token.
          await model.generate(prompt, 3);
          const g = await model.generate(prompt, tokens);
          const decodeTokS = (tokens - 1) / (g.ms.decode / 1000);
          const perToken = g.streamedBytes.decode / Math.max(1, tokens - 1);
          const streamGBps = perToken > 0 ? perToken / (g.ms.decode / 1000 / (tokens - 1)) / 1e9 : null;
          let err: number | null = null;
          if (refLogits) {
            err = logitsError(g.stepLogits[0]!, refLogits);
            checks.push(`${c.label}: ${checkLine(g, err, refTokens)}`);
            log(checks.at(-1)!);
          }
          if (c.split === 0) residentTokS = decodeTokS;
          const base = c.split === 0 ? torch.torch_resident?.decode_tok_s ?? null : torch.accelerate_offload?.[String(c.split)]?.decode_tok_s ?? null;
          rows.push(row(`decode, ${c.label} (${onCpu} blocks on cpu: ${JSON.stringify(how)}) vs ${c.split === 0 ? 'transformers eager bf16' : 'accelerate cpu offload'}`, decodeTokS, base, 'tokens/s'));
          if (streamGBps !== null) rows.push(row(`effective streaming, ${c.label} vs PyTorch pinned copy`, streamGBps, torch.pinned_h2d_GBps ?? null, 'GB/s'));
          runs.push({ ...c, kernels: undefined as unknown, loadS, prefillMs: g.ms.prefill, decodeTokS, decodeHostMs: g.decodeHostMs, streamedPerToken: perToken, streamGBps, logitsErr: err, tokens: g.tokens, blocksOnCpu: onCpu, exec: how, vsResident: residentTokS ? decodeTokS / residentTokS : null });
          const perTok = (x: number) => (x / Math.max(1, tokens - 1)).toFixed(2);
          if (args.profile) {
            const kernels = await decodeKernelProfile(model, prompt);
            runs.at(-1)!.kernels = kernels;
            const gpuMs = kernels.reduce((a, k) => a + k.ms, 0);
            log(`${c.label}: GPU time of a decoded token ${gpuMs.toFixed(2)} ms: ${kernels.slice(0, 8).map((k) => `${k.label} ${k.ms.toFixed(2)} ms (${k.dispatches})`).join(', ')}`);
          }
          log(`${c.label}: load ${loadS.toFixed(1)} s, prefill ${g.ms.prefill.toFixed(0)} ms, decode ${decodeTokS.toFixed(2)} tok/s${streamGBps ? `, streaming ${streamGBps.toFixed(1)} GB/s` : ''}; per token ${perTok(g.ms.decode)} ms, of which host recording ${perTok(g.decodeHostMs.record)} ms and submitting ${perTok(g.decodeHostMs.submit)} ms`);
        } finally {
          await model.unload();
        }
      }
      if (wanted.has('two-gpu') && set.gpus.length >= 2) {
        const two = await compareTwoGpus(set, weights, prompt, refLogits, refTokens, Number(args.rounds));
        rows.push(two.row);
        checks.push(...two.checks);
        runs.push(two.run);
      }
    } finally {
      await weights.close();
    }
    printRows(rows, log);
    const result = { device: gpu.adapterName, kind: process.env.DEVICE_KIND ?? null, torch, rows, checks, notes, runs };
    if (args.out) writeFileSync(args.out, `${JSON.stringify(result, null, 2)}\n`);
  } finally {
    await set.close();
  }
}

await main();
