/** CPU reference of ops/softmax.ts: row-wise softmax of scale·x in f64, max subtracted first. */
export function softmaxReference(x: Float32Array, rows: number, n: number, scale = 1): Float32Array {
  if (x.length !== rows * n) throw new RangeError(`softmax: ${x.length} values are not ${rows} rows of ${n}`);
  const out = new Float32Array(rows * n);
  for (let r = 0; r < rows; r++) {
    let max = -Infinity;
    for (let i = 0; i < n; i++) max = Math.max(max, scale * x[r * n + i]!);
    if (max === -Infinity) continue; // a row of -inf: zeros, as the kernel writes
    let sum = 0;
    for (let i = 0; i < n; i++) sum += Math.exp(scale * x[r * n + i]! - max);
    for (let i = 0; i < n; i++) out[r * n + i] = Math.exp(scale * x[r * n + i]! - max) / sum;
  }
  return out;
}
