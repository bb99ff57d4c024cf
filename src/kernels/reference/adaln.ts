/** CPU references of ops/adaln.ts on x [rows, cols], per-batch vectors at data[b·stride + offset + c]. */
export interface SliceReference {
  readonly data: Float32Array;
  readonly offset: number;
  readonly stride: number;
}

/** out = x · (1 + scale[batch]) + shift[batch]. */
export function adaLNModulateReference(x: Float32Array, cols: number, rowsPerBatch: number, shift: SliceReference, scale: SliceReference): Float32Array {
  return x.map((v, i) => {
    const row = Math.floor(i / cols);
    const c = i % cols;
    const b = Math.floor(row / rowsPerBatch);
    return v * (1 + scale.data[b * scale.stride + scale.offset + c]!) + shift.data[b * shift.stride + shift.offset + c]!;
  });
}

/** out = x + gate[batch] · y. */
export function gatedResidualReference(x: Float32Array, y: Float32Array, cols: number, rowsPerBatch: number, gate: SliceReference): Float32Array {
  return x.map((v, i) => {
    const b = Math.floor(Math.floor(i / cols) / rowsPerBatch);
    return v + gate.data[b * gate.stride + gate.offset + (i % cols)]! * y[i]!;
  });
}
