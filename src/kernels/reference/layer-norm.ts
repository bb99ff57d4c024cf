/** Per-batch vectors for the fused AdaLN: batch b's vector at data[b·stride + offset + c]. */
export interface ModulationReference {
  readonly shift: { readonly data: Float32Array; readonly offset: number; readonly stride: number };
  readonly scale: { readonly data: Float32Array; readonly offset: number; readonly stride: number };
  readonly rowsPerBatch: number;
}

/**
 * CPU reference of ops/layer-norm.ts: (x − mean) / sqrt(var + eps) · weight + bias per row of
 * `cols` (biased variance, f64 sums), then optionally · (1 + scale) + shift per batch.
 */
export function layerNormReference(x: Float32Array, weight: Float32Array | null, bias: Float32Array | null, cols: number, eps: number,
  modulation?: ModulationReference): Float32Array {
  const out = new Float32Array(x.length);
  for (let base = 0, row = 0; base < x.length; base += cols, row++) {
    let sum = 0;
    for (let c = 0; c < cols; c++) sum += x[base + c]!;
    const mean = sum / cols;
    let sq = 0;
    for (let c = 0; c < cols; c++) sq += (x[base + c]! - mean) ** 2;
    const r = 1 / Math.sqrt(sq / cols + Math.fround(eps));
    for (let c = 0; c < cols; c++) {
      let y = (x[base + c]! - mean) * r * (weight ? weight[c]! : 1) + (bias ? bias[c]! : 0);
      if (modulation) {
        const b = Math.floor(row / modulation.rowsPerBatch);
        const { shift, scale } = modulation;
        y = y * (1 + scale.data[b * scale.stride + scale.offset + c]!) + shift.data[b * shift.stride + shift.offset + c]!;
      }
      out[base + c] = y;
    }
  }
  return out;
}
