/** CPU reference of ops/kv-cache.ts: values [B, n, W] written into cache [B, capacity, W] at row `position`. */
export function kvCacheWriteReference(cache: Float32Array, values: Float32Array, batch: number, capacity: number, n: number, width: number, position: number): Float32Array {
  if (position + n > capacity) throw new RangeError(`kv cache: rows ${position}..${position + n} past capacity ${capacity}`);
  const out = new Float32Array(cache);
  for (let b = 0; b < batch; b++) out.set(values.subarray(b * n * width, (b + 1) * n * width), (b * capacity + position) * width);
  return out;
}
