/**
 * CPU reference of ops/attention.ts: naive scaled-dot-product attention in f64, the whole
 * score row at once (the GPU kernels never build it). Layouts as the op's defaults:
 * q [B, Lq, H, D], k and v [B, Lk, Hkv, D], out [B, Lq, H, D], all row-major.
 *
 * Semantics shared with the kernels: a score is masked when causal excludes it, when the key
 * padding is 0 at that key, or when score + mask + bias is below -1e30 (so -inf and
 * finfo(f32).min masks both mask); a row whose keys are all masked outputs zeros.
 */
export interface AttentionReferenceOptions {
  readonly batch: number;
  readonly lq: number;
  readonly lk: number;
  readonly heads: number;
  /** Defaults to heads; heads must be a multiple of it (GQA). */
  readonly kvHeads?: number;
  readonly headDim: number;
  /** Defaults to 1/sqrt(headDim). */
  readonly scale?: number;
  readonly causal?: boolean;
  /** Query i sees key j when j <= i + causalOffset; defaults to lk - lq (bottom-right, as a KV cache needs). */
  readonly causalOffset?: number;
  /** Additive, right-aligned broadcast to [B, H, Lq, Lk]: shape of rank 1 to 4, each dim 1 or the full size. */
  readonly mask?: { readonly data: Float32Array; readonly shape: readonly number[] };
  /** [B, Lk]: 0 masks the key. */
  readonly keyPadding?: ArrayLike<number>;
  /** [H, Lq + Lk - 1]: bias(h, i, j) = relativeBias[h, j - i + Lq - 1] (T5). */
  readonly relativeBias?: Float32Array;
}

export const MASKED_BELOW = -1e30;

/** Strides (in elements) of a mask of `shape` broadcast to [B, H, Lq, Lk]; 0 where broadcast. */
export function maskStrides(shape: readonly number[], full: readonly [number, number, number, number]): [number, number, number, number] {
  if (shape.length < 1 || shape.length > 4) throw new RangeError(`mask rank ${shape.length}: expected 1 to 4 dims broadcastable to [B, H, Lq, Lk]`);
  const dims = [...Array(4 - shape.length).fill(1), ...shape] as number[];
  const strides: [number, number, number, number] = [0, 0, 0, 0];
  let stride = 1;
  for (let i = 3; i >= 0; i--) {
    const d = dims[i]!;
    if (d !== 1 && d !== full[i]) throw new RangeError(`mask shape ${JSON.stringify(shape)} does not broadcast to ${JSON.stringify(full)}`);
    strides[i] = d === 1 && full[i] !== 1 ? 0 : stride;
    stride *= d;
  }
  return strides;
}

export function attentionReference(q: Float32Array, k: Float32Array, v: Float32Array, o: AttentionReferenceOptions): Float32Array {
  const { batch: B, lq: Lq, lk: Lk, heads: H, headDim: D } = o;
  const Hkv = o.kvHeads ?? H;
  if (H % Hkv !== 0) throw new RangeError(`heads ${H} is not a multiple of kvHeads ${Hkv}`);
  const group = H / Hkv;
  const scale = o.scale ?? 1 / Math.sqrt(D);
  const offset = o.causalOffset ?? Lk - Lq;
  const ms = o.mask ? maskStrides(o.mask.shape, [B, H, Lq, Lk]) : null;
  const out = new Float32Array(B * Lq * H * D);
  const scores = new Float64Array(Lk);
  const keep = new Uint8Array(Lk);
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < H; h++) {
      const kh = Math.floor(h / group);
      for (let i = 0; i < Lq; i++) {
        const qo = ((b * Lq + i) * H + h) * D;
        let max = -Infinity;
        for (let j = 0; j < Lk; j++) {
          keep[j] = 0;
          if (o.causal && j > i + offset) continue;
          if (o.keyPadding && o.keyPadding[b * Lk + j] === 0) continue;
          const ko = ((b * Lk + j) * Hkv + kh) * D;
          let s = 0;
          for (let d = 0; d < D; d++) s += q[qo + d]! * k[ko + d]!;
          s *= scale;
          if (ms) s += o.mask!.data[b * ms[0] + h * ms[1] + i * ms[2] + j * ms[3]]!;
          if (o.relativeBias) s += o.relativeBias[h * (Lq + Lk - 1) + j - i + Lq - 1]!;
          if (!(s >= MASKED_BELOW)) continue;
          scores[j] = s;
          keep[j] = 1;
          if (s > max) max = s;
        }
        let sum = 0;
        for (let j = 0; j < Lk; j++) if (keep[j]) sum += (scores[j] = Math.exp(scores[j]! - max));
        if (sum === 0) continue;
        for (let d = 0; d < D; d++) {
          let acc = 0;
          for (let j = 0; j < Lk; j++) if (keep[j]) acc += scores[j]! * v[((b * Lk + j) * Hkv + kh) * D + d]!;
          out[qo + d] = acc / sum;
        }
      }
    }
  }
  return out;
}
