/**
 * CPU references of ops/rope.ts, angles and their cosines in f64 straight from the formulas
 * (independent of the op's host-side tables).
 *
 * - 'half' (Llama, Qwen2, GPT-NeoX): rotate-half over the first `rotaryDim` dims of each head,
 *   pairs (i, i + rotaryDim/2), angle = position · theta^(-2i/rotaryDim).
 * - 'interleaved' (FLUX, GPT-J): pairs (2i, 2i+1); FLUX's angles come per token from its ids.
 */
export interface RopeReferenceOptions {
  readonly batch: number;
  readonly seq: number;
  readonly heads: number;
  readonly headDim: number;
  readonly rotaryDim?: number;
  readonly mode?: 'half' | 'interleaved';
  /** angle(b, l, i) for pair i of the token at batch b, row l. */
  readonly angle: (b: number, l: number, i: number) => number;
}

/** x [B, L, H, D] → rotated copy. */
export function ropeReference(x: Float32Array, o: RopeReferenceOptions): Float32Array {
  const { batch: B, seq: L, heads: H, headDim: D } = o;
  const rot = o.rotaryDim ?? D;
  const half = rot / 2;
  const out = new Float32Array(x);
  for (let b = 0; b < B; b++) {
    for (let l = 0; l < L; l++) {
      for (let h = 0; h < H; h++) {
        const base = ((b * L + l) * H + h) * D;
        for (let i = 0; i < half; i++) {
          const a = o.angle(b, l, i);
          const c = Math.cos(a);
          const s = Math.sin(a);
          const [i0, i1] = o.mode === 'interleaved' ? [2 * i, 2 * i + 1] : [i, i + half];
          const x0 = x[base + i0]!;
          const x1 = x[base + i1]!;
          out[base + i0] = x0 * c - x1 * s;
          out[base + i1] = x1 * c + x0 * s;
        }
      }
    }
  }
  return out;
}

/** Llama's angle: position · theta^(-2i/rotaryDim). */
export function llamaAngle(theta: number, rotaryDim: number, position: (b: number, l: number) => number) {
  return (b: number, l: number, i: number) => position(b, l) * Math.pow(theta, (-2 * i) / rotaryDim);
}

/**
 * FLUX's multi-axis angle (diffusers' FluxPosEmbed): axis a has axesDims[a]/2 pairs, angle
 * = ids[l, a] · theta^(-2j/axesDims[a]) for its pair j; the axes' pairs are concatenated.
 */
export function fluxAngle(ids: ArrayLike<number>, axesDims: readonly number[], theta = 10000) {
  return (_b: number, l: number, i: number) => {
    let a = 0;
    let j = i;
    while (j >= axesDims[a]! / 2) j -= axesDims[a++]! / 2;
    return ids[l * axesDims.length + a]! * Math.pow(theta, (-2 * j) / axesDims[a]!);
  };
}
