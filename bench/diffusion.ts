/**
 * Diffusion at real size (issue 9, point 4): one full-width FLUX.1 transformer (24 heads × 128,
 * joint_attention_dim 4096, pooled 768, RoPE axes 16/56/56) cut to one double-stream and one
 * single-stream block, run on a 1024² image's latents (64×64 = 4096 image tokens + 512 text
 * tokens), and FLUX's VAE decoding 16×128×128 latents to a 3×1024×1024 image. bf16 random
 * weights that bench/gpu/diffusion_ref.py built and saved (diffusers folders) in the same
 * session; its float32 outputs over the same bf16 weights are the reference our outputs are
 * checked against before anything is timed, and its bf16 eager timings are the baseline.
 *
 * GPU machine (after `npm run build && bash scripts/gpu-pack.sh` here, carrying [".gpu", "dist"]):
 *   python3 bench/gpu/diffusion_ref.py --out-dir gpu-work/diffusion
 *   bash .gpu/run-lite.sh dist/bench/diffusion.js --dir gpu-work/diffusion --out $OUT/diffusion.json
 * Locally (SwiftShader, no PyTorch): small random models written here, ours only, no check:
 *   node dist/bench/diffusion.js --synthetic
 * (`--synthetic --scale full` writes the real-size models from JavaScript: ours-only timings
 * on a GPU machine where the Python side failed.)
 *
 * Folder layout (both sides): <dir>/torch.json, <dir>/flux/ and <dir>/vae/, each a diffusers
 * folder (config.json, diffusion_pytorch_model.safetensors) plus expected.safetensors: the
 * inputs (float32, named as diffusers' arguments) and the reference output (`sample`,
 * `decoded`), as in test/fixtures.
 *
 * Timings: ours is the wall time of `forward()` (inputs uploaded, output read back), median
 * of --iters after --warmup calls; PyTorch's is CUDA-event time of the forward on GPU-resident
 * inputs (median), and also wall time with the host copies (inputs from pageable CPU memory,
 * output back to the CPU), the like-for-like figure. Rows are milliseconds per forward with
 * ratio = PyTorch ms / ours: above 1 means ours is faster.
 */
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { openDevices } from '../src/devices/open.ts';
import { openWeights } from '../src/formats/open-weights.ts';
import { writeSafetensorsFile, type TensorToWrite } from '../src/formats/safetensors-writer.ts';
import type { WeightSet } from '../src/formats/weights.ts';
import { kernelProfile, resetKernelProfile, setKernelProfiling } from '../src/kernels/profiler.ts';
import { prng } from '../src/kernels/reference/matmul-data.ts';
import type { HostTensor } from '../src/models/program.ts';
import { readHostTensors } from '../src/runtime/host-tensors.ts';
import { loadModel, type LoadedModel } from '../src/runtime/model.ts';
import { BENCH_DAWN_FLAGS, printRows, type BenchRow } from './matmul.ts';

// ---- model shapes (diffusers' state-dict names), for --synthetic ---------------------------

export interface FluxShape {
  readonly inChannels: number;
  readonly heads: number;
  readonly headDim: number;
  readonly jointAttentionDim: number;
  readonly pooledProjectionDim: number;
  readonly guidanceEmbeds: boolean;
  readonly axesDimsRope: readonly number[];
  readonly numLayers: number;
  readonly numSingleLayers: number;
  /** The image's side in pixels: (side / 16)² image tokens (8× VAE, 2×2 patches). */
  readonly image: number;
  readonly textTokens: number;
}

export interface VaeShape {
  readonly inChannels: number;
  readonly outChannels: number;
  readonly blockOutChannels: readonly number[];
  readonly layersPerBlock: number;
  readonly latentChannels: number;
  readonly groups: number;
  readonly quantConv: boolean;
  readonly postQuantConv: boolean;
  /** The decoded image's side: latents are side / 2^(levels − 1). */
  readonly image: number;
}

/** FLUX.1's width, one double and one single block, a 1024² image, 512 T5 tokens. */
export const FLUX_FULL: FluxShape = {
  inChannels: 64, heads: 24, headDim: 128, jointAttentionDim: 4096, pooledProjectionDim: 768, guidanceEmbeds: true,
  axesDimsRope: [16, 56, 56], numLayers: 1, numSingleLayers: 1, image: 1024, textTokens: 512,
};
/** FLUX.1's VAE (black-forest-labs/FLUX.1-dev vae/config.json) decoding to 1024². */
export const VAE_FULL: VaeShape = {
  inChannels: 3, outChannels: 3, blockOutChannels: [128, 256, 512, 512], layersPerBlock: 2, latentChannels: 16, groups: 32,
  quantConv: false, postQuantConv: false, image: 1024,
};
/** The same structure, small enough for SwiftShader. */
export const FLUX_SMALL: FluxShape = {
  inChannels: 16, heads: 2, headDim: 32, jointAttentionDim: 48, pooledProjectionDim: 24, guidanceEmbeds: true,
  axesDimsRope: [8, 12, 12], numLayers: 1, numSingleLayers: 1, image: 128, textTokens: 16,
};
export const VAE_SMALL: VaeShape = {
  inChannels: 3, outChannels: 3, blockOutChannels: [32, 32, 64, 64], layersPerBlock: 2, latentChannels: 16, groups: 32,
  quantConv: false, postQuantConv: false, image: 64,
};

type Shapes = Array<[string, number[]]>;

/** FluxTransformer2DModel's tensors (patch_size 1, out_channels = in_channels). */
export function fluxTensorShapes(c: FluxShape): Shapes {
  const D = c.heads * c.headDim;
  const out: Shapes = [];
  const lin = (name: string, o: number, i: number) => out.push([`${name}.weight`, [o, i]], [`${name}.bias`, [o]]);
  lin('x_embedder', D, c.inChannels);
  lin('context_embedder', D, c.jointAttentionDim);
  const embedders = ['timestep_embedder', ...(c.guidanceEmbeds ? ['guidance_embedder'] : [])];
  for (const e of embedders) {
    lin(`time_text_embed.${e}.linear_1`, D, 256);
    lin(`time_text_embed.${e}.linear_2`, D, D);
  }
  lin('time_text_embed.text_embedder.linear_1', D, c.pooledProjectionDim);
  lin('time_text_embed.text_embedder.linear_2', D, D);
  for (let i = 0; i < c.numLayers; i++) {
    const p = `transformer_blocks.${i}`;
    lin(`${p}.norm1.linear`, 6 * D, D);
    lin(`${p}.norm1_context.linear`, 6 * D, D);
    for (const n of ['to_q', 'to_k', 'to_v', 'add_q_proj', 'add_k_proj', 'add_v_proj', 'to_out.0', 'to_add_out']) lin(`${p}.attn.${n}`, D, D);
    for (const n of ['norm_q', 'norm_k', 'norm_added_q', 'norm_added_k']) out.push([`${p}.attn.${n}.weight`, [c.headDim]]);
    for (const f of ['ff', 'ff_context']) {
      lin(`${p}.${f}.net.0.proj`, 4 * D, D);
      lin(`${p}.${f}.net.2`, D, 4 * D);
    }
  }
  for (let i = 0; i < c.numSingleLayers; i++) {
    const p = `single_transformer_blocks.${i}`;
    lin(`${p}.norm.linear`, 3 * D, D);
    lin(`${p}.proj_mlp`, 4 * D, D);
    lin(`${p}.proj_out`, D, 5 * D);
    for (const n of ['to_q', 'to_k', 'to_v']) lin(`${p}.attn.${n}`, D, D);
    for (const n of ['norm_q', 'norm_k']) out.push([`${p}.attn.${n}.weight`, [c.headDim]]);
  }
  lin('norm_out.linear', 2 * D, D);
  lin('proj_out', c.inChannels, D);
  return out;
}

/** AutoencoderKL's tensors (DownEncoderBlock2D / UpDecoderBlock2D levels, mid attention). */
export function vaeTensorShapes(c: VaeShape): Shapes {
  const out: Shapes = [];
  const b = c.blockOutChannels;
  const last = b[b.length - 1]!;
  const conv = (name: string, o: number, i: number, k: number) => out.push([`${name}.weight`, [o, i, k, k]], [`${name}.bias`, [o]]);
  const norm = (name: string, ch: number) => out.push([`${name}.weight`, [ch]], [`${name}.bias`, [ch]]);
  const lin = (name: string, o: number, i: number) => out.push([`${name}.weight`, [o, i]], [`${name}.bias`, [o]]);
  const resnet = (p: string, cin: number, cout: number) => {
    norm(`${p}.norm1`, cin);
    conv(`${p}.conv1`, cout, cin, 3);
    norm(`${p}.norm2`, cout);
    conv(`${p}.conv2`, cout, cout, 3);
    if (cin !== cout) conv(`${p}.conv_shortcut`, cout, cin, 1);
  };
  const mid = (half: string) => {
    resnet(`${half}.mid_block.resnets.0`, last, last);
    norm(`${half}.mid_block.attentions.0.group_norm`, last);
    for (const n of ['to_q', 'to_k', 'to_v', 'to_out.0']) lin(`${half}.mid_block.attentions.0.${n}`, last, last);
    resnet(`${half}.mid_block.resnets.1`, last, last);
  };
  conv('encoder.conv_in', b[0]!, c.inChannels, 3);
  let cin = b[0]!;
  b.forEach((cout, i) => {
    for (let j = 0; j < c.layersPerBlock; j++) resnet(`encoder.down_blocks.${i}.resnets.${j}`, j === 0 ? cin : cout, cout);
    if (i < b.length - 1) conv(`encoder.down_blocks.${i}.downsamplers.0.conv`, cout, cout, 3);
    cin = cout;
  });
  mid('encoder');
  norm('encoder.conv_norm_out', last);
  conv('encoder.conv_out', 2 * c.latentChannels, last, 3);
  if (c.quantConv) conv('quant_conv', 2 * c.latentChannels, 2 * c.latentChannels, 1);
  if (c.postQuantConv) conv('post_quant_conv', c.latentChannels, c.latentChannels, 1);
  conv('decoder.conv_in', last, c.latentChannels, 3);
  mid('decoder');
  const rev = [...b].reverse();
  let prev = rev[0]!;
  rev.forEach((cout, i) => {
    for (let j = 0; j < c.layersPerBlock + 1; j++) resnet(`decoder.up_blocks.${i}.resnets.${j}`, j === 0 ? prev : cout, cout);
    if (i < rev.length - 1) conv(`decoder.up_blocks.${i}.upsamplers.0.conv`, cout, cout, 3);
    prev = cout;
  });
  norm('decoder.conv_norm_out', b[0]!);
  conv('decoder.conv_out', c.outChannels, b[0]!, 3);
  return out;
}

function fluxConfigJson(c: FluxShape): Record<string, unknown> {
  return {
    _class_name: 'FluxTransformer2DModel', patch_size: 1, in_channels: c.inChannels, out_channels: null, num_layers: c.numLayers,
    num_single_layers: c.numSingleLayers, attention_head_dim: c.headDim, num_attention_heads: c.heads,
    joint_attention_dim: c.jointAttentionDim, pooled_projection_dim: c.pooledProjectionDim, guidance_embeds: c.guidanceEmbeds,
    axes_dims_rope: [...c.axesDimsRope],
  };
}

function vaeConfigJson(c: VaeShape): Record<string, unknown> {
  return {
    _class_name: 'AutoencoderKL', in_channels: c.inChannels, out_channels: c.outChannels,
    down_block_types: c.blockOutChannels.map(() => 'DownEncoderBlock2D'), up_block_types: c.blockOutChannels.map(() => 'UpDecoderBlock2D'),
    block_out_channels: [...c.blockOutChannels], layers_per_block: c.layersPerBlock, act_fn: 'silu', latent_channels: c.latentChannels,
    norm_num_groups: c.groups, sample_size: c.image, scaling_factor: 0.3611, shift_factor: 0.1159, latents_mean: null, latents_std: null,
    force_upcast: true, use_quant_conv: c.quantConv, use_post_quant_conv: c.postQuantConv, mid_block_add_attention: true,
  };
}

/**
 * Random bf16 values: weights uniform in ±1/√fan_in (PyTorch's default Linear/Conv2d bound),
 * norm weights 1 ± 0.1, norm biases ±0.1. bf16 by truncating float32 (the high halves).
 */
function randomBf16(name: string, shape: readonly number[], next: () => number, normBias: boolean): Uint16Array {
  const n = shape.reduce((a, b) => a * b, 1);
  const f = new Float32Array(n);
  if (shape.length === 1 && name.endsWith('.weight')) {
    for (let i = 0; i < n; i++) f[i] = 1 + 0.1 * (next() * 2 - 1);
  } else if (normBias) {
    for (let i = 0; i < n; i++) f[i] = 0.1 * (next() * 2 - 1);
  } else {
    // A bias's fan-in is its weight's: not known here; ±1/√(its length) is close enough.
    const fanIn = shape.length === 1 ? shape[0]! : shape.slice(1).reduce((a, b) => a * b, 1);
    const bound = 1 / Math.sqrt(fanIn);
    for (let i = 0; i < n; i++) f[i] = bound * (next() * 2 - 1);
  }
  const halves = new Uint16Array(f.buffer);
  const out = new Uint16Array(n);
  for (let i = 0; i < n; i++) out[i] = halves[2 * i + 1]!;
  return out;
}

function randomF32(shape: readonly number[], next: () => number, scale = 1): Float32Array {
  const f = new Float32Array(shape.reduce((a, b) => a * b, 1));
  for (let i = 0; i < f.length; i++) f[i] = scale * (next() * 2 - 1);
  return f;
}

async function writeModel(folder: string, shapes: Shapes, config: Record<string, unknown>, inputs: Map<string, HostTensor>, seed: number): Promise<number> {
  mkdirSync(folder, { recursive: true });
  const next = prng(seed);
  const names = new Set(shapes.map(([n]) => n));
  const tensors: TensorToWrite[] = shapes.map(([name, shape]) => {
    const base = name.replace(/\.bias$/, '.weight');
    const normBias = name.endsWith('.bias') && shape.length === 1 && names.has(base) && shapes.find(([n]) => n === base)![1].length === 1;
    return { name, dtype: 'BF16', shape, data: randomBf16(name, shape, next, normBias) };
  });
  await writeSafetensorsFile(join(folder, 'diffusion_pytorch_model.safetensors'), tensors);
  writeFileSync(join(folder, 'config.json'), `${JSON.stringify(config, null, 2)}\n`);
  await writeSafetensorsFile(join(folder, 'expected.safetensors'),
    [...inputs].map(([name, t]) => ({ name, dtype: 'F32' as const, shape: t.shape, data: t.data })));
  return tensors.reduce((s, t) => s + t.data.byteLength, 0);
}

/** FLUX's inputs for an image of c.image²: what FluxPipeline gives the transformer. */
export function fluxInputs(c: FluxShape, seed: number): Map<string, HostTensor> {
  const next = prng(seed);
  const side = c.image / 16;
  const tokens = side * side;
  const imgIds = new Float32Array(tokens * 3);
  for (let r = 0; r < side; r++) {
    for (let col = 0; col < side; col++) {
      imgIds[(r * side + col) * 3 + 1] = r;
      imgIds[(r * side + col) * 3 + 2] = col;
    }
  }
  return new Map<string, HostTensor>([
    ['hidden_states', { data: randomF32([1, tokens, c.inChannels], next, 1.7), shape: [1, tokens, c.inChannels] }],
    ['encoder_hidden_states', { data: randomF32([1, c.textTokens, c.jointAttentionDim], next, 1.7), shape: [1, c.textTokens, c.jointAttentionDim] }],
    ['pooled_projections', { data: randomF32([1, c.pooledProjectionDim], next, 1.7), shape: [1, c.pooledProjectionDim] }],
    ['timestep', { data: new Float32Array([0.5]), shape: [1] }],
    ['img_ids', { data: imgIds, shape: [tokens, 3] }],
    ['txt_ids', { data: new Float32Array(c.textTokens * 3), shape: [c.textTokens, 3] }],
    ...(c.guidanceEmbeds ? [['guidance', { data: new Float32Array([3.5]), shape: [1] }] as [string, HostTensor]] : []),
  ]);
}

export function vaeInputs(c: VaeShape, seed: number): Map<string, HostTensor> {
  const side = c.image / 2 ** (c.blockOutChannels.length - 1);
  const shape = [1, c.latentChannels, side, side];
  return new Map([['latents', { data: randomF32(shape, prng(seed), 1.7), shape }]]);
}

// ---- FLOPs (multiply-adds × 2) of one forward, for TFLOP/s context --------------------------

/** FLUX forward: the linear layers over their tokens and the two attentions (modulation and norms left out). */
export function fluxFlops(cfg: Record<string, unknown>, imageTokens: number, textTokens: number): number {
  const D = Number(cfg.num_attention_heads) * Number(cfg.attention_head_dim);
  const inCh = Number(cfg.in_channels);
  const joint = Number(cfg.joint_attention_dim);
  const L = imageTokens + textTokens;
  const attention = 4 * L * L * D;
  const double = 2 * 12 * D * D * (imageTokens + textTokens) + attention;
  const single = 2 * 12 * D * D * L + attention;
  const io = 2 * imageTokens * inCh * D * 2 + 2 * textTokens * joint * D;
  return Number(cfg.num_layers) * double + Number(cfg.num_single_layers) * single + io;
}

/** AutoencoderKL decode from latents of side `latent`: every conv, the mid attention and its projections. */
export function vaeDecodeFlops(cfg: Record<string, unknown>, latent: number): number {
  const b = (cfg.block_out_channels as number[]) ?? [];
  const layers = Number(cfg.layers_per_block ?? 1);
  const L = Number(cfg.latent_channels ?? 4);
  const last = b[b.length - 1]!;
  const conv = (cin: number, cout: number, k: number, side: number) => 2 * cin * cout * k * k * side * side;
  const resnet = (cin: number, cout: number, side: number) => conv(cin, cout, 3, side) + conv(cout, cout, 3, side) + (cin !== cout ? conv(cin, cout, 1, side) : 0);
  let side = latent;
  let f = (cfg.use_post_quant_conv === false ? 0 : conv(L, L, 1, side)) + conv(L, last, 3, side);
  f += 2 * resnet(last, last, side) + 4 * side ** 4 * last + 8 * side * side * last * last;
  const rev = [...b].reverse();
  let prev = rev[0]!;
  rev.forEach((cout, i) => {
    for (let j = 0; j < layers + 1; j++) f += resnet(j === 0 ? prev : cout, cout, side);
    if (i < rev.length - 1) {
      side *= 2;
      f += conv(cout, cout, 3, side);
    }
    prev = cout;
  });
  return f + conv(b[0]!, Number(cfg.out_channels ?? 3), 3, side);
}

// ---- the benchmark ------------------------------------------------------------------------

interface PartSpec {
  readonly key: 'flux' | 'vae';
  readonly entry: 'forward' | 'decode';
  readonly output: 'sample' | 'decoded';
  readonly what: (config: Record<string, unknown>, inputs: Map<string, HostTensor>) => string;
  readonly flops: (config: Record<string, unknown>, inputs: Map<string, HostTensor>) => number;
}

const PARTS: readonly PartSpec[] = [
  {
    key: 'flux', entry: 'forward', output: 'sample',
    what: (cfg, inputs) => {
      const img = inputs.get('hidden_states')?.shape[1] ?? 0;
      const txt = inputs.get('encoder_hidden_states')?.shape[1] ?? 0;
      const side = Math.round(Math.sqrt(img)) * 16;
      return `FLUX.1 width ${Number(cfg.num_attention_heads) * Number(cfg.attention_head_dim)}: ${cfg.num_layers} double + ${cfg.num_single_layers} single block`
        + ` + embedders/norm_out/proj_out, ${side}² image (${img} image + ${txt} text tokens)`;
    },
    flops: (cfg, inputs) => fluxFlops(cfg, inputs.get('hidden_states')?.shape[1] ?? 0, inputs.get('encoder_hidden_states')?.shape[1] ?? 0),
  },
  {
    key: 'vae', entry: 'decode', output: 'decoded',
    what: (cfg, inputs) => {
      const s = inputs.get('latents')?.shape ?? [];
      const side = (s[2] ?? 0) * 2 ** ((cfg.block_out_channels as unknown[] | undefined)?.length ?? 4) / 2;
      return `VAE decode (block_out_channels ${JSON.stringify(cfg.block_out_channels)}) latents ${s.slice(1).join('×')} → 3×${side}×${side}`;
    },
    flops: (cfg, inputs) => vaeDecodeFlops(cfg, inputs.get('latents')?.shape[2] ?? 0),
  },
];

interface TorchPart {
  readonly error?: string;
  readonly bf16_ms?: number;
  readonly e2e_ms?: number;
  readonly bf16_rel_err?: number;
  readonly double_block_ms?: number;
  readonly single_block_ms?: number;
  readonly embed_ms?: number;
  readonly peak_gpu_GiB?: number;
}
interface TorchJson {
  readonly device?: string;
  readonly torch?: string;
  readonly diffusers?: string;
  readonly flux?: TorchPart;
  readonly vae?: TorchPart;
}

/** A milliseconds row: ratio = PyTorch ms / ours, so above 1 means ours is faster. */
function msRow(metric: string, ours: number | null, torchMs: number | null | undefined): BenchRow {
  const r = (v: number | null | undefined) => (v === null || v === undefined ? null : Number(v.toPrecision(4)));
  return { metric, ours: r(ours), baseline: r(torchMs), ratio: ours && torchMs ? r(torchMs / ours) : null, unit: 'ms (ratio = PyTorch/ours, >1 ours faster)' };
}

const median = (xs: readonly number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length === 0 ? NaN : s.length % 2 ? s[(s.length - 1) >> 1]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};

function relErr(got: HostTensor, want: HostTensor): { rel: number; maxErr: number; maxRef: number; nonFinite: number } {
  if (got.data.length !== want.data.length) throw new RangeError(`output has ${got.data.length} values [${got.shape.join(', ')}], the reference ${want.data.length} [${want.shape.join(', ')}]`);
  let maxErr = 0;
  let maxRef = 0;
  let nonFinite = 0;
  for (let i = 0; i < want.data.length; i++) {
    const g = got.data[i]!;
    if (!Number.isFinite(g)) nonFinite++;
    maxRef = Math.max(maxRef, Math.abs(want.data[i]!));
    maxErr = Math.max(maxErr, Math.abs(g - want.data[i]!));
  }
  return { rel: nonFinite ? Infinity : maxErr / maxRef, maxErr, maxRef, nonFinite };
}

async function main(): Promise<void> {
  const { values: args } = parseArgs({
    options: {
      dir: { type: 'string' },
      out: { type: 'string' },
      parts: { type: 'string', default: 'flux,vae' },
      /** Timed forwards per part (median); fewer when --max-seconds runs short. */
      iters: { type: 'string', default: '10' },
      /** Untimed forwards before timing, the first included (it compiles the pipelines). */
      warmup: { type: 'string', default: '2' },
      /** max|ours − ref| / max|ref| allowed (bf16 weights, f32 reference over the same weights). */
      tolerance: { type: 'string', default: '2e-2' },
      /** Stop timing and skip parts past this many seconds (the device tool's 10-minute call, shared with Python). */
      'max-seconds': { type: 'string', default: '330' },
      /** Write random models here first (no PyTorch, no reference check). */
      synthetic: { type: 'boolean', default: false },
      /** --synthetic's size: small (SwiftShader) or full (the real shapes). */
      scale: { type: 'string', default: 'small' },
      /** With --synthetic: write the models and stop. */
      'write-only': { type: 'boolean', default: false },
      /** Skip the per-kernel GPU time profile (one extra forward per part, timestamp queries). */
      'no-profile': { type: 'boolean', default: false },
      memory: { type: 'string' },
    },
  });
  const t0 = performance.now();
  const since = () => (performance.now() - t0) / 1000;
  const log = (line: string) => console.log(`[diffusion ${since().toFixed(1).padStart(6)}s] ${line}`);
  const maxSeconds = Number(args['max-seconds']);
  const iters = Math.max(1, Number(args.iters));
  const warmup = Math.max(1, Number(args.warmup));
  const tolerance = Number(args.tolerance);
  const wanted = new Set(args.parts!.split(','));
  const dir = resolve(args.dir ?? (args.synthetic ? 'gpu-work/diffusion-synthetic' : 'gpu-work/diffusion'));
  const phases: Record<string, number> = {};
  const phase = (name: string, start: number) => {
    phases[name] = Number(((performance.now() - start) / 1000).toFixed(2));
    log(`${name}: ${phases[name]} s`);
  };

  if (args.synthetic) {
    const full = args.scale === 'full';
    const flux = full ? FLUX_FULL : FLUX_SMALL;
    const vae = full ? VAE_FULL : VAE_SMALL;
    const s = performance.now();
    if (wanted.has('flux')) {
      const bytes = await writeModel(join(dir, 'flux'), fluxTensorShapes(flux), fluxConfigJson(flux), fluxInputs(flux, 1), 11);
      log(`synthetic FLUX (${args.scale}): ${(bytes / 2 ** 20).toFixed(1)} MiB bf16 in ${join(dir, 'flux')}`);
    }
    if (wanted.has('vae')) {
      const bytes = await writeModel(join(dir, 'vae'), vaeTensorShapes(vae), vaeConfigJson(vae), vaeInputs(vae, 2), 12);
      log(`synthetic VAE (${args.scale}): ${(bytes / 2 ** 20).toFixed(1)} MiB bf16 in ${join(dir, 'vae')}`);
    }
    phase('write synthetic models', s);
    if (args['write-only']) return;
  }

  const torchPath = join(dir, 'torch.json');
  const torch: TorchJson = !args.synthetic && existsSync(torchPath) ? JSON.parse(readFileSync(torchPath, 'utf8')) as TorchJson : {};
  if (!args.synthetic && !existsSync(torchPath)) log(`no ${torchPath}: no PyTorch baseline`);

  let s = performance.now();
  const set = await openDevices({ dawnFlags: BENCH_DAWN_FLAGS, memory: args.memory });
  phase('open devices', s);
  const rows: BenchRow[] = [];
  const checks: string[] = [];
  const notes: string[] = [];
  const parts: Record<string, unknown> = {};
  let failed = false;
  const note = (line: string) => {
    notes.push(line);
    log(line);
  };
  try {
    const gpu = set.gpus[0];
    if (!gpu) throw new Error('no GPU');
    log(`${gpu.adapterName} (${gpu.backend}); maxStorageBufferBindingSize ${gpu.limits.maxStorageBufferBindingSize}, maxBufferSize ${gpu.limits.maxBufferSize}; models in ${dir}`);
    if (torch.device) log(`PyTorch ${torch.torch ?? '?'} / diffusers ${torch.diffusers ?? '?'} on ${torch.device}`);

    for (const spec of PARTS) {
      if (!wanted.has(spec.key)) continue;
      const folder = join(dir, spec.key);
      const tp = torch[spec.key];
      if (tp?.error) note(`${spec.key}: the PyTorch side reported an error: ${tp.error.split('\n').filter(Boolean).at(-1)}`);
      if (!existsSync(join(folder, 'config.json')) || !existsSync(join(folder, 'expected.safetensors'))) {
        note(`${spec.key}: not run (no model/inputs in ${folder})`);
        failed = true;
        continue;
      }
      if (since() > maxSeconds) {
        note(`${spec.key}: not run (time budget of ${maxSeconds} s spent)`);
        continue;
      }
      const rec: Record<string, unknown> = {};
      parts[spec.key] = rec;
      const config = JSON.parse(readFileSync(join(folder, 'config.json'), 'utf8')) as Record<string, unknown>;
      const io = await readHostTensors(join(folder, 'expected.safetensors'));
      const what = spec.what(config, io);
      rec.what = what;
      log(`${spec.key}: ${what}`);
      let model: LoadedModel | null = null;
      let weights: WeightSet | null = null;
      try {
        weights = await openWeights(folder);
        s = performance.now();
        model = await loadModel(set, weights, { allocation: 'gpu:0,*' });
        phase(`${spec.key}: load`, s);
        const entry = model.entries[spec.entry];
        if (!entry) throw new Error(`${model.definition.family} has no entry ${spec.entry}`);
        const inputs = new Map([...io].filter(([name]) => entry.inputs.includes(name) || entry.optionalInputs.includes(name)));
        const unused = [...io.keys()].filter((n) => !inputs.has(n) && n !== spec.output);
        if (unused.length) note(`${spec.key}: tensors in expected.safetensors that ${spec.entry} neither takes nor gives: ${unused.join(', ')}`);
        rec.family = model.definition.family;
        rec.blocks = model.plan.blocks.map((b) => b.name);
        rec.inputs = Object.fromEntries([...inputs].map(([n, t]) => [n, t.shape]));
        log(`${spec.key}: ${model.definition.family}, blocks ${model.plan.blocks.map((b) => `${b.name}@${b.device}`).join(' ')}`);

        // The first call compiles the pipelines; its output is the one checked.
        s = performance.now();
        const first = await model.forward(inputs, spec.entry);
        rec.firstMs = performance.now() - s;
        phase(`${spec.key}: first forward (compiles)`, s);
        const got = first.outputs.get(spec.output);
        if (!got) throw new Error(`no output ${spec.output}; got ${[...first.outputs.keys()].join(', ')}`);
        rec.outputShape = got.shape;
        const ref = io.get(spec.output);
        if (ref) {
          const e = relErr(got, ref);
          const pass = e.rel <= tolerance;
          if (!pass) failed = true;
          rec.check = { ...e, tolerance, pass, torchBf16RelErr: tp?.bf16_rel_err ?? null };
          checks.push(`${spec.key}: ${spec.output} [${got.shape.join(', ')}] max|err|/max|ref| ${e.rel.toExponential(2)} (max|err| ${e.maxErr.toExponential(2)}, max|ref| ${e.maxRef.toExponential(2)}`
            + `${e.nonFinite ? `, ${e.nonFinite} non-finite` : ''}) against the f32 reference over the same bf16 weights; tolerance ${tolerance}`
            + `${tp?.bf16_rel_err !== undefined ? `; PyTorch bf16 itself ${tp.bf16_rel_err.toExponential(2)}` : ''} → ${pass ? 'PASS' : 'FAIL'}`);
          log(checks.at(-1)!);
        } else {
          let absMax = 0;
          let nonFinite = 0;
          for (const v of got.data) {
            if (!Number.isFinite(v)) nonFinite++;
            else absMax = Math.max(absMax, Math.abs(v));
          }
          rec.check = null;
          note(`${spec.key}: no reference output (synthetic or PyTorch failed): ${spec.output} [${got.shape.join(', ')}], max|x| ${absMax.toExponential(2)}, ${nonFinite} non-finite`);
          if (nonFinite) failed = true;
        }

        s = performance.now();
        for (let i = 1; i < warmup; i++) await model.forward(inputs, spec.entry);
        const times: number[] = [];
        const gpuStats: Array<{ recordMs: number; submitMs: number; dispatches: number }> = [];
        for (let i = 0; i < iters; i++) {
          if (since() > maxSeconds && times.length >= 1) {
            note(`${spec.key}: timing stopped after ${times.length} of ${iters} forwards (time budget)`);
            break;
          }
          const t = performance.now();
          const r = await model.forward(inputs, spec.entry);
          times.push(performance.now() - t);
          gpuStats.push({ recordMs: r.stats.recordMs, submitMs: r.stats.submitMs, dispatches: r.stats.dispatches });
        }
        phase(`${spec.key}: warm-up + ${times.length} timed forwards`, s);
        const med = median(times);
        const flops = spec.flops(config, inputs);
        rec.flops = flops;
        rec.tflops = { ours: flops / (med / 1000) / 1e12, torchBf16: tp?.bf16_ms ? flops / (tp.bf16_ms / 1000) / 1e12 : null };
        rec.ms = { median: med, min: Math.min(...times), all: times.map((x) => Number(x.toFixed(2))) };
        rec.hostMs = { record: median(gpuStats.map((x) => x.recordMs)), submit: median(gpuStats.map((x) => x.submitMs)), dispatches: gpuStats[0]?.dispatches ?? null };
        rec.heldBytes = model.heldBytes();
        log(`${spec.key}: ${med.toFixed(2)} ms per forward (median of ${times.length}, min ${Math.min(...times).toFixed(2)}; ${(flops / 1e12).toPrecision(3)} TFLOP → ${(flops / (med / 1000) / 1e12).toPrecision(3)} TFLOP/s${tp?.bf16_ms ? `, PyTorch bf16 ${(flops / (tp.bf16_ms / 1000) / 1e12).toFixed(1)}` : ''}); host recording ${(rec.hostMs as { record: number }).record.toFixed(2)} ms, ${gpuStats[0]?.dispatches ?? '?'} dispatches; held ${JSON.stringify(rec.heldBytes)}`);

        rows.push(msRow(`${what}: ms per forward, ours (forward() wall, host I/O included) vs PyTorch bf16 eager (CUDA events, GPU-resident inputs)`, med, tp?.bf16_ms));
        if (tp?.e2e_ms !== undefined) rows.push(msRow(`${what}: ms per forward, both with host I/O (PyTorch: pageable inputs → GPU → output to CPU, wall)`, med, tp.e2e_ms));
        if (spec.key === 'flux' && tp?.double_block_ms !== undefined) {
          note(`flux: PyTorch bf16 per part: double block ${tp.double_block_ms?.toFixed(2)} ms, single block ${tp.single_block_ms?.toFixed(2) ?? '?'} ms, embedders ${tp.embed_ms?.toFixed(2) ?? '?'} ms (whole forward ${tp.bf16_ms?.toFixed(2) ?? '?'} ms)`);
        }

        if (!args['no-profile'] && gpu.hasFeature('timestamp-query') && since() < maxSeconds) {
          s = performance.now();
          resetKernelProfile();
          setKernelProfiling(true);
          try {
            await model.forward(inputs, spec.entry);
            const kernels = await kernelProfile();
            const total = kernels.reduce((a, k) => a + k.ms, 0);
            rec.kernels = kernels.map((k) => ({ label: k.label, dispatches: k.dispatches, ms: Number(k.ms.toFixed(3)) }));
            rec.kernelGpuMs = total;
            log(`${spec.key}: GPU time of one forward (one pass per dispatch) ${total.toFixed(2)} ms: ${kernels.slice(0, 10).map((k) => `${k.label} ${k.ms.toFixed(2)} ms (${k.dispatches})`).join(', ')}`);
          } finally {
            setKernelProfiling(false);
            resetKernelProfile();
          }
          phase(`${spec.key}: profile`, s);
        }
      } catch (error) {
        failed = true;
        const msg = String((error as Error)?.stack ?? error);
        rec.error = msg;
        note(`${spec.key}: ERROR ${msg.split('\n').slice(0, 4).join(' | ')}`);
      } finally {
        if (model) await model.unload();
        if (weights) await weights.close();
      }
    }
    printRows(rows, log);
    const result = {
      device: gpu.adapterName, kind: process.env.DEVICE_KIND ?? null, synthetic: args.synthetic ? args.scale : false,
      torch, rows, checks, notes, parts, phases, seconds: since(),
    };
    if (args.out) writeFileSync(args.out, `${JSON.stringify(result, null, 2)}\n`);
    log(`done in ${since().toFixed(1)} s${args.out ? `; wrote ${args.out}` : ''}`);
  } finally {
    await set.close();
  }
  if (failed) process.exitCode = 1;
}

if (process.argv[1] && import.meta.url === pathToFileURL(resolve(process.argv[1])).href) await main();
