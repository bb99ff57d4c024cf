import type { GpuDevice } from '../../devices/gpu-device.ts';
import type { KernelRecorder } from '../recorder.ts';
import { emptyTensor, type GpuTensor } from '../tensor.ts';
import { bindingBudget, checkViewExtent, packUniforms, rangeBinding, resolveView, type ViewInput } from './attention-common.ts';

/**
 * Writes n new rows of keys or values, values [B, n, W] (or a view: the k or v slice of a
 * fused QKV output), into cache [B, capacity, ...] (W elements a row: kv_heads · head_dim) at
 * rows position .. position + n − 1. Same dtype (f32 or f16). A cache larger than a binding
 * is written one batch and a run of rows at a time.
 */
export async function kvCacheWrite(rec: KernelRecorder, cache: GpuTensor, values: ViewInput, position: number,
  pair?: { readonly cache: GpuTensor; readonly values: ViewInput }): Promise<void> {
  const cv = resolveView(cache, 'kv cache');
  const sv = resolveView(values, 'kv values');
  const width = cv.rowStride;
  const B = cv.batch;
  const n = sv.rows;
  if (sv.batch !== B) throw new RangeError(`kvCacheWrite: values batch ${sv.batch}, cache batch ${B}`);
  if (!Number.isInteger(position) || position < 0 || position + n > cv.rows) {
    throw new RangeError(`kvCacheWrite: rows ${position}..${position + n} do not fit the cache's ${cv.rows}`);
  }
  checkViewExtent(sv, B, n, width, 'kvCacheWrite values');
  if (sv.tensor.dtype !== cache.dtype || (cache.dtype !== 'f32' && cache.dtype !== 'f16')) throw new RangeError(`kvCacheWrite: ${sv.tensor.dtype} → ${cache.dtype}; both f32 or both f16`);
  if (sv.tensor.buffer === cache.buffer) throw new RangeError('kvCacheWrite: values and cache share a buffer');
  if (B === 0 || n === 0 || width === 0) return;
  const limits = rec.limits;
  const eb = cache.dtype === 'f16' ? 2 : 4;
  const fits = [cache, sv.tensor].every((t) => t.buffer.size <= limits.maxStorageBufferBindingSize);
  if (pair && fits) {
    // Keys and values in one dispatch when both are laid out alike and fit their bindings.
    const pv = resolveView(pair.values, 'kv values');
    const pc = pair.cache;
    const alike = pv.offset === sv.offset && pv.rowStride === sv.rowStride && pv.batchStride === sv.batchStride && pv.rows === n && pv.batch === B
      && pc.dtype === cache.dtype && pv.tensor.dtype === cache.dtype && pc.shape.every((d, i) => d === cache.shape[i])
      && [pc, pv.tensor].every((t) => t.buffer.size <= limits.maxStorageBufferBindingSize) && pv.tensor.buffer !== pc.buffer;
    if (alike) {
      const pipeline = await rec.pipeline('kv_cache', { F16: cache.dtype === 'f16', PAIR: true });
      const span = (B - 1) * sv.batchStride + (n - 1) * sv.rowStride + width;
      const sr = rangeBinding(sv.tensor, sv.offset, span, limits);
      const vr = rangeBinding(pv.tensor, pv.offset, span, limits);
      const dr = rangeBinding(cache, position * width, (B - 1) * cv.batchStride + n * width, limits);
      const vdr = rangeBinding(pc, position * width, (B - 1) * cv.batchStride + n * width, limits);
      const uniforms = packUniforms([B, n, width, 0, sr.base, sv.rowStride, sv.batchStride, 0, dr.base, width, cv.batchStride, 0]);
      rec.dispatch(pipeline, [sr.binding, vr.binding, dr.binding, vdr.binding], uniforms, Math.ceil((2 * B * n * width) / 256), 'kv_cache pair');
      return;
    }
  }
  if (pair) await kvCacheWrite(rec, pair.cache, pair.values, position);
  const pipeline = await rec.pipeline('kv_cache', { F16: cache.dtype === 'f16', PAIR: false });
  const rowsPer = fits ? n : Math.floor((bindingBudget(limits) / eb - width) / Math.max(sv.rowStride, width)) + 1;
  if (rowsPer < 1) throw new RangeError(`kvCacheWrite: one row of ${width} elements is larger than a binding`);
  for (let b0 = 0; b0 < B; b0 += fits ? B : 1) {
    const bn = fits ? B : 1;
    for (let r0 = 0; r0 < n; r0 += rowsPer) {
      const rn = Math.min(rowsPer, n - r0);
      const sr = rangeBinding(sv.tensor, sv.offset + b0 * sv.batchStride + r0 * sv.rowStride, (bn - 1) * sv.batchStride + (rn - 1) * sv.rowStride + width, limits);
      const dr = rangeBinding(cache, b0 * cv.batchStride + (position + r0) * width, (bn - 1) * cv.batchStride + rn * width, limits);
      const uniforms = packUniforms([bn, rn, width, 0, sr.base, sv.rowStride, sv.batchStride, 0, dr.base, width, cv.batchStride, 0]);
      rec.dispatch(pipeline, [sr.binding, dr.binding], uniforms, Math.ceil((bn * rn * width) / 256), 'kv_cache');
    }
  }
}

/** A KV cache of one attention layer: k and v [B, capacity, kvHeads, headDim], `length` rows filled. */
export class KvCache {
  readonly k: GpuTensor;
  readonly v: GpuTensor;
  length = 0;

  constructor(k: GpuTensor, v: GpuTensor) {
    this.k = k;
    this.v = v;
  }

  static async create(gpu: GpuDevice, o: { batch: number; capacity: number; kvHeads: number; headDim: number; dtype?: 'f32' | 'f16' }): Promise<KvCache> {
    const shape = [o.batch, o.capacity, o.kvHeads, o.headDim];
    const k = await emptyTensor(gpu, shape, o.dtype ?? 'f32', 'kv-cache.k');
    try {
      return new KvCache(k, await emptyTensor(gpu, shape, o.dtype ?? 'f32', 'kv-cache.v'));
    } catch (error) {
      k.destroy();
      throw error;
    }
  }

  get capacity(): number {
    return this.k.shape[1]!;
  }

  /** Records the writes of n new rows at `length` and advances it; returns the rows' first position. */
  async append(rec: KernelRecorder, k: ViewInput, v: ViewInput): Promise<number> {
    const position = this.length;
    const n = resolveView(k, 'kv k').rows;
    await kvCacheWrite(rec, this.k, k, position, { cache: this.v, values: v });
    this.length = position + n;
    return position;
  }

  destroy(): void {
    this.k.destroy();
    this.v.destroy();
  }
}
