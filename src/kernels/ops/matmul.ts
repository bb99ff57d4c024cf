import type { GpuDevice } from '../../devices/gpu-device.ts';
import { bindingChunks, type KernelLimits } from '../limits.ts';
import { bestPath, pathSupport, type KernelPath } from '../paths.ts';
import type { Binding, KernelRecorder } from '../recorder.ts';
import type { ShaderDefines } from '../shaders.ts';
import { emptyTensor, GPU_DTYPE_LAYOUT, GpuTensor } from '../tensor.ts';
import {
  biasCode, gemvAlignedRows, gemvDecoder, LINEAR_WEIGHT_DTYPES, sgmatMicrokernel, sgmatPackedMicrokernel, tileDecoder, tiledMicrokernel,
  type BiasDtype, type LinearWeightDtype,
} from './matmul-wgsl.ts';

export { LINEAR_WEIGHT_DTYPES, type LinearWeightDtype } from './matmul-wgsl.ts';

/** Register-tiled f32/f16 kernel tiles (shaders/matmul.wgsl): BM×BN outputs per workgroup, BK deep (32 KiB of workgroup memory for 128x128-k16). */
export const MATMUL_TILES = Object.freeze({
  '128x128': { bm: 128, bn: 128, bk: 8, tm: 8, tn: 8, wg: 256 },
  '128x128-k16': { bm: 128, bn: 128, bk: 16, tm: 8, tn: 8, wg: 256 },
  '64x64': { bm: 64, bn: 64, bk: 16, tm: 4, tn: 4, wg: 256 },
  '32x32': { bm: 32, bn: 32, bk: 8, tm: 4, tn: 4, wg: 64 },
});
export type MatmulTile = keyof typeof MATMUL_TILES;

/**
 * Subgroup-matrix tiles (shaders/matmul-sgmat.wgsl): 8 subgroups of 32, each SG_M×SG_N blocks
 * of 16×16, WN subgroups along n. The shared variant of '128x256' needs 38 KiB of workgroup
 * memory (an H100 under Dawn offers 48 KiB).
 */
export const SGMAT_TILES = Object.freeze({
  '128x128': { bm: 128, bn: 128, sgM: 4, sgN: 2, wn: 4 },
  '64x64': { bm: 64, bn: 64, sgM: 2, sgN: 1, wn: 4 },
  '128x256': { bm: 128, bn: 256, sgM: 4, sgN: 4, wn: 4 },
});
export type SgmatTile = keyof typeof SGMAT_TILES;

/**
 * Tiles of the packed subgroup-matrix kernel (shaders/matmul-sgmat-packed.wgsl: weights from
 * packForSubgroupMatrix, activations packed by a pre-pass): WM×WN subgroups of 32, each
 * SG_M×SG_N 16×16 accumulators; the k loop takes `unroll` 16-deep blocks per iteration,
 * `prefetch`ing the next iteration's operands into registers or not; workgroups walk the
 * output in groups of `groupM` (default 8) tile rows. Any M, N, K.
 */
const PACKED_TILES = {
  '128x256': { wm: 2, wn: 4, sgM: 4, sgN: 4, unroll: 1, prefetch: true },
  '128x256-u2': { wm: 2, wn: 4, sgM: 4, sgN: 4, unroll: 2, prefetch: false },
  '128x256-np': { wm: 2, wn: 4, sgM: 4, sgN: 4, unroll: 1, prefetch: false },
  '256x128': { wm: 4, wn: 2, sgM: 4, sgN: 4, unroll: 1, prefetch: true },
  '128x128': { wm: 2, wn: 4, sgM: 4, sgN: 2, unroll: 2, prefetch: true },
  '128x128-u4': { wm: 2, wn: 4, sgM: 4, sgN: 2, unroll: 4, prefetch: false },
  '128x128-w4': { wm: 2, wn: 2, sgM: 4, sgN: 4, unroll: 1, prefetch: true },
  '64x256-w4': { wm: 2, wn: 2, sgM: 2, sgN: 8, unroll: 1, prefetch: true },
  '64x128-w4': { wm: 2, wn: 2, sgM: 2, sgN: 4, unroll: 2, prefetch: true },
  '128x128-w4-u2': { wm: 2, wn: 2, sgM: 4, sgN: 4, unroll: 2, prefetch: false },
  '128x128-w4-np': { wm: 2, wn: 2, sgM: 4, sgN: 4, unroll: 1, prefetch: false },
  '128x128-w4-g16': { wm: 2, wn: 2, sgM: 4, sgN: 4, unroll: 1, prefetch: true, groupM: 16 },
  '256x128-u2': { wm: 4, wn: 2, sgM: 4, sgN: 4, unroll: 2, prefetch: false },
};
export interface SgmatPackedTileSpec {
  readonly wm: number;
  readonly wn: number;
  readonly sgM: number;
  readonly sgN: number;
  readonly unroll: number;
  readonly prefetch: boolean;
  readonly groupM?: number;
}
export type SgmatPackedTile = keyof typeof PACKED_TILES;
export const SGMAT_PACKED_TILES: Readonly<Record<SgmatPackedTile, SgmatPackedTileSpec>> = Object.freeze(PACKED_TILES);
/** The fastest packed tile at 4096³ on an H100 (bench/results/matmul.json: 183.9 TFLOP/s, 0.256 of PyTorch bf16). */
export const SGMAT_PACKED_DEFAULT_TILE: SgmatPackedTile = '128x128-w4-u2';

/** Batches up to this many rows go through the GEMV kernel by default. */
export const GEMV_MAX_M = 4;

/**
 * Whether linear runs the GEMV kernel for x [..., K] (M ≤ GEMV_MAX_M): only it adds a residual
 * or writes several outputs in the same dispatch.
 */
export function linearUsesGemv(x: GpuTensor, w: GpuTensor, options: LinearOptions = {}): boolean {
  if (w instanceof SgmatPackedWeight) return false;
  const k = w.shape[w.shape.length - 1] ?? 1;
  return (options.kernel ?? (x.elements / k <= GEMV_MAX_M ? 'gemv' : 'tiled')) === 'gemv';
}

export interface LinearOptions {
  /**
   * Added to the output in the same dispatch (a residual connection), shaped like out. GEMV
   * only: see linearFusesResidual.
   */
  readonly residual?: GpuTensor;
  /**
   * More outputs: w stacks several projections ([N0 + N1 (+ N2), K]); out takes the first N0
   * columns, parts[0] the next, parts[1] the last (up to 3 in all; each [M, Ni]). GEMV only.
   */
  readonly parts?: readonly GpuTensor[];
  /** Activation path; default bestPath(gpu). f32 activations never take the f16 path. */
  readonly path?: KernelPath;
  /** Force the GEMV or the tiled kernel (default: GEMV when M ≤ GEMV_MAX_M). */
  readonly kernel?: 'gemv' | 'tiled';
  /** GEMV: reduce with subgroupAdd (default where the device has subgroups) or in workgroup memory. */
  readonly subgroups?: boolean;
  /** GEMV: weight rows per workgroup (1, 2, 4 or 8; default 2) and threads (64, 128 or 256; default 256): the fastest on an H100 (bench/results/gemv.json). */
  readonly gemvRows?: number;
  readonly gemvThreads?: number;
  /** Tiled f32/f16 kernel: tile size (default by shape). */
  readonly tile?: MatmulTile;
  /**
   * Subgroup-matrix kernel: tile, and whether operands load straight from storage (f16 x and
   * weights, K, M and N multiples of 16). Default: direct 128x256 where it applies, else shared 64x64.
   */
  readonly sgmatTile?: SgmatTile;
  readonly sgmatDirect?: boolean;
  /** Packed weights (packForSubgroupMatrix): the packed kernel's tile (default SGMAT_PACKED_DEFAULT_TILE). */
  readonly sgmatPackedTile?: SgmatPackedTile;
  /**
   * Packed weights: where the activations are packed (f16, at least
   * sgmatPackedBytes(M, K) bytes). Default: a scratch buffer kept per device, grown as needed
   * (releaseSgmatScratch frees it).
   */
  readonly sgmatPackedX?: GpuTensor;
}

/** What `linear` recorded: the tests check that forced variants really ran. */
export interface LinearInfo {
  readonly kernel: 'gemv' | 'tiled' | 'subgroup-matrix';
  readonly path: KernelPath;
  readonly variant: string;
  readonly dispatches: number;
  /** Workgroups of the largest dispatch (above maxComputeWorkgroupsPerDimension: a 2-D grid). */
  readonly maxGroups: number;
}

export class LinearShapeError extends RangeError {}

interface SubgroupMatrixConfig {
  readonly componentType: string;
  readonly resultComponentType: string;
  readonly M: number;
  readonly N: number;
  readonly K: number;
}

/** Devices whose subgroup-matrix pipeline failed to build: they take the f16 path from then on. */
const sgmatUnusable = new WeakMap<GPUDevice, string>();

/**
 * Whether the subgroup-matrix kernel can run here: the feature, subgroups of exactly 32 (the
 * kernel tiles 8 subgroups of 32) and an f16 16×16×16 → f32 configuration. Dawn's
 * device.adapterInfo may list no configurations at all (seen on an H100 with npm webgpu 0.6.2,
 * whose adapter has them): then the feature is trusted, and a pipeline that fails to build
 * marks the device (linear falls back to the f16 path).
 */
export function subgroupMatrixReady(gpu: GpuDevice): boolean {
  if (!pathSupport(gpu).subgroupMatrix || sgmatUnusable.has(gpu.device)) return false;
  const info = (gpu.device as GPUDevice & { adapterInfo?: GPUAdapterInfo }).adapterInfo as
    (GPUAdapterInfo & { subgroupMatrixConfigs?: readonly SubgroupMatrixConfig[]; subgroupMinSize?: number; subgroupMaxSize?: number }) | undefined;
  if (!info || info.subgroupMinSize !== 32 || info.subgroupMaxSize !== 32) return false;
  const configs = info.subgroupMatrixConfigs ?? [];
  return configs.length === 0 || configs.some((c) => c.componentType === 'f16' && c.resultComponentType === 'f32' && c.M === 16 && c.N === 16 && c.K === 16);
}

/** The path `linear` takes for these activations on this device (see LinearOptions.path). */
export function linearPath(gpu: GpuDevice, activations: 'f32' | 'f16', wanted?: KernelPath): KernelPath {
  const support = pathSupport(gpu);
  if (activations === 'f16' && !support.f16) throw new LinearShapeError(`${gpu.name} has no shader-f16: f16 activations cannot run there`);
  if (wanted === 'subgroup-matrix' && !subgroupMatrixReady(gpu)) {
    throw new LinearShapeError(`${gpu.name} cannot run the subgroup-matrix path (needs chromium-experimental-subgroup-matrix with f16 16×16×16 and subgroups of 32)`);
  }
  if (wanted === 'f32' && activations === 'f16') throw new LinearShapeError('the f32 path takes f32 activations; f16 activations take the f16 path');
  let path = wanted ?? bestPath(gpu);
  if (path === 'subgroup-matrix' && !subgroupMatrixReady(gpu)) path = support.f16 ? 'f16' : 'f32';
  if (path === 'f16' && activations === 'f32') path = 'f32';
  if (path === 'f32' && activations === 'f16') path = 'f16';
  return path;
}

function rowBytes(dtype: LinearWeightDtype, k: number): number {
  const { blockElements, blockBytes } = GPU_DTYPE_LAYOUT[dtype];
  return (k / blockElements) * blockBytes;
}

const round4 = (n: number) => Math.ceil(n / 4) * 4;

function gcd(a: number, b: number): number {
  return b === 0 ? a : gcd(b, a % b);
}

/**
 * Rows of x and out bound together: each run must fit one binding on both tensors, and start
 * on the offset alignment on both.
 */
function activationChunks(m: number, xRow: number, outRow: number, limits: KernelLimits): Array<{ first: number; count: number }> {
  const align = limits.minStorageBufferOffsetAlignment;
  const ax = align / gcd(align, xRow);
  const ao = align / gcd(align, outRow);
  const step = (ax * ao) / gcd(ax, ao);
  const fit = Math.floor(limits.maxStorageBufferBindingSize / Math.max(xRow, outRow));
  if (fit < 1) throw new LinearShapeError(`one activation row (${Math.max(xRow, outRow)} bytes) is larger than a binding (${limits.maxStorageBufferBindingSize})`);
  const per = m <= fit ? m : Math.max(step, Math.floor(fit / step) * step);
  if (per > fit) throw new LinearShapeError(`activation rows of ${xRow}/${outRow} bytes cannot be split on ${align}-byte offsets within ${limits.maxStorageBufferBindingSize}-byte bindings`);
  const chunks: Array<{ first: number; count: number }> = [];
  for (let first = 0; first < m; first += per) chunks.push({ first, count: Math.min(per, m - first) });
  return chunks;
}

function range(t: GpuTensor, offset: number, bytes: number): Binding {
  return { buffer: t.buffer, offset, size: round4(bytes) };
}

/** What picks a kernel variant: everything but the tensors themselves. */
export interface LinearKernelSpec {
  readonly kernel: 'gemv' | 'tiled';
  readonly path: KernelPath;
  readonly weights: LinearWeightDtype;
  readonly m: number;
  readonly n: number;
  readonly k: number;
  readonly f16: boolean;
  readonly bias: BiasDtype | null;
  /** GEMV: adds a residual tensor shaped like out in the same dispatch. */
  readonly residual?: boolean;
  /** GEMV: outputs the stacked weight's rows go to (1 to 3; default 1). */
  readonly parts?: number;
  /** Whether the device has subgroups (GEMV reductions). */
  readonly subgroups: boolean;
  /** maxComputeWorkgroupStorageSize (default 32768). */
  readonly workgroupStorage?: number;
  /** Whether every dispatch's rows of x and w are whole 16-row fragments (default true). */
  readonly directChunks?: boolean;
}

/** Workgroup memory of a subgroup-matrix tile: f16 operand tiles (rows padded to 40) and the f32 staging. */
export function sgmatSharedBytes(tile: SgmatTile, direct: boolean): number {
  const t = SGMAT_TILES[tile];
  return (direct ? 0 : (t.bm + t.bn) * 40 * 2) + 8 * 256 * 4;
}

export interface LinearKernel {
  readonly shader: 'gemv' | 'matmul' | 'matmul-sgmat';
  readonly defines: ShaderDefines;
  readonly kernel: LinearInfo['kernel'];
  readonly variant: string;
  /** Workgroups for a dispatch of mc activation rows and nc weight rows. */
  readonly groups: (mc: number, nc: number) => number;
  /** The kernel's seventh parameter (GEMV: chunks per row; tiles: tiles along n). */
  readonly seventh: (mc: number, nc: number) => number;
}

/** The shader and defines of the variant `linear` runs for this spec (pure: the compile tests use it). */
export function linearKernel(spec: LinearKernelSpec, options: LinearOptions = {}): LinearKernel {
  const { weights: wd, k, m, n, f16 } = spec;
  const biasFn = biasCode(spec.bias);
  if (spec.kernel === 'gemv') {
    const rows = options.gemvRows ?? 2;
    const wg = options.gemvThreads ?? 256;
    if (![1, 2, 4, 8].includes(rows) || ![64, 128, 256].includes(wg)) throw new LinearShapeError(`linear: gemvRows ${rows} / gemvThreads ${wg}`);
    const subgroups = (options.subgroups ?? true) && spec.subgroups;
    const dec = gemvDecoder(wd, gemvAlignedRows(wd, k));
    const residual = spec.residual ?? false;
    const parts = spec.parts ?? 1;
    const outBinding = 2 + (spec.bias !== null ? 1 : 0) + (residual ? 1 : 0);
    return {
      shader: 'gemv',
      defines: {
        F16: f16, SUBGROUPS: subgroups, WG: wg, ROWS: rows, CHUNK: dec.chunk, CHUNK1: dec.chunk === 1, XV: Math.max(1, dec.chunk / 4),
        W_TYPE: dec.wType, DEQUANT: dec.code, BIAS: spec.bias !== null, BIAS_FN: biasFn,
        RESIDUAL: residual, RES_BINDING: outBinding - 1, OUT_BINDING: outBinding, PARTS2: parts >= 2, PARTS3: parts >= 3,
        OUT1_BINDING: outBinding + 1, OUT2_BINDING: outBinding + 2, PARAMS_BINDING: outBinding + parts,
      },
      kernel: 'gemv',
      variant: `gemv rows=${rows} threads=${wg} ${subgroups ? 'subgroups' : 'workgroup-reduction'} ${dec.chunk === 1 ? 'scalar' : `chunk=${dec.chunk}`}`,
      groups: (mc, nc) => mc * Math.ceil(nc / rows),
      seventh: () => k / dec.chunk,
    };
  }
  if (spec.residual) throw new LinearShapeError('linear: a fused residual needs the GEMV kernel (M ≤ GEMV_MAX_M)');
  if ((spec.parts ?? 1) > 1) throw new LinearShapeError('linear: several outputs need the GEMV kernel (M ≤ GEMV_MAX_M)');
  const aligned = k % 4 === 0;
  const dec = tileDecoder(wd, aligned);
  if (spec.path === 'subgroup-matrix') {
    // Defaults from bench/results/matmul.json (H100): the direct variant with 128x256 tiles where
    // it applies (f16 x and weights, whole 16×16 fragments, big enough), else shared 64x64.
    const directFits = f16 && wd === 'f16' && k % 16 === 0 && m % 16 === 0 && n % 16 === 0 && (spec.directChunks ?? true);
    const direct = options.sgmatDirect ?? (directFits && m >= 128 && n >= 256);
    const room = spec.workgroupStorage ?? 32768;
    const tileName = options.sgmatTile ?? (direct ? (m >= 128 && n >= 256 ? '128x256' : '128x128') : '64x64');
    if (sgmatSharedBytes(tileName, direct) > room) throw new LinearShapeError(`linear: the ${tileName} subgroup-matrix tile needs more than ${room} bytes of workgroup memory`);
    if (direct && (!f16 || wd !== 'f16' || k % 16 !== 0)) throw new LinearShapeError('linear: the direct subgroup-matrix variant needs f16 x, f16 weights and K % 16 == 0');
    // Dawn clamps a fragment that would run past the end of a storage binding back inside it
    // (shifting its rows), so the direct variant needs whole 16-row fragments.
    if (direct && (m % 16 !== 0 || n % 16 !== 0)) throw new LinearShapeError('linear: the direct subgroup-matrix variant needs M and N multiples of 16');
    const t = SGMAT_TILES[tileName];
    const micro = sgmatMicrokernel(t.sgM, t.sgN, direct);
    return {
      shader: 'matmul-sgmat',
      defines: {
        F16: f16, DIRECT: direct, BM: t.bm, BN: t.bn, SG_M: t.sgM, SG_N: t.sgN, WN: t.wn, GROUP_M: 8, ALIGNED: aligned,
        W_TYPE: dec.wType, DEQUANT: dec.code, BIAS: spec.bias !== null, BIAS_FN: biasFn, DECL: micro.decl, BODY: micro.body, STORE: micro.store,
      },
      kernel: 'subgroup-matrix',
      variant: `subgroup-matrix ${tileName}${direct ? ' direct' : ' shared'}${aligned ? '' : ' unaligned'}`,
      groups: (mc, nc) => Math.ceil(mc / t.bm) * Math.ceil(nc / t.bn),
      seventh: (_mc, nc) => Math.ceil(nc / t.bn),
    };
  }
  const tileName = options.tile ?? (m >= 128 && n >= 128 ? '128x128' : m >= 64 && n >= 64 ? '64x64' : '32x32');
  const t = MATMUL_TILES[tileName];
  const micro = tiledMicrokernel(t.tm, t.tn, t.bm, t.bn);
  return {
    shader: 'matmul',
    defines: {
      F16: f16, BM: t.bm, BN: t.bn, BK: t.bk, TM: t.tm, TN: t.tn, WG: t.wg, GROUP_M: 8, ALIGNED: aligned,
      W_TYPE: dec.wType, DEQUANT: dec.code, BIAS: spec.bias !== null, BIAS_FN: biasFn, DECL: micro.decl, BODY: micro.body, STORE: micro.store,
    },
    kernel: 'tiled',
    variant: `tiled ${tileName}${aligned ? '' : ' unaligned'}`,
    groups: (mc, nc) => Math.ceil(mc / t.bm) * Math.ceil(nc / t.bn),
    seventh: (_mc, nc) => Math.ceil(nc / t.bn),
  };
}

/**
 * linearKernel builds its decoder's WGSL text on every call; a decode step asks for the same few
 * variants hundreds of times a token.
 */
const kernelCache = new Map<string, LinearKernel>();
function cachedLinearKernel(spec: LinearKernelSpec, options: LinearOptions): LinearKernel {
  const key = `${spec.kernel}|${spec.path}|${spec.weights}|${spec.m}|${spec.n}|${spec.k}|${spec.f16}|${spec.bias}|${spec.residual}|${spec.parts}|${spec.subgroups}|`
    + `${spec.workgroupStorage}|${spec.directChunks}|${options.subgroups}|${options.gemvRows}|${options.gemvThreads}|${options.tile}|${options.sgmatTile}|${options.sgmatDirect}`;
  let plan = kernelCache.get(key);
  if (!plan) {
    if (kernelCache.size > 1024) kernelCache.clear();
    plan = linearKernel(spec, options);
    kernelCache.set(key, plan);
  }
  return plan;
}

/**
 * nn.Linear: out = x · wᵀ · w.scale + bias, for x [..., K] (f32, or f16 on the f16 and
 * subgroup-matrix paths; out has x's dtype) and w [N, K] in any of LINEAR_WEIGHT_DTYPES,
 * read in its stored form (GGUF: shape [N, K] is ggml's ne = [K, N]). bias: [N] in f32, f16 or bf16.
 *
 * Kernels: GEMV for M ≤ GEMV_MAX_M (bandwidth bound: wide loads, subgroup reductions), else
 * the register-tiled kernel (f32 arithmetic; f16 activations are only storage) or, on the
 * subgroup-matrix path, tensor cores with f16 operands and f32 accumulation.
 * Overflow: every path accumulates in f32; weights are decoded to f32, never to f16, except
 * on the subgroup-matrix path, whose f16 operands clamp x and w to ±65504 (bf16 weights or
 * activations beyond that lose their magnitude there; use the f16 or f32 path for them).
 * An f16 output beyond ±65504 is ±inf, as PyTorch's f16 would be.
 * Weights larger than one binding are bound in runs of rows (one dispatch each); more than
 * maxComputeWorkgroupsPerDimension workgroups go on a 2-D grid.
 */
export async function linear(rec: KernelRecorder, x: GpuTensor, w: GpuTensor, bias: GpuTensor | null | undefined, out: GpuTensor,
  options: LinearOptions = {}): Promise<LinearInfo> {
  if (w instanceof SgmatPackedWeight) return linearPacked(rec, x, w, bias, out, options);
  const wd = w.dtype as LinearWeightDtype;
  if (!LINEAR_WEIGHT_DTYPES.includes(wd)) throw new LinearShapeError(`linear: weights in ${w.dtype} are not supported (${LINEAR_WEIGHT_DTYPES.join(', ')})`);
  if (w.shape.length !== 2) throw new LinearShapeError(`linear: weights must be [N, K], got ${JSON.stringify(w.shape)}`);
  const [n, k] = w.shape as [number, number];
  if (x.dtype !== 'f32' && x.dtype !== 'f16') throw new LinearShapeError(`linear: activations must be f32 or f16, got ${x.dtype}`);
  if (out.dtype !== x.dtype) throw new LinearShapeError(`linear: out is ${out.dtype} but x is ${x.dtype}`);
  if (x.shape[x.shape.length - 1] !== k) throw new LinearShapeError(`linear: x ${JSON.stringify(x.shape)} does not end in K = ${k}`);
  const m = x.elements / k;
  const outs = [out, ...(options.parts ?? [])];
  const widths = outs.map((o) => o.shape[o.shape.length - 1] ?? 1);
  if (outs.length > 3) throw new LinearShapeError(`linear: at most 3 outputs, got ${outs.length}`);
  if (widths.reduce((a, b) => a + b, 0) !== n || outs.some((o, i) => o.elements !== m * widths[i]! || o.dtype !== x.dtype)) {
    throw new LinearShapeError(`linear: outputs ${outs.map((o) => `${o.dtype} ${JSON.stringify(o.shape)}`).join(', ')} do not split [${m}, ${n}] ${x.dtype} by columns`);
  }
  const block = GPU_DTYPE_LAYOUT[wd].blockElements;
  if (k % block !== 0) throw new LinearShapeError(`linear: K = ${k} is not a whole number of ${wd} blocks (${block})`);
  let biasDtype: BiasDtype | null = null;
  if (bias) {
    if (bias.dtype !== 'f32' && bias.dtype !== 'f16' && bias.dtype !== 'bf16') throw new LinearShapeError(`linear: bias must be f32, f16 or bf16, got ${bias.dtype}`);
    if (bias.elements !== n) throw new LinearShapeError(`linear: bias has ${bias.elements} elements, N = ${n}`);
    biasDtype = bias.dtype;
  }
  const gpu = rec.gpu;
  let path = linearPath(gpu, x.dtype, options.path);
  const kernel = options.kernel ?? (m <= GEMV_MAX_M ? 'gemv' : 'tiled');
  const f16 = x.dtype === 'f16';
  const limits = rec.limits;
  const xb = f16 ? 2 : 4;
  const wRow = rowBytes(wd, k);

  const nChunks = bindingChunks(n, wRow, limits);
  const mChunks = activationChunks(m, k * xb, n * xb, limits);
  const residual = options.residual ?? null;
  if (outs.length > 1 && (kernel !== 'gemv' || residual)) throw new LinearShapeError(`linear: several outputs need the GEMV kernel (M = ${m}, at most ${GEMV_MAX_M}) and no residual; split the output instead`);
  if (residual) {
    if (kernel !== 'gemv') throw new LinearShapeError(`linear: a fused residual needs the GEMV kernel (M = ${m} > ${GEMV_MAX_M}); add it separately`);
    if (residual.dtype !== out.dtype || residual.elements !== out.elements) throw new LinearShapeError(`linear: residual ${JSON.stringify(residual.shape)} ${residual.dtype} is not shaped like out ${JSON.stringify(out.shape)} ${out.dtype}`);
  }
  const spec: LinearKernelSpec = {
    kernel, path, weights: wd, k, m, n, f16, bias: biasDtype, residual: residual !== null, parts: outs.length, subgroups: gpu.hasFeature('subgroups'),
    workgroupStorage: limits.maxComputeWorkgroupStorageSize,
    directChunks: [...nChunks, ...mChunks].every((c) => c.count % 16 === 0 || c.first + c.count === (nChunks.includes(c) ? n : m)),
  };
  let plan = cachedLinearKernel(spec, options);
  let pipeline: GPUComputePipeline;
  try {
    pipeline = await rec.pipeline(plan.shader, plan.defines);
  } catch (error) {
    if (plan.kernel !== 'subgroup-matrix' || options.path === 'subgroup-matrix') throw error;
    // Chosen automatically but not buildable here: remember, and take the f16 (or f32) path.
    sgmatUnusable.set(gpu.device, String((error as Error).message));
    path = linearPath(gpu, x.dtype);
    plan = linearKernel({ ...spec, path }, options);
    pipeline = await rec.pipeline(plan.shader, plan.defines);
  }
  const { variant } = plan;

  let dispatches = 0;
  let maxGroups = 0;
  for (const mc of mChunks) {
    for (const nc of nChunks) {
      const groups = plan.groups(mc.count, nc.count);
      if (groups === 0) continue;
      const params = new ArrayBuffer(48);
      new Uint32Array(params, 0, 7).set([mc.count, nc.count, k, widths[0]!, nc.first, groups, plan.seventh(mc.count, nc.count)]);
      new Float32Array(params, 28, 1)[0] = w.scale;
      new Uint32Array(params, 32, 4).set([widths[0]!, widths[1] ?? 0, widths[0]! + (widths[1] ?? 0), widths[2] ?? 0]);
      const bindings: Binding[] = [
        range(x, mc.first * k * xb, mc.count * k * xb),
        range(w, nc.first * wRow, nc.count * wRow),
      ];
      if (bias) bindings.push(bias.buffer);
      if (residual) bindings.push(range(residual, mc.first * n * xb, mc.count * n * xb));
      outs.forEach((o, i) => bindings.push(range(o, mc.first * widths[i]! * xb, mc.count * widths[i]! * xb)));
      rec.dispatch(pipeline, bindings, new Uint8Array(params), groups, `linear ${variant}${residual ? ' +residual' : ''}${outs.length > 1 ? ` ${outs.length} parts` : ''}`);
      dispatches++;
      maxGroups = Math.max(maxGroups, groups);
    }
  }
  return { kernel: plan.kernel, path, variant, dispatches, maxGroups };
}

// ---- packed subgroup-matrix weights -------------------------------------------------------

/** 16-deep blocks along K in the packed layout: K/16 rounded up to a multiple of 4 (zeros past K). */
export function sgmatPackedKBlocks(k: number): number {
  return Math.ceil(k / 64) * 4;
}

/** Bytes of an [R, K] matrix in the packed layout. */
export function sgmatPackedBytes(rows: number, k: number): number {
  return Math.ceil(rows / 16) * sgmatPackedKBlocks(k) * 512;
}

/**
 * Index (in f16 elements) of element (r, k) of an [R, K] matrix in the packed subgroup-matrix
 * layout: 16×16 blocks of 512 contiguous bytes, row-major inside a block, blocks ordered
 * [ceil(R/16)][sgmatPackedKBlocks(K)] (block row by block row, K fastest).
 */
export function sgmatPackedIndex(r: number, k: number, kDim: number): number {
  const kb = sgmatPackedKBlocks(kDim);
  return ((Math.floor(r / 16) * kb + Math.floor(k / 16)) * 16 + (r % 16)) * 16 + (k % 16);
}

/**
 * A linear weight [N, K] packed for the subgroup-matrix path (packForSubgroupMatrix): f16,
 * stored as shape [ceil(N/16), sgmatPackedKBlocks(K), 16, 16] in the layout of
 * sgmatPackedIndex, zeros past N and K. `n` and `k` are the logical sizes; `linear` takes it
 * in place of the [N, K] weight, on the subgroup-matrix path only.
 */
export class SgmatPackedWeight extends GpuTensor {
  readonly layout = 'sgmat16x16' as const;
  readonly n: number;
  readonly k: number;
  /** Original dtype of the weight (its values were rounded to f16, clamped to ±65504). */
  readonly source: 'f32' | 'f16' | 'bf16';

  constructor(t: GpuTensor, n: number, k: number, source: 'f32' | 'f16' | 'bf16', scale: number) {
    super(t.gpu, t.storage, t.shape, 'f16', scale);
    this.n = n;
    this.k = k;
    this.source = source;
  }
}

/** The packing pre-pass (shaders/matmul-sgmat-pack.wgsl) for a source dtype (pure: the compile tests use it). */
export function sgmatPackKernel(source: 'f32' | 'f16' | 'bf16', k: number): { shader: 'matmul-sgmat-pack'; defines: ShaderDefines } {
  return { shader: 'matmul-sgmat-pack', defines: { SRC_F32: source === 'f32', SRC_BF16: source === 'bf16', VEC: source === 'f16' && k % 8 === 0 } };
}

/** The packed matmul kernel (pure: the compile tests use it). */
export function sgmatPackedKernel(f16: boolean, bias: BiasDtype | null, tile: SgmatPackedTile = SGMAT_PACKED_DEFAULT_TILE): {
  shader: 'matmul-sgmat-packed'; defines: ShaderDefines; variant: string; bm: number; bn: number;
} {
  const t = SGMAT_PACKED_TILES[tile];
  if (!t) throw new LinearShapeError(`linear: no packed subgroup-matrix tile ${tile}`);
  const micro = sgmatPackedMicrokernel(t.sgM, t.sgN, t.unroll, t.prefetch);
  const bm = t.wm * t.sgM * 16;
  const bn = t.wn * t.sgN * 16;
  return {
    shader: 'matmul-sgmat-packed',
    defines: {
      F16: f16, BM: bm, BN: bn, WN: t.wn, SG_M: t.sgM, SG_N: t.sgN, WG: t.wm * t.wn * 32, GROUP_M: t.groupM ?? 8,
      BIAS: bias !== null, BIAS_FN: biasCode(bias), DECL: micro.decl, BODY: micro.body, STORE: micro.store,
    },
    variant: `subgroup-matrix packed ${tile}`,
    bm,
    bn,
  };
}

function recordPack(rec: KernelRecorder, src: GpuTensor, rows: number, k: number, dst: GpuTensor, pipeline: GPUComputePipeline): void {
  const kb = sgmatPackedKBlocks(k);
  const total = Math.ceil(rows / 16) * kb * 32;
  const params = new Uint32Array([rows, k, kb, total]);
  const srcBytes = rows * k * (src.dtype === 'f32' ? 4 : 2);
  rec.dispatch(pipeline, [range(src, 0, srcBytes), range(dst, 0, sgmatPackedBytes(rows, k))], params, Math.ceil(total / 256), 'sgmat pack');
}

/**
 * Packs a linear weight [N, K] (f16, bf16 or f32) once, at load time, into the layout the
 * packed subgroup-matrix kernel reads (see SgmatPackedWeight). Records the packing on `rec`
 * (submit it before use); the source tensor is left as it was.
 */
export async function packForSubgroupMatrix(rec: KernelRecorder, w: GpuTensor): Promise<SgmatPackedWeight> {
  if (w.dtype !== 'f16' && w.dtype !== 'bf16' && w.dtype !== 'f32') throw new LinearShapeError(`packForSubgroupMatrix: weights must be f16, bf16 or f32, got ${w.dtype}`);
  if (w.shape.length !== 2) throw new LinearShapeError(`packForSubgroupMatrix: weights must be [N, K], got ${JSON.stringify(w.shape)}`);
  const [n, k] = w.shape as [number, number];
  const bytes = sgmatPackedBytes(n, k);
  const limit = rec.limits.maxStorageBufferBindingSize;
  if (bytes > limit || w.byteLength > limit) throw new LinearShapeError(`packForSubgroupMatrix: [${n}, ${k}] does not fit one ${limit}-byte binding`);
  const spec = sgmatPackKernel(w.dtype, k);
  const pipeline = await rec.pipeline(spec.shader, spec.defines);
  const packed = await emptyTensor(rec.gpu, [Math.ceil(n / 16), sgmatPackedKBlocks(k), 16, 16], 'f16', 'sgmat packed weight');
  recordPack(rec, w, n, k, packed, pipeline);
  return new SgmatPackedWeight(packed, n, k, w.dtype, w.scale);
}

/** Per-device scratch for packed activations: the newest (largest) last; older ones stay alive until releaseSgmatScratch. */
const packedScratch = new WeakMap<GPUDevice, GpuTensor[]>();

/** Frees the scratch buffers linear kept for packed activations on this device (after its work has finished). */
export function releaseSgmatScratch(gpu: GpuDevice): void {
  for (const t of packedScratch.get(gpu.device) ?? []) t.destroy();
  packedScratch.delete(gpu.device);
}

async function scratchFor(gpu: GpuDevice, bytes: number): Promise<GpuTensor> {
  const list = packedScratch.get(gpu.device) ?? [];
  const last = list[list.length - 1];
  if (last && last.byteLength >= bytes) return last;
  const t = await emptyTensor(gpu, [Math.ceil(bytes / 2)], 'f16', 'sgmat packed activations');
  list.push(t);
  packedScratch.set(gpu.device, list);
  return t;
}

async function linearPacked(rec: KernelRecorder, x: GpuTensor, w: SgmatPackedWeight, bias: GpuTensor | null | undefined, out: GpuTensor,
  options: LinearOptions): Promise<LinearInfo> {
  const { n, k } = w;
  if (x.dtype !== 'f32' && x.dtype !== 'f16') throw new LinearShapeError(`linear: activations must be f32 or f16, got ${x.dtype}`);
  if (out.dtype !== x.dtype) throw new LinearShapeError(`linear: out is ${out.dtype} but x is ${x.dtype}`);
  if (x.shape[x.shape.length - 1] !== k) throw new LinearShapeError(`linear: x ${JSON.stringify(x.shape)} does not end in K = ${k}`);
  const m = x.elements / k;
  const outs = [out, ...(options.parts ?? [])];
  const widths = outs.map((o) => o.shape[o.shape.length - 1] ?? 1);
  if (outs.length > 3) throw new LinearShapeError(`linear: at most 3 outputs, got ${outs.length}`);
  if (widths.reduce((a, b) => a + b, 0) !== n || outs.some((o, i) => o.elements !== m * widths[i]! || o.dtype !== x.dtype)) {
    throw new LinearShapeError(`linear: outputs ${outs.map((o) => `${o.dtype} ${JSON.stringify(o.shape)}`).join(', ')} do not split [${m}, ${n}] ${x.dtype} by columns`);
  }
  if (options.path !== undefined && options.path !== 'subgroup-matrix') throw new LinearShapeError('linear: packed weights run on the subgroup-matrix path only');
  const gpu = rec.gpu;
  if (!subgroupMatrixReady(gpu)) throw new LinearShapeError(`${gpu.name} cannot run the subgroup-matrix path, which packed weights need`);
  let biasDtype: BiasDtype | null = null;
  if (bias) {
    if (bias.dtype !== 'f32' && bias.dtype !== 'f16' && bias.dtype !== 'bf16') throw new LinearShapeError(`linear: bias must be f32, f16 or bf16, got ${bias.dtype}`);
    if (bias.elements !== n) throw new LinearShapeError(`linear: bias has ${bias.elements} elements, N = ${n}`);
    biasDtype = bias.dtype;
  }
  const f16 = x.dtype === 'f16';
  const xb = f16 ? 2 : 4;
  const limit = rec.limits.maxStorageBufferBindingSize;
  const xBytes = sgmatPackedBytes(m, k);
  if (xBytes > limit || m * k * xb > limit || m * n * xb > limit) throw new LinearShapeError(`linear: packed weights need x and out within one ${limit}-byte binding`);
  const xp = options.sgmatPackedX ?? await scratchFor(gpu, xBytes);
  if (xp.byteLength < xBytes) throw new LinearShapeError(`linear: sgmatPackedX holds ${xp.byteLength} bytes, ${xBytes} needed`);
  const pack = sgmatPackKernel(x.dtype, k);
  const packPipeline = await rec.pipeline(pack.shader, pack.defines);
  const plan = sgmatPackedKernel(f16, biasDtype, options.sgmatPackedTile ?? SGMAT_PACKED_DEFAULT_TILE);
  const pipeline = await rec.pipeline(plan.shader, plan.defines);
  recordPack(rec, x, m, k, xp, packPipeline);
  const tilesN = Math.ceil(n / plan.bn);
  const groups = Math.ceil(m / plan.bm) * tilesN;
  const params = new ArrayBuffer(48);
  const u = new Uint32Array(params);
  u.set([m, n, sgmatPackedKBlocks(k), n, 0, groups, tilesN]);
  new Float32Array(params, 28, 1)[0] = w.scale;
  u[8] = Math.ceil(m / 16);
  u[9] = Math.ceil(n / 16);
  const bindings: Binding[] = [range(xp, 0, xBytes), range(w, 0, sgmatPackedBytes(n, k))];
  if (bias) bindings.push(bias.buffer);
  bindings.push(range(out, 0, m * n * xb));
  rec.dispatch(pipeline, bindings, new Uint8Array(params), groups, `linear ${plan.variant}`);
  return { kernel: 'subgroup-matrix', path: 'subgroup-matrix', variant: plan.variant, dispatches: 2, maxGroups: groups };
}
