/** CPU reference of ops/embedding.ts: rows of a [vocab, dim] table (f32 values); ids outside [0, vocab) give zero rows. */
export function embeddingReference(ids: ArrayLike<number>, table: Float32Array, dim: number): Float32Array {
  const vocab = dim === 0 ? 0 : table.length / dim;
  const out = new Float32Array(ids.length * dim);
  for (let t = 0; t < ids.length; t++) {
    const id = ids[t]!;
    if (id >= 0 && id < vocab) out.set(table.subarray(id * dim, (id + 1) * dim), t * dim);
  }
  return out;
}
