import type { GpuDevice } from '../../devices/gpu-device.ts';
import { bindingChunks, type KernelLimits } from '../limits.ts';
import { bestPath, pathSupport, type KernelPath } from '../paths.ts';
import type { Binding, KernelRecorder } from '../recorder.ts';
import type { ShaderDefines } from '../shaders.ts';
import { GPU_DTYPE_LAYOUT, type GpuTensor } from '../tensor.ts';
import {
  biasCode, gemvAlignedRows, gemvDecoder, LINEAR_WEIGHT_DTYPES, sgmatMicrokernel, tileDecoder, tiledMicrokernel,
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

/** Batches up to this many rows go through the GEMV kernel by default. */
export const GEMV_MAX_M = 4;

export interface LinearOptions {
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
    return {
      shader: 'gemv',
      defines: {
        F16: f16, SUBGROUPS: subgroups, WG: wg, ROWS: rows, CHUNK: dec.chunk, CHUNK1: dec.chunk === 1, XV: Math.max(1, dec.chunk / 4),
        W_TYPE: dec.wType, DEQUANT: dec.code, BIAS: spec.bias !== null, BIAS_FN: biasFn,
      },
      kernel: 'gemv',
      variant: `gemv rows=${rows} threads=${wg} ${subgroups ? 'subgroups' : 'workgroup-reduction'} ${dec.chunk === 1 ? 'scalar' : `chunk=${dec.chunk}`}`,
      groups: (mc, nc) => mc * Math.ceil(nc / rows),
      seventh: () => k / dec.chunk,
    };
  }
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
  const wd = w.dtype as LinearWeightDtype;
  if (!LINEAR_WEIGHT_DTYPES.includes(wd)) throw new LinearShapeError(`linear: weights in ${w.dtype} are not supported (${LINEAR_WEIGHT_DTYPES.join(', ')})`);
  if (w.shape.length !== 2) throw new LinearShapeError(`linear: weights must be [N, K], got ${JSON.stringify(w.shape)}`);
  const [n, k] = w.shape as [number, number];
  if (x.dtype !== 'f32' && x.dtype !== 'f16') throw new LinearShapeError(`linear: activations must be f32 or f16, got ${x.dtype}`);
  if (out.dtype !== x.dtype) throw new LinearShapeError(`linear: out is ${out.dtype} but x is ${x.dtype}`);
  if (x.shape[x.shape.length - 1] !== k) throw new LinearShapeError(`linear: x ${JSON.stringify(x.shape)} does not end in K = ${k}`);
  const m = x.elements / k;
  if (out.shape[out.shape.length - 1] !== n || out.elements !== m * n) throw new LinearShapeError(`linear: out ${JSON.stringify(out.shape)} is not [${m}, ${n}]`);
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
  const spec: LinearKernelSpec = {
    kernel, path, weights: wd, k, m, n, f16, bias: biasDtype, subgroups: gpu.hasFeature('subgroups'),
    workgroupStorage: limits.maxComputeWorkgroupStorageSize,
    directChunks: [...nChunks, ...mChunks].every((c) => c.count % 16 === 0 || c.first + c.count === (nChunks.includes(c) ? n : m)),
  };
  let plan = linearKernel(spec, options);
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
      const params = new ArrayBuffer(32);
      new Uint32Array(params, 0, 7).set([mc.count, nc.count, k, n, nc.first, groups, plan.seventh(mc.count, nc.count)]);
      new Float32Array(params, 28, 1)[0] = w.scale;
      const bindings: Binding[] = [
        range(x, mc.first * k * xb, mc.count * k * xb),
        range(w, nc.first * wRow, nc.count * wRow),
      ];
      if (bias) bindings.push(bias.buffer);
      bindings.push(range(out, mc.first * n * xb, mc.count * n * xb));
      rec.dispatch(pipeline, bindings, new Uint8Array(params), groups, `linear ${variant}`);
      dispatches++;
      maxGroups = Math.max(maxGroups, groups);
    }
  }
  return { kernel: plan.kernel, path, variant, dispatches, maxGroups };
}
