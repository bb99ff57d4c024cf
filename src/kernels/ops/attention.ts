import type { GpuDevice } from '../../devices/gpu-device.ts';
import type { KernelLimits } from '../limits.ts';
import { bestPath, pathSupport, type KernelPath } from '../paths.ts';
import type { Binding, KernelRecorder } from '../recorder.ts';
import type { GpuTensor } from '../tensor.ts';
import {
  allFit, bindingBudget, canUseSubgroups, checkViewExtent, dummyBuffer, elementBytes, packUniforms, rangeBinding,
  resolveView, scratchBuffer, type ResolvedView, type ViewInput,
} from './attention-common.ts';

/**
 * Multi-head scaled-dot-product attention, flash style (online softmax; the Lq × Lk score
 * matrix is never stored).
 *
 * Layouts (the linear layers' outputs, no transposes): q and out [B, Lq, H, D], k and v
 * [B, Lk, Hkv, D] (a KV cache: [B, capacity, Hkv, D] with `kvLength` rows in use), row-major.
 * Any of them may be a view ({ tensor, offset, rowStride, batchStride }), e.g. a slice of a
 * fused QKV output. Query head h reads kv head floor(h / (H / Hkv)) (GQA, MQA).
 *
 * Options: `causal` (query i sees key j when j ≤ i + causalOffset; the offset defaults to
 * Lk − Lq, bottom-right aligned as decoding with a KV cache needs), `mask` (additive f32,
 * broadcast to [B, H, Lq, Lk]: CLIP's causal mask, padding masks, any bias), `keyPadding`
 * ([B, Lk] u32/i32/f32, 0 masks the key: Hugging Face's attention_mask), `relativeBias`
 * (f32 [H, Lq + Lk − 1] from t5RelativeBias: T5), `scale` (default 1/√D; T5 uses 1).
 * Scores below −1e30 count as masked (−inf masks work); a row with no unmasked key outputs 0.
 *
 * Kernels: f32 (f32 tensors; always there), f16 (f16 tensors, f32 arithmetic: scores and
 * sums never overflow f16) and subgroup-matrix (f16 tensors on tensor cores; head dim a
 * multiple of 16 up to 128). f16 tensors take `bestPath(gpu)` unless `path` forces one; the
 * f16 kernel stands in where subgroup matrices can't run the call. The f32/f16 kernel reduces
 * rows with subgroup shuffles where the device has subgroups (`subgroups: false` forces the
 * workgroup-memory fallback).
 *
 * Tensors larger than a storage binding are bound in ranges: per batch, head range, query
 * chunk and key chunk; key chunks carry (max, sum, output) between dispatches in a scratch
 * buffer. More than 65,535 workgroups spread over a 2-D grid.
 */
export interface AttentionOptions {
  /** Query heads; from q's shape [B, Lq, H, D] when it has rank 4. */
  readonly heads?: number;
  /** Key/value heads; from k's shape when it has rank 4, else `heads`. */
  readonly kvHeads?: number;
  /** From q's shape when it has rank 4. */
  readonly headDim?: number;
  /** Keys attended: the first kvLength rows of k and v (a KV cache's filled length). Default: all rows. */
  readonly kvLength?: number;
  readonly scale?: number;
  readonly causal?: boolean;
  readonly causalOffset?: number;
  readonly mask?: GpuTensor;
  readonly keyPadding?: GpuTensor;
  readonly relativeBias?: GpuTensor;
  /** Forces a kernel path for f16 tensors ('f16' or 'subgroup-matrix'); f32 tensors take 'f32'. */
  readonly path?: KernelPath;
  /** false forces the reductions through workgroup memory on devices with subgroups. */
  readonly subgroups?: boolean;
  /**
   * Lq = 1 without mask, key padding or relative bias (decoding) runs attention_decode.wgsl, a
   * workgroup per (batch, head); false forces the tiled kernels.
   */
  readonly decodeKernel?: boolean;
  /**
   * subgroup-matrix kernel: 'direct' loads Q, K and V matrices straight from the buffers
   * (the default where offsets and strides are multiples of 8 and no tile reads past a buffer's
   * end: Dawn clamps such a load as a whole, moving its valid rows too), 'staged' copies K and
   * V tiles to workgroup memory first.
   */
  readonly tensorCoreLoads?: 'direct' | 'staged';
  /**
   * subgroup-matrix kernel: keys per tile, 32 (default) or 64 (direct loads only; measured
   * slower on H100: 13.5 vs 20.7 TFLOP/s, bench/results/attention.json).
   */
  readonly tensorCoreKeys?: 32 | 64;
}

export type AttentionKernel = 'f32' | 'f16' | 'subgroup-matrix' | 'decode';

/** What ran: the kernel, whether it used subgroups, and how the work was split. */
export interface AttentionRun {
  readonly kernel: AttentionKernel;
  readonly subgroups: boolean;
  readonly dispatches: number;
  /** Tensors bound in ranges (larger than one binding allows). */
  readonly split: boolean;
  /** Keys split over dispatches (state carried in scratch). */
  readonly splitKeys: boolean;
  /** Why subgroup-matrix was asked for but the f16 kernel ran. */
  readonly fallback?: string;
  /** subgroup-matrix only: how its operands were loaded, and keys per tile. */
  readonly tensorCoreLoads?: 'direct' | 'staged';
  readonly tensorCoreKeys?: 32 | 64;
}

/** The resolved shape of one attention call. */
export interface AttentionShape {
  readonly batch: number;
  readonly lq: number;
  readonly lk: number;
  readonly heads: number;
  readonly kvHeads: number;
  readonly headDim: number;
}

const BR = 32;         // attention.wgsl query rows per workgroup
const BR_SGMAT = 64;   // attention_sgmat.wgsl
const DV = 128;        // output columns per workgroup (slice)
const STATE_WORDS = 130;
/** Workgroup memory of attention_sgmat.wgsl: staged (K/V tiles, scores, probabilities), direct with 32 or 64 keys. */
const SGMAT_WORKGROUP_BYTES = { staged: 32004, direct32: 14596, direct64: 26884 } as const;

/** attention_decode.wgsl: head dims up to this (two output columns per thread of 128). */
const DECODE_MAX_D = 256;

const FLAG = { causal: 1, mask: 2, keyPadding: 4, relBias: 8, resumeIn: 16, resumeOut: 32 } as const;

export function attentionShape(q: ViewInput, k: ViewInput, options: AttentionOptions = {}): AttentionShape {
  const qv = resolveView(q, 'attention q');
  const kv = resolveView(k, 'attention k');
  const qShape = qv.tensor.shape;
  const kShape = kv.tensor.shape;
  const heads = options.heads ?? (qShape.length === 4 ? qShape[2] : undefined);
  const headDim = options.headDim ?? (qShape.length === 4 ? qShape[3] : undefined);
  if (heads === undefined || headDim === undefined) throw new RangeError('attention: q is not [B, Lq, H, D]; pass heads and headDim');
  const kvHeads = options.kvHeads ?? (kShape.length === 4 ? kShape[2]! : heads);
  const lk = options.kvLength ?? kv.rows;
  for (const [name, value] of [['heads', heads], ['kvHeads', kvHeads], ['headDim', headDim]] as const) {
    if (!Number.isInteger(value) || value < 1) throw new RangeError(`attention: ${name} ${value} is not a positive integer`);
  }
  if (heads % kvHeads !== 0) throw new RangeError(`attention: ${heads} heads is not a multiple of ${kvHeads} kv heads`);
  if (!Number.isInteger(lk) || lk < 0 || lk > kv.rows) throw new RangeError(`attention: kvLength ${lk} is outside k's ${kv.rows} rows`);
  return { batch: qv.batch, lq: qv.rows, lk, heads, kvHeads, headDim };
}

/** FLOPs of one call (2 for QKᵀ and 2 for PV per query-key-dim triple; halved for causal Lq = Lk). */
export function attentionFlops(s: AttentionShape, causal = false): number {
  const full = 4 * s.batch * s.heads * s.lq * s.lk * s.headDim;
  return causal ? full / 2 : full;
}

interface MaskLayout { readonly tensor: GpuTensor; readonly bs: number; readonly hs: number; readonly qs: number }

function maskLayout(mask: GpuTensor, s: AttentionShape): MaskLayout {
  if (mask.dtype !== 'f32') throw new RangeError(`attention: the mask is ${mask.dtype}; masks and biases are f32`);
  if (mask.shape.length < 1 || mask.shape.length > 4) throw new RangeError(`attention: mask rank ${mask.shape.length}, expected 1 to 4 dims broadcast to [B, H, Lq, Lk]`);
  const [mb, mh, mq, mk] = [...Array(4 - mask.shape.length).fill(1), ...mask.shape] as [number, number, number, number];
  const ok = (d: number, full: number) => d === 1 || d === full;
  if (!ok(mb, s.batch) || !ok(mh, s.heads) || !ok(mq, s.lq) || mk < s.lk || (mk === 1 && s.lk > 1)) {
    throw new RangeError(`attention: mask shape ${JSON.stringify(mask.shape)} does not broadcast to [${s.batch}, ${s.heads}, ${s.lq}, ${s.lk}]`);
  }
  return {
    tensor: mask,
    qs: mq === 1 ? 0 : mk,
    hs: mh === 1 ? 0 : mq * mk,
    bs: mb === 1 ? 0 : mh * mq * mk,
  };
}

/** Why the subgroup-matrix kernel can't run this call, or null when it can. */
export function subgroupMatrixUnfit(gpu: GpuDevice, headDim: number, limits: KernelLimits, variant: keyof typeof SGMAT_WORKGROUP_BYTES = 'direct32'): string | null {
  if (!pathSupport(gpu).subgroupMatrix) return 'the device lacks chromium-experimental-subgroup-matrix';
  if (headDim % 16 !== 0 || headDim > 128) return `head dim ${headDim} is not a multiple of 16 up to 128`;
  const bytes = SGMAT_WORKGROUP_BYTES[variant];
  if (limits.maxComputeWorkgroupStorageSize < bytes) return `workgroup memory ${limits.maxComputeWorkgroupStorageSize} < ${bytes} bytes`;
  if (limits.maxComputeInvocationsPerWorkgroup < 128) return 'fewer than 128 invocations per workgroup';
  // The adapter's info (Dawn lists subgroup sizes and matrix configurations there).
  type Info = { subgroupMinSize?: number; subgroupMaxSize?: number; subgroupMatrixConfigs?: ReadonlyArray<{ componentType: string; resultComponentType: string; M: number; N: number; K: number }> };
  const info = ((gpu as unknown as { adapterInfo?: Info }).adapterInfo ?? (gpu.device as unknown as { adapterInfo?: Info }).adapterInfo);
  if (info?.subgroupMinSize !== undefined) {
    if (info.subgroupMinSize !== 32 || info.subgroupMaxSize !== 32) return `subgroup size ${info.subgroupMinSize}..${info.subgroupMaxSize}, the kernel needs exactly 32`;
  } else if (gpu.vendor !== 'nvidia') {
    return 'the adapter does not report its subgroup size';
  }
  // An empty list (seen on H100 with npm webgpu 0.6.2) trusts the feature; a pipeline that fails to build falls back.
  const configs = info?.subgroupMatrixConfigs ?? [];
  if (configs.length > 0 && !configs.some((c) => c.componentType === 'f16' && c.resultComponentType === 'f32' && c.M === 16 && c.N === 16 && c.K === 16)) {
    return 'no f16 16×16×16 subgroup-matrix configuration with f32 results';
  }
  return null;
}

/** Per device and load variant: the pipeline in the subgroupMatrixLoad syntax that compiles (Dawn changed it), or why none does. */
const sgmatBuilt = new WeakMap<GpuDevice, Map<string, Promise<{ pipeline: GPUComputePipeline } | { error: string }>>>();

function sgmatPipeline(rec: KernelRecorder, DIRECT: boolean, BC: 32 | 64): Promise<{ pipeline: GPUComputePipeline } | { error: string }> {
  let byVariant = sgmatBuilt.get(rec.gpu);
  if (!byVariant) sgmatBuilt.set(rec.gpu, (byVariant = new Map()));
  let p = byVariant.get(`${DIRECT}.${BC}`);
  if (!p) {
    p = (async () => {
      const errors: string[] = [];
      for (const NEW_SYNTAX of [true, false]) {
        try {
          return { pipeline: await rec.pipeline('attention_sgmat', { NEW_SYNTAX, DIRECT, BC, BC64: BC === 64 }) };
        } catch (error) {
          errors.push(String((error as Error).message ?? error));
        }
      }
      return { error: errors.join(' | ') };
    })();
    byVariant.set(`${DIRECT}.${BC}`, p);
  }
  return p;
}

interface Chunking { readonly nb: number; readonly nh: number; readonly nq: number; readonly nk: number; readonly split: boolean }

export async function attention(rec: KernelRecorder, q: ViewInput, k: ViewInput, v: ViewInput, out: ViewInput,
  options: AttentionOptions = {}): Promise<AttentionRun> {
  const gpu = rec.gpu;
  const limits = rec.limits;
  const s = attentionShape(q, k, options);
  const { batch: B, lq: Lq, lk: Lk, heads: H, kvHeads: Hkv, headDim: D } = s;
  const group = H / Hkv;
  const qv = resolveView(q, 'attention q');
  const kv = resolveView(k, 'attention k');
  const vv = resolveView(v, 'attention v');
  const ov = resolveView(out, 'attention out');
  for (const [name, view, rows, width] of [['q', qv, Lq, H * D], ['k', kv, Lk, Hkv * D], ['v', vv, Lk, Hkv * D], ['out', ov, Lq, H * D]] as const) {
    if (view.batch !== B) throw new RangeError(`attention: ${name} has batch ${view.batch}, q has ${B}`);
    if (view.rows < rows) throw new RangeError(`attention: ${name} has ${view.rows} rows, ${rows} needed`);
    checkViewExtent(view, B, rows, width, `attention ${name}`);
  }
  const dtype = qv.tensor.dtype;
  if ([kv, vv, ov].some((x) => x.tensor.dtype !== dtype) || (dtype !== 'f32' && dtype !== 'f16')) {
    throw new RangeError(`attention: q, k, v, out are ${[qv, kv, vv, ov].map((x) => x.tensor.dtype).join(', ')}; all must be f32 or all f16`);
  }
  if (new Set([kv.tensor.buffer, vv.tensor.buffer, qv.tensor.buffer].filter((b) => b === ov.tensor.buffer)).size > 0) {
    throw new RangeError('attention: out must not share a buffer with q, k or v');
  }

  let kernel: AttentionKernel;
  let fallback: string | undefined;
  if (dtype === 'f32') {
    if (options.path && options.path !== 'f32') throw new RangeError(`attention: path ${options.path} needs f16 tensors, these are f32`);
    kernel = 'f32';
  } else {
    if (!gpu.hasFeature('shader-f16')) throw new RangeError(`attention: f16 tensors on ${gpu.name}, which lacks shader-f16`);
    const wanted = options.path ?? bestPath(gpu);
    if (wanted === 'f32') throw new RangeError('attention: path f32 needs f32 tensors, these are f16');
    kernel = wanted;
  }

  const mask = options.mask ? maskLayout(options.mask, s) : null;
  const kp = options.keyPadding;
  if (kp) {
    if (elementBytes(kp) !== 4 || kp.dtype === 'bf16') throw new RangeError(`attention: keyPadding is ${kp.dtype}; use u32, i32 or f32 (0 masks)`);
    if (kp.shape.length !== 2 || (kp.shape[0] !== B && kp.shape[0] !== 1) || kp.shape[1]! < Lk) {
      throw new RangeError(`attention: keyPadding shape ${JSON.stringify(kp.shape)}, expected [${B}, ${Lk}]`);
    }
  }
  const kpBs = kp && kp.shape[0] !== 1 ? kp.shape[1]! : 0;
  const rb = options.relativeBias;
  const R = Lq + Lk - 1;
  if (rb) {
    if (rb.dtype !== 'f32' || rb.shape.length !== 2 || rb.shape[0] !== H || rb.shape[1] !== R) {
      throw new RangeError(`attention: relativeBias is ${rb.dtype} ${JSON.stringify(rb.shape)}, expected f32 [${H}, ${R}] (t5RelativeBias for Lq ${Lq}, Lk ${Lk})`);
    }
  }
  const scale = options.scale ?? 1 / Math.sqrt(D);
  const causalOffset = options.causalOffset ?? Lk - Lq;
  const subgroups = (options.subgroups ?? true) && canUseSubgroups(gpu);
  const tensors = [qv.tensor, kv.tensor, vv.tensor, ov.tensor, mask?.tensor, kp, rb];
  const whole = allFit(tensors, limits);

  // One query row (decoding): a workgroup per (batch, head) instead of 32-row query tiles.
  if (Lq === 1 && !mask && !kp && !rb && whole && D <= DECODE_MAX_D && options.decodeKernel !== false && B * H > 0) {
    const keys = options.causal ? Math.max(0, Math.min(Lk, causalOffset + 1)) : Lk;
    const pipeline = await rec.pipeline('attention_decode', { F16: dtype === 'f16' });
    const uniforms = packUniforms([
      keys, H, D, group,
      qv.offset, qv.batchStride, kv.offset, kv.rowStride,
      kv.batchStride, vv.offset, vv.rowStride, vv.batchStride,
      ov.offset, ov.batchStride, B * H, { f32: scale },
    ]);
    rec.dispatch(pipeline, [qv.tensor.buffer, kv.tensor.buffer, vv.tensor.buffer, ov.tensor.buffer], uniforms, B * H, 'attention.decode');
    return { kernel: 'decode', subgroups: false, dispatches: 1, split: false, splitKeys: false };
  }

  // Direct loads: 8-element alignment, and every tile's rows (rounded up to whole tiles) inside the buffers.
  const aligned8 = [qv, kv, vv].every((x) => x.offset % 8 === 0 && x.rowStride % 8 === 0 && x.batchStride % 8 === 0);
  const inside = (x: ResolvedView, rows: number, width: number) =>
    x.offset + (B - 1) * x.batchStride + (rows - 1) * x.rowStride + width <= x.tensor.buffer.size / 2;
  const keysPerTile: 32 | 64 = options.tensorCoreKeys ?? 32;
  const roundUp = (n: number, m: number) => Math.ceil(n / m) * m;
  const directOk = aligned8 && inside(qv, roundUp(Lq, BR_SGMAT), H * D)
    && inside(kv, roundUp(Lk, keysPerTile), Hkv * D) && inside(vv, roundUp(Lk, keysPerTile), Hkv * D);
  const tensorCoreLoads = options.tensorCoreLoads === 'staged' || !directOk ? 'staged' : 'direct';
  const tensorCoreKeys: 32 | 64 = tensorCoreLoads === 'staged' ? 32 : keysPerTile;
  if (kernel === 'subgroup-matrix') {
    const unaligned = [qv, kv, vv].some((x) => x.offset % 4 || x.rowStride % 4 || x.batchStride % 4);
    const why = !whole ? 'tensors larger than one binding (split bindings run the f16 kernel)'
      : unaligned ? 'q, k or v offsets or strides are not multiples of 4 elements (the kernel reads vec4<f16>)'
      : subgroupMatrixUnfit(gpu, D, limits, tensorCoreLoads === 'staged' ? 'staged' : tensorCoreKeys === 64 ? 'direct64' : 'direct32');
    if (why) {
      kernel = 'f16';
      fallback = why;
    }
  }
  let sgmat: GPUComputePipeline | null = null;
  if (kernel === 'subgroup-matrix') {
    const built = await sgmatPipeline(rec, tensorCoreLoads === 'direct', tensorCoreKeys);
    if ('pipeline' in built) sgmat = built.pipeline;
    else {
      kernel = 'f16';
      fallback = `attention_sgmat.wgsl did not compile: ${built.error}`;
    }
  }
  if (B === 0 || Lq === 0 || H === 0) return { kernel, subgroups: false, dispatches: 0, split: false, splitKeys: false, ...(fallback ? { fallback } : {}) };

  const slices = Math.ceil(D / DV);
  const eb = dtype === 'f16' ? 2 : 4;
  const chunking: Chunking = whole
    ? { nb: B, nh: H, nq: Lq, nk: Lk, split: false }
    : planChunks(s, { qv, kv, vv, ov }, mask, kp, rb, eb, slices, limits);
  const splitKeys = chunking.nk < Lk;
  const pipeline = sgmat ?? await rec.pipeline('attention', { F16: dtype === 'f16', SUBGROUPS: subgroups });
  const roDummy = (await dummyBuffer(gpu, false)).buffer;
  const rwDummy = (await dummyBuffer(gpu, true)).buffer;
  const state = splitKeys ? (await scratchBuffer(gpu, chunking.nq * chunking.nh * slices * STATE_WORDS * 4)).buffer : rwDummy;
  const br = sgmat ? BR_SGMAT : BR;
  let dispatches = 0;

  const { nb, nh, nq, nk } = chunking;
  for (let b0 = 0; b0 < B; b0 += nb) {
    const bn = Math.min(nb, B - b0);
    for (let h0 = 0; h0 < H; h0 += nh) {
      const hn = Math.min(nh, H - h0);
      const kvh0 = Math.floor(h0 / group);
      const kvhn = Math.floor((h0 + hn - 1) / group) - kvh0 + 1;
      for (let q0 = 0; q0 < Lq; q0 += nq) {
        const qn = Math.min(nq, Lq - q0);
        for (let k0 = 0; k0 < Math.max(Lk, 1); k0 += Math.max(nk, 1)) {
          const kn = Math.min(nk, Lk - k0);
          const span = (view: ResolvedView, rows: number, row0: number, width: number, head0: number) => rangeBinding(view.tensor,
            view.offset + b0 * view.batchStride + row0 * view.rowStride + head0 * D,
            (bn - 1) * view.batchStride + Math.max(rows - 1, 0) * view.rowStride + width, limits);
          const qr = span(qv, qn, q0, hn * D, h0);
          const or = span(ov, qn, q0, hn * D, h0);
          const kr = span(kv, kn, k0, kvhn * D, kvh0);
          const vr = span(vv, kn, k0, kvhn * D, kvh0);
          const bindings: Binding[] = [qr.binding, kr.binding, vr.binding, or.binding];
          let flags = 0;
          let mBase = 0;
          if (mask) {
            const mr = rangeBinding(mask.tensor, b0 * mask.bs + h0 * mask.hs + q0 * mask.qs + k0,
              (bn - 1) * mask.bs + (hn - 1) * mask.hs + Math.max(qn - 1, 0) * mask.qs + Math.max(kn, 1), limits);
            bindings.push(mr.binding);
            mBase = mr.base;
            flags |= FLAG.mask;
          } else bindings.push(roDummy);
          let kpBase = 0;
          if (kp) {
            const r = rangeBinding(kp, b0 * kpBs + k0, (bn - 1) * kpBs + Math.max(kn, 1), limits);
            bindings.push(r.binding);
            kpBase = r.base;
            flags |= FLAG.keyPadding;
          } else bindings.push(roDummy);
          let rbBase = 0;
          if (rb) {
            // table index of (h, i, j) = h·R + j − i + Lq − 1, absolute i, j
            const lo = h0 * R + k0 - (q0 + qn - 1) + Lq - 1;
            const hi = (h0 + hn - 1) * R + (k0 + Math.max(kn, 1) - 1) - q0 + Lq - 1;
            const r = rangeBinding(rb, lo, hi - lo + 1, limits);
            bindings.push(r.binding);
            rbBase = r.base + (h0 * R + k0 - q0 + Lq - 1 - lo);
            flags |= FLAG.relBias;
          } else bindings.push(roDummy);
          if (!sgmat) bindings.push(state);
          if (options.causal) flags |= FLAG.causal;
          if (splitKeys && k0 > 0) flags |= FLAG.resumeIn;
          if (splitKeys && k0 + nk < Lk) flags |= FLAG.resumeOut;
          const qTiles = Math.ceil(qn / br);
          const uniforms = packUniforms([
            qn, Math.max(kn, 0), hn, D,
            group, h0, kvh0, bn,
            qTiles, sgmat ? 1 : slices, q0, k0,
            qr.base, qv.rowStride, qv.batchStride,
            kr.base, kv.rowStride, kv.batchStride,
            vr.base, vv.rowStride, vv.batchStride,
            or.base, ov.rowStride, ov.batchStride,
            mBase, mask?.hs ?? 0, mask?.qs ?? 0, mask?.bs ?? 0,
            kpBase, kpBs, { i32: rbBase }, R,
            { i32: causalOffset }, { f32: scale }, flags, 0,
          ]);
          rec.dispatch(pipeline, bindings, uniforms, qTiles * (sgmat ? 1 : slices) * hn * bn, `attention.${kernel}`);
          dispatches++;
          if (Lk === 0) break;
        }
      }
    }
  }
  return { kernel, subgroups: !sgmat && subgroups, dispatches, split: !whole, splitKeys, ...(fallback ? { fallback } : {}), ...(sgmat ? { tensorCoreLoads, tensorCoreKeys } : {}) };
}

/**
 * Chunk sizes for tensors larger than a binding: one batch per dispatch, then heads, query rows
 * and keys halved until every bound range (and the split-key state) fits.
 */
function planChunks(s: AttentionShape, views: { qv: ResolvedView; kv: ResolvedView; vv: ResolvedView; ov: ResolvedView },
  mask: MaskLayout | null, kp: GpuTensor | undefined, rb: GpuTensor | undefined, eb: number, slices: number, limits: KernelLimits): Chunking {
  const budget = bindingBudget(limits);
  const { lq: Lq, lk: Lk, heads: H, kvHeads: Hkv, headDim: D } = s;
  const group = H / Hkv;
  const big = (t: GpuTensor | undefined) => !!t && t.buffer.size > limits.maxStorageBufferBindingSize;
  let nh = H;
  let nq = Math.max(Lq, 1);
  let nk = Math.max(Lk, 1);
  const half = (n: number) => Math.ceil(n / 2);
  for (;;) {
    const kvh = Math.min(Hkv, Math.floor((nh - 1) / group) + 2);
    const over: Array<[string, number]> = [];
    const check = (name: string, bytes: number, on: boolean) => { if (on && bytes > budget) over.push([name, bytes]); };
    check('q', ((nq - 1) * views.qv.rowStride + nh * D) * eb, big(views.qv.tensor));
    check('out', ((nq - 1) * views.ov.rowStride + nh * D) * eb, big(views.ov.tensor));
    check('k', ((nk - 1) * views.kv.rowStride + kvh * D) * eb, big(views.kv.tensor));
    check('v', ((nk - 1) * views.vv.rowStride + kvh * D) * eb, big(views.vv.tensor));
    if (mask) check('mask', ((nh - 1) * mask.hs + (nq - 1) * mask.qs + nk) * 4, big(mask.tensor));
    check('keyPadding', nk * 4, big(kp));
    check('relativeBias', ((nh - 1) * (Lq + Lk - 1) + nq + nk) * 4, big(rb));
    check('state', nq * nh * slices * STATE_WORDS * 4, nk < Lk);
    if (over.length === 0) return { nb: 1, nh, nq, nk, split: true };
    const [name] = over[0]!;
    const before = [nh, nq, nk].join();
    if (name === 'q' || name === 'out' || name === 'state') {
      if (nq > 1) nq = half(nq);
      else if (nh > 1) nh = half(nh);
    } else if (name === 'k' || name === 'v' || name === 'keyPadding') {
      if (nk > 1) nk = half(nk);
      else if (nh > 1) nh = half(nh);
    } else if (name === 'mask') {
      const terms: Array<[number, () => void]> = [
        [(nh - 1) * mask!.hs, () => { nh = half(nh); }],
        [(nq - 1) * mask!.qs, () => { nq = half(nq); }],
        [nk > 1 ? nk : 0, () => { nk = half(nk); }],
      ];
      terms.sort((a, b) => b[0] - a[0]);
      if (terms[0]![0] > 0) terms[0]![1]();
    } else {
      if (nh > 1 && (nh - 1) * (Lq + Lk - 1) >= nq + nk) nh = half(nh);
      else if (nq >= nk && nq > 1) nq = half(nq);
      else if (nk > 1) nk = half(nk);
    }
    if ([nh, nq, nk].join() === before) {
      throw new RangeError(`attention: ${over[0]![0]} needs ${over[0]![1]} bytes for a single row, more than a binding (${limits.maxStorageBufferBindingSize})`);
    }
  }
}
