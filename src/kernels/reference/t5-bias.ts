/**
 * CPU reference of ops/t5-bias.ts: Hugging Face's T5 `_relative_position_bucket` (with its
 * float32 log arithmetic emulated by Math.fround) and the bias it indexes.
 */
export interface T5BucketOptions {
  readonly numBuckets: number;
  readonly maxDistance: number;
  /** Encoder: true (keys before and after get separate buckets); decoder: false. */
  readonly bidirectional: boolean;
}

/** The bucket of relative position `rel` = key position − query position. */
export function t5BucketReference(rel: number, o: T5BucketOptions): number {
  let numBuckets = o.numBuckets;
  let bucket = 0;
  let n: number;
  if (o.bidirectional) {
    numBuckets = Math.floor(numBuckets / 2);
    if (rel > 0) bucket += numBuckets;
    n = Math.abs(rel);
  } else {
    n = -Math.min(rel, 0);
  }
  const maxExact = Math.floor(numBuckets / 2);
  if (n < maxExact) return bucket + n;
  const f = Math.fround;
  const ratio = f(f(n) / maxExact);
  const scaled = f(f(f(Math.log(ratio)) / f(Math.log(o.maxDistance / maxExact))) * (numBuckets - maxExact));
  return bucket + Math.min(maxExact + Math.trunc(scaled), numBuckets - 1);
}

/** position_bias [H, Lq, Lk] from relative_attention_bias.weight [numBuckets, H]. */
export function t5RelativeBiasReference(weight: Float32Array, heads: number, lq: number, lk: number, o: T5BucketOptions): Float32Array {
  const out = new Float32Array(heads * lq * lk);
  for (let i = 0; i < lq; i++) {
    for (let j = 0; j < lk; j++) {
      const bucket = t5BucketReference(j - i, o);
      for (let h = 0; h < heads; h++) out[(h * lq + i) * lk + j] = weight[bucket * heads + h]!;
    }
  }
  return out;
}
