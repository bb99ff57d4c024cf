/**
 * CPU reference of ops/group-norm.ts on [N, C, spatial]: per (n, group) mean and biased
 * variance (f64 sums), then · weight[c] + bias[c], then SiLU if asked.
 */
export function groupNormReference(x: Float32Array, weight: Float32Array | null, bias: Float32Array | null, batch: number, channels: number,
  groups: number, eps: number, silu = false): Float32Array {
  const out = new Float32Array(x.length);
  const spatial = x.length / (batch * channels);
  const per = channels / groups;
  const count = per * spatial;
  for (let n = 0; n < batch; n++) {
    for (let g = 0; g < groups; g++) {
      const base = (n * channels + g * per) * spatial;
      let sum = 0;
      for (let i = 0; i < count; i++) sum += x[base + i]!;
      const mean = sum / count;
      let sq = 0;
      for (let i = 0; i < count; i++) sq += (x[base + i]! - mean) ** 2;
      const r = 1 / Math.sqrt(sq / count + Math.fround(eps));
      for (let i = 0; i < count; i++) {
        const c = g * per + Math.floor(i / spatial);
        let y = (x[base + i]! - mean) * r * (weight ? weight[c]! : 1) + (bias ? bias[c]! : 0);
        if (silu) y = y / (1 + Math.exp(-y));
        out[base + i] = y;
      }
    }
  }
  return out;
}
