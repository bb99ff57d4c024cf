/** CPU reference of ops/transpose.ts: out = x.permute(perm), walking out's multi-index. */
export function permuteReference<T extends Float32Array | Int32Array | Uint32Array | Uint16Array>(x: T, shape: readonly number[], perm: readonly number[]): T {
  const rank = shape.length;
  const strides = new Array<number>(rank).fill(1);
  for (let k = rank - 2; k >= 0; k--) strides[k] = strides[k + 1]! * shape[k + 1]!;
  const outShape = perm.map((p) => shape[p]!);
  const out = new (x.constructor as new (n: number) => T)(x.length);
  const index = new Array<number>(rank).fill(0);
  for (let i = 0; i < x.length; i++) {
    let src = 0;
    for (let k = 0; k < rank; k++) src += index[k]! * strides[perm[k]!]!;
    out[i] = x[src]!;
    for (let k = rank - 1; k >= 0; k--) {
      if (++index[k]! < outShape[k]!) break;
      index[k] = 0;
    }
  }
  return out;
}
