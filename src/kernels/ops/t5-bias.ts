import type { GpuDevice } from '../../devices/gpu-device.ts';
import type { KernelRecorder } from '../recorder.ts';
import type { GpuTensor } from '../tensor.ts';
import { constantTable, packUniforms } from './attention-common.ts';

export interface T5BiasOptions {
  readonly lq: number;
  readonly lk: number;
  /** Encoder: true (default); decoder self-attention: false. */
  readonly bidirectional?: boolean;
  /** relative_attention_max_distance. Default 128. */
  readonly maxDistance?: number;
}

/**
 * Hugging Face T5's _relative_position_bucket for one relative position (key − query), with
 * its float32 log arithmetic reproduced (Math.fround), computed on the host.
 */
export function t5Bucket(rel: number, numBuckets: number, maxDistance: number, bidirectional: boolean): number {
  const f = Math.fround;
  let n = rel;
  let buckets = numBuckets;
  let offset = 0;
  if (bidirectional) {
    buckets = Math.floor(buckets / 2);
    offset = n > 0 ? buckets : 0;
    n = Math.abs(n);
  } else {
    n = Math.max(-n, 0);
  }
  const exact = Math.floor(buckets / 2);
  if (n < exact) return offset + n;
  const large = exact + Math.trunc(f(f(f(Math.log(f(f(n) / exact))) / f(Math.log(maxDistance / exact))) * (buckets - exact)));
  return offset + Math.min(large, buckets - 1);
}

/** Buckets of relative positions r − (lq − 1), r < lq + lk − 1. */
export function t5BucketTable(lq: number, lk: number, numBuckets: number, maxDistance: number, bidirectional: boolean): Uint32Array {
  return Uint32Array.from({ length: lq + lk - 1 }, (_, r) => t5Bucket(r - (lq - 1), numBuckets, maxDistance, bidirectional));
}

/**
 * T5's relative position bias in compact form: out [H, Lq + Lk − 1] (f32), out[h, j − i + Lq − 1]
 * = relative_attention_bias.weight[bucket(j − i), h]. `attention(..., { relativeBias: out,
 * scale: 1 })` adds it per head without ever forming T5's [H, Lq, Lk] position_bias. The weight
 * [numBuckets, H] is read in its stored form: f32, f16 or bf16.
 */
export async function t5RelativeBias(rec: KernelRecorder, weight: GpuTensor, out: GpuTensor, options: T5BiasOptions): Promise<void> {
  const { lq, lk } = options;
  if (weight.shape.length !== 2) throw new RangeError(`t5RelativeBias: weight shape ${JSON.stringify(weight.shape)}, expected [numBuckets, heads]`);
  const [numBuckets, heads] = weight.shape as [number, number];
  const rel = lq + lk - 1;
  if (!Number.isInteger(lq) || !Number.isInteger(lk) || lq < 1 || lk < 1) throw new RangeError(`t5RelativeBias: lq ${lq}, lk ${lk} must be ≥ 1`);
  if (out.dtype !== 'f32' || out.elements !== heads * rel) throw new RangeError(`t5RelativeBias: out must be f32 [${heads}, ${rel}]`);
  if (weight.dtype !== 'f32' && weight.dtype !== 'f16' && weight.dtype !== 'bf16') throw new RangeError(`t5RelativeBias: weight ${weight.dtype}; f32, f16 or bf16`);
  const maxDistance = options.maxDistance ?? 128;
  const bidirectional = options.bidirectional ?? true;
  const buckets = await t5Buckets(rec.gpu, lq, lk, numBuckets, maxDistance, bidirectional);
  const pipeline = await rec.pipeline('t5_bias', { WEIGHT_F16: weight.dtype === 'f16', WEIGHT_BF16: weight.dtype === 'bf16' });
  rec.dispatch(pipeline, [weight.buffer, buckets.buffer, out.buffer], packUniforms([heads, rel, 0, 0]), Math.ceil((heads * rel) / 256), 't5_bias');
}

function t5Buckets(gpu: GpuDevice, lq: number, lk: number, numBuckets: number, maxDistance: number, bidirectional: boolean) {
  return constantTable(gpu, `t5.${lq}.${lk}.${numBuckets}.${maxDistance}.${bidirectional}`,
    () => t5BucketTable(lq, lk, numBuckets, maxDistance, bidirectional));
}
