import type { GpuDevice } from '../../devices/gpu-device.ts';
import type { KernelRecorder } from '../recorder.ts';
import { uploadTensor, type GpuTensor } from '../tensor.ts';
import { bindingBudget, checkViewExtent, packUniforms, rangeBinding, resolveView, type ViewInput } from './attention-common.ts';

/**
 * Rotary position embeddings. The angles, cosines and sines are computed on the host in f64
 * and uploaded as a table: WGSL's sin/cos are only accurate on [−π, π], and position ×
 * frequency reaches 10⁵ rad and beyond in long contexts, so the shader never evaluates them.
 *
 * A table is [rows, rotaryDim/2] (cos, sin) pairs, row = position (Llama: `ropeTable`) or
 * token (FLUX: `fluxRopeTable`, angles from multi-axis ids).
 */
export interface RopeTable {
  readonly tensor: GpuTensor;
  readonly rows: number;
  readonly rotaryDim: number;
  /** 'half': rotate-half pairs (i, i + rot/2) (Llama, Qwen2, NeoX); 'interleaved': (2i, 2i+1) (FLUX, GPT-J). */
  readonly mode: 'half' | 'interleaved';
}

export interface RopeTableOptions {
  /** Rotated dims per head (head_dim, or partial_rotary_factor · head_dim). */
  readonly rotaryDim: number;
  /** Positions 0 .. positions − 1 get a row. */
  readonly positions: number;
  readonly theta?: number;
  /** Frequencies per pair (rotaryDim/2), e.g. from llama3InvFreq; default theta^(−2i/rotaryDim). */
  readonly invFreq?: ArrayLike<number>;
  /** Multiplies cos and sin (YaRN's attention_factor). Default 1. */
  readonly attentionScaling?: number;
  readonly mode?: 'half' | 'interleaved';
  /**
   * 'f64' (default): exact angles. 'f32': Hugging Face's own float32 arithmetic (f32 inv_freq,
   * f32 position × frequency), to reproduce transformers' outputs bit for bit at long contexts.
   */
  readonly angles?: 'f64' | 'f32';
}

/** theta^(−2i/dim) for i < dim/2, in f64. */
export function ropeInvFreq(rotaryDim: number, theta = 10000): Float64Array {
  const half = rotaryDim / 2;
  return Float64Array.from({ length: half }, (_, i) => Math.pow(theta, (-2 * i) / rotaryDim));
}

/** Llama 3's rope_scaling (rope_type "llama3") applied to inverse frequencies. */
export function llama3InvFreq(invFreq: ArrayLike<number>, o: { factor: number; lowFreqFactor: number; highFreqFactor: number; originalMaxPositions: number }): Float64Array {
  const lowWavelen = o.originalMaxPositions / o.lowFreqFactor;
  const highWavelen = o.originalMaxPositions / o.highFreqFactor;
  return Float64Array.from(invFreq, (f) => {
    const wavelen = (2 * Math.PI) / f;
    if (wavelen < highWavelen) return f;
    if (wavelen > lowWavelen) return f / o.factor;
    const smooth = (o.originalMaxPositions / wavelen - o.lowFreqFactor) / (o.highFreqFactor - o.lowFreqFactor);
    return (1 - smooth) * (f / o.factor) + smooth * f;
  });
}

/** The cos/sin table as host values: [rows, half, 2]. */
export function ropeTableValues(o: RopeTableOptions): Float32Array {
  if (!Number.isInteger(o.rotaryDim) || o.rotaryDim < 2 || o.rotaryDim % 2 !== 0) throw new RangeError(`rope: rotaryDim ${o.rotaryDim} must be even and ≥ 2`);
  const half = o.rotaryDim / 2;
  const f = Math.fround;
  const theta = o.theta ?? 10000;
  let inv: ArrayLike<number> = o.invFreq ?? ropeInvFreq(o.rotaryDim, theta);
  if (inv.length !== half) throw new RangeError(`rope: ${inv.length} frequencies for ${half} pairs`);
  if (o.angles === 'f32' && !o.invFreq) {
    // transformers: 1 / base ** (arange(0, dim, 2).float() / dim), all float32
    inv = Float64Array.from({ length: half }, (_, i) => f(1 / f(Math.pow(theta, f(f(2 * i) / o.rotaryDim)))));
  } else if (o.angles === 'f32') {
    inv = Float64Array.from(inv, (x) => f(x));
  }
  const scaling = o.attentionScaling ?? 1;
  const out = new Float32Array(o.positions * half * 2);
  for (let p = 0; p < o.positions; p++) {
    for (let i = 0; i < half; i++) {
      const a = o.angles === 'f32' ? f(f(p) * inv[i]!) : p * inv[i]!;
      out[(p * half + i) * 2] = Math.cos(a) * scaling;
      out[(p * half + i) * 2 + 1] = Math.sin(a) * scaling;
    }
  }
  return out;
}

export async function ropeTable(gpu: GpuDevice, o: RopeTableOptions): Promise<RopeTable> {
  const values = ropeTableValues(o);
  const tensor = await uploadTensor(gpu, values, [o.positions, o.rotaryDim / 2, 2], 'f32', { label: 'rope.table' });
  return { tensor, rows: o.positions, rotaryDim: o.rotaryDim, mode: o.mode ?? 'half' };
}

/**
 * FLUX's multi-axis table (diffusers' FluxPosEmbed, float64 there too): ids [tokens, axes]
 * (text ids, then image ids (0, row, col)), axis a rotating axesDims[a] dims with angles
 * ids[t, a] · theta^(−2j/axesDims[a]); rows are tokens, pairs interleaved.
 */
export function fluxRopeTableValues(ids: ArrayLike<number>, axesDims: readonly number[], theta = 10000): Float32Array {
  const axes = axesDims.length;
  if (axes === 0 || ids.length % axes !== 0) throw new RangeError(`rope: ${ids.length} ids are not rows of ${axes} axes`);
  for (const d of axesDims) if (!Number.isInteger(d) || d < 2 || d % 2 !== 0) throw new RangeError(`rope: axis dim ${d} must be even`);
  const tokens = ids.length / axes;
  const half = axesDims.reduce((a, b) => a + b, 0) / 2;
  const out = new Float32Array(tokens * half * 2);
  for (let t = 0; t < tokens; t++) {
    let i = 0;
    for (let a = 0; a < axes; a++) {
      const d = axesDims[a]!;
      for (let j = 0; j < d / 2; j++, i++) {
        const angle = ids[t * axes + a]! * Math.pow(theta, (-2 * j) / d);
        out[(t * half + i) * 2] = Math.cos(angle);
        out[(t * half + i) * 2 + 1] = Math.sin(angle);
      }
    }
  }
  return out;
}

export async function fluxRopeTable(gpu: GpuDevice, ids: ArrayLike<number>, axesDims: readonly number[], theta = 10000): Promise<RopeTable> {
  const values = fluxRopeTableValues(ids, axesDims, theta);
  const rotaryDim = axesDims.reduce((a, b) => a + b, 0);
  const rows = ids.length / axesDims.length;
  const tensor = await uploadTensor(gpu, values, [rows, rotaryDim / 2, 2], 'f32', { label: 'rope.flux-table' });
  return { tensor, rows, rotaryDim, mode: 'interleaved' };
}

export interface RopeOptions {
  /** From x's shape [B, L, H, D] when it has rank 4. */
  readonly heads?: number;
  readonly headDim?: number;
  /** Output (default: x, in place). May be a view. */
  readonly out?: ViewInput;
  /** Table row of token l is positionOffset + l (a KV cache's length when decoding). Default 0. */
  readonly positionOffset?: number;
  /** u32 [B, L] table rows per token (left-padded batches); overrides positionOffset. */
  readonly positions?: GpuTensor;
}

/**
 * Rotates the first table.rotaryDim dims of every head of x [B, L, H, D] (or a view of it,
 * e.g. the q or k slice of a fused QKV output), f32 or f16 (f32 arithmetic). Rows past the
 * table's end use its last row (callers size tables for their context).
 */
export async function rope(rec: KernelRecorder, x: ViewInput, table: RopeTable, options: RopeOptions = {}): Promise<void> {
  const xv = resolveView(x, 'rope x');
  const ov = resolveView(options.out ?? x, 'rope out');
  const shape = xv.tensor.shape;
  const heads = options.heads ?? (shape.length === 4 ? shape[2] : undefined);
  const D = options.headDim ?? (shape.length === 4 ? shape[3] : undefined);
  if (heads === undefined || D === undefined) throw new RangeError('rope: x is not [B, L, H, D]; pass heads and headDim');
  if (table.rotaryDim > D) throw new RangeError(`rope: rotary dim ${table.rotaryDim} > head dim ${D}`);
  const B = xv.batch;
  const L = xv.rows;
  checkViewExtent(xv, B, L, heads * D, 'rope x');
  if (ov.batch !== B || ov.rows < L) throw new RangeError('rope: out does not match x');
  checkViewExtent(ov, B, L, heads * D, 'rope out');
  const dtype = xv.tensor.dtype;
  if (ov.tensor.dtype !== dtype || (dtype !== 'f32' && dtype !== 'f16')) throw new RangeError(`rope: ${dtype} → ${ov.tensor.dtype}; both f32 or both f16`);
  if (dtype === 'f16' && !rec.gpu.hasFeature('shader-f16')) throw new RangeError(`rope: f16 on ${rec.gpu.name}, which lacks shader-f16`);
  const inPlace = ov.tensor.buffer === xv.tensor.buffer;
  if (inPlace && (ov.offset !== xv.offset || ov.rowStride !== xv.rowStride || ov.batchStride !== xv.batchStride)) {
    throw new RangeError('rope: out shares x\'s buffer with a different layout');
  }
  const pos = options.positions;
  if (pos && (pos.dtype !== 'u32' && pos.dtype !== 'i32' || pos.shape.length !== 2 || pos.shape[0] !== B || pos.shape[1]! < L)) {
    throw new RangeError(`rope: positions must be u32 [${B}, ${L}]`);
  }
  if (B === 0 || L === 0 || heads === 0) return;
  const half = table.rotaryDim / 2;
  const items = half + (inPlace ? 0 : D - table.rotaryDim);
  const tableBinding = inPlace ? 1 : 2;
  const pipeline = await rec.pipeline('rope', {
    F16: dtype === 'f16', INTERLEAVED: table.mode === 'interleaved', INPLACE: inPlace, POSITIONS: !!pos,
    TABLE_BINDING: tableBinding, POS_BINDING: tableBinding + 1, PARAMS_BINDING: tableBinding + (pos ? 2 : 1),
  });
  const limits = rec.limits;
  const eb = dtype === 'f16' ? 2 : 4;
  const fits = [xv.tensor, ov.tensor, table.tensor, pos].every((t) => !t || t.buffer.size <= limits.maxStorageBufferBindingSize);
  // Chunks: all at once, else one batch and a run of rows per dispatch.
  const budget = bindingBudget(limits);
  const rowsPer = fits ? L : Math.min(Math.floor((budget / eb - heads * D) / Math.max(xv.rowStride, ov.rowStride, 1)) + 1, pos ? L : Math.floor(budget / (half * 8)));
  if (rowsPer < 1) throw new RangeError(`rope: one token's heads are larger than a binding (${limits.maxStorageBufferBindingSize})`);
  const offset = options.positionOffset ?? 0;
  for (let b0 = 0; b0 < B; b0 += fits ? B : 1) {
    const bn = fits ? B : 1;
    for (let l0 = 0; l0 < L; l0 += rowsPer) {
      const ln = Math.min(rowsPer, L - l0);
      const count = (v: typeof xv) => (bn - 1) * v.batchStride + (ln - 1) * v.rowStride + heads * D;
      const xr = rangeBinding(xv.tensor, xv.offset + b0 * xv.batchStride + l0 * xv.rowStride, count(xv), limits);
      const bindings = [xr.binding];
      let oBase = xr.base;
      if (!inPlace) {
        const or = rangeBinding(ov.tensor, ov.offset + b0 * ov.batchStride + l0 * ov.rowStride, count(ov), limits);
        bindings.push(or.binding);
        oBase = or.base;
      }
      // The table rows this chunk reads (all of them with per-token positions).
      const rowFirst = pos ? 0 : Math.min(offset + l0, table.rows - 1);
      const rowLast = pos ? table.rows - 1 : Math.min(offset + l0 + ln - 1, table.rows - 1);
      const tr = rangeBinding(table.tensor, rowFirst * half * 2, (rowLast - rowFirst + 1) * half * 2, limits);
      bindings.push(tr.binding);
      let posBase = 0;
      if (pos) {
        const pr = rangeBinding(pos, b0 * pos.shape[1]! + l0, (bn - 1) * pos.shape[1]! + ln, limits);
        bindings.push(pr.binding);
        posBase = pr.base;
      }
      const uniforms = packUniforms([
        bn, ln, heads, D,
        half, items, offset + l0, pos ? pos.shape[1]! : 0,
        xr.base, xv.rowStride, xv.batchStride, posBase,
        oBase, ov.rowStride, ov.batchStride, table.rows,
        rowFirst, tr.base / 2, 0, 0,
      ]);
      rec.dispatch(pipeline, bindings, uniforms, Math.ceil((bn * ln * heads * items) / 256), 'rope');
    }
  }
}
