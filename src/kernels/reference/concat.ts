/** CPU reference of ops/concat.ts: concatenation along `axis` of row-major tensors. */
export function concatReference<T extends Float32Array | Int32Array | Uint32Array>(inputs: readonly { data: T; shape: readonly number[] }[], axis: number): T {
  const first = inputs[0]!;
  const rank = first.shape.length;
  const ax = axis < 0 ? axis + rank : axis;
  const outer = first.shape.slice(0, ax).reduce((a, b) => a * b, 1);
  const total = inputs.reduce((s, t) => s + t.data.length, 0);
  const out = new (first.data.constructor as new (n: number) => T)(total);
  let pos = 0;
  for (let o = 0; o < outer; o++) {
    for (const t of inputs) {
      const row = t.data.length / outer;
      out.set(t.data.subarray(o * row, (o + 1) * row), pos);
      pos += row;
    }
  }
  return out;
}
