/**
 * CPU reference of ops/timestep.ts, written as diffusers' get_timestep_embedding is: f32
 * tensors (Math.fround after every PyTorch op), then sin and cos of the f32 angles in f64.
 */
export interface TimestepReferenceOptions {
  readonly flipSinToCos?: boolean;
  readonly downscaleFreqShift?: number;
  readonly scale?: number;
  readonly maxPeriod?: number;
  readonly timestepMultiplier?: number;
  /** CUDA's div by a scalar multiplies by its f32 reciprocal; the CPU divides. Default 'cuda'. */
  readonly pytorchDevice?: 'cuda' | 'cpu';
}

export function timestepEmbeddingReference(timesteps: readonly number[], dim: number, o: TimestepReferenceOptions = {}): Float32Array {
  const f = Math.fround;
  const half = Math.floor(dim / 2);
  // exponent = -math.log(max_period) * arange(half, dtype=float32); exponent / (half - shift)
  const den = f(half - (o.downscaleFreqShift ?? 1));
  const divide = (e: number) => ((o.pytorchDevice ?? 'cuda') === 'cuda' ? f(e * f(1 / den)) : f(e / den));
  const exponent = Array.from({ length: half }, (_, j) => divide(f(f(-Math.log(o.maxPeriod ?? 10000)) * j)));
  const freq = exponent.map((e) => f(Math.exp(e)));
  const rows: number[][] = timesteps.map((t0) => {
    const t = f(f(t0) * f(o.timestepMultiplier ?? 1));
    const emb = freq.map((fr) => f(f(o.scale ?? 1) * f(t * fr)));
    const sin = emb.map(Math.sin);
    const cos = emb.map(Math.cos);
    const row = o.flipSinToCos ? [...cos, ...sin] : [...sin, ...cos];
    if (dim % 2 === 1) row.push(0);
    return row;
  });
  return Float32Array.from(rows.flat());
}
