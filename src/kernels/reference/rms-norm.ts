/** CPU reference of ops/rms-norm.ts: x / sqrt(mean(x²) + eps) · weight per row of `cols`, sums in f64. */
export function rmsNormReference(x: Float32Array, weight: Float32Array | null, cols: number, eps: number): Float32Array {
  const out = new Float32Array(x.length);
  for (let base = 0; base < x.length; base += cols) {
    let sum = 0;
    for (let c = 0; c < cols; c++) sum += x[base + c]! ** 2;
    const r = 1 / Math.sqrt(sum / cols + Math.fround(eps));
    for (let c = 0; c < cols; c++) out[base + c] = x[base + c]! * r * (weight ? weight[c]! : 1);
  }
  return out;
}
