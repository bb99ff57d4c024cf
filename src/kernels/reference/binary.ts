/** CPU references of ops/binary.ts (and add's broadcasting): NumPy broadcasting, f32 results. */
export type BinaryOpName = 'add' | 'sub' | 'mul' | 'div';

function apply(op: BinaryOpName, x: number, y: number): number {
  switch (op) {
    case 'add': return x + y;
    case 'sub': return x - y;
    case 'mul': return x * y;
    case 'div': return x / y;
  }
}

/** out[idx] = a[idx broadcast] OP b[idx broadcast], walking out's multi-index. */
export function binaryReference(op: BinaryOpName, a: Float32Array, aShape: readonly number[], b: Float32Array, bShape: readonly number[],
  outShape: readonly number[]): Float32Array {
  const rank = outShape.length;
  const total = outShape.reduce((p, d) => p * d, 1);
  const out = new Float32Array(total);
  const index = new Array<number>(rank).fill(0);
  const offsetIn = (shape: readonly number[]) => {
    const lead = rank - shape.length;
    let off = 0;
    for (let k = 0; k < shape.length; k++) off = off * shape[k]! + (shape[k] === 1 ? 0 : index[k + lead]!);
    return off;
  };
  for (let i = 0; i < total; i++) {
    out[i] = apply(op, a[offsetIn(aShape)]!, b[offsetIn(bShape)]!);
    for (let k = rank - 1; k >= 0; k--) {
      if (++index[k]! < outShape[k]!) break;
      index[k] = 0;
    }
  }
  return out;
}
