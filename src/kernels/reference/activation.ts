/**
 * CPU references of ops/activation.ts, in f64 (results rounded to f32 by the Float32Array).
 * GELU needs erf, which JavaScript lacks: `erfc64` below is accurate to about 1e-15 relative.
 */
export type ActivationName = 'gelu' | 'gelu_tanh' | 'quick_gelu' | 'silu';

const TWO_OVER_SQRT_PI = 1.1283791670955126;

/**
 * erfc in f64 with relative accuracy everywhere: for |x| < 3 from the series
 * erf x = 2/√π · e^(−x²) · Σ 2ⁿ x^(2n+1) / (1·3·…·(2n+1)) (all terms positive, no cancellation);
 * for x ≥ 3 from the continued fraction erfc x = e^(−x²)/√π · 1/(x + (1/2)/(x + 1/(x + (3/2)/(x + …)))),
 * evaluated bottom-up with 60 terms; for x ≤ −3, 2 − erfc(−x).
 */
export function erfc64(x: number): number {
  if (Number.isNaN(x)) return Number.NaN;
  if (x >= 3) {
    if (x > 27) return 0;
    let f = x;
    for (let k = 60; k >= 1; k--) f = x + k / 2 / f;
    return Math.exp(-x * x) / Math.sqrt(Math.PI) / f;
  }
  if (x <= -3) return 2 - erfc64(-x);
  return 1 - erf64(x);
}

/** erf in f64 (see erfc64). */
export function erf64(x: number): number {
  if (Math.abs(x) >= 3) return Math.sign(x) * (1 - erfc64(Math.abs(x)));
  let term = x;
  let sum = x;
  for (let n = 1; n < 200; n++) {
    term *= (2 * x * x) / (2 * n + 1);
    sum += term;
    if (Math.abs(term) < 1e-17 * Math.abs(sum)) break;
  }
  return TWO_OVER_SQRT_PI * Math.exp(-x * x) * sum;
}

/** GELU with erf: x·Φ(x) = x · erfc(−x/√2) / 2 (relative accuracy kept in the negative tail). */
export function gelu64(x: number): number {
  return 0.5 * x * erfc64(-x / Math.SQRT2);
}

/** GPT-2's gelu_new, written as transformers does: 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))). */
export function geluTanh64(x: number): number {
  return 0.5 * x * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (x + 0.044715 * x ** 3)));
}

export function quickGelu64(x: number): number {
  return x / (1 + Math.exp(-1.702 * x));
}

export function silu64(x: number): number {
  return x / (1 + Math.exp(-x));
}

const FUNCTIONS: Readonly<Record<ActivationName, (x: number) => number>> = {
  gelu: gelu64, gelu_tanh: geluTanh64, quick_gelu: quickGelu64, silu: silu64,
};

export function activationReference(kind: ActivationName, x: Float32Array): Float32Array {
  const f = FUNCTIONS[kind];
  return x.map((v) => f(v));
}

/** out = act(gate) · up, element-wise. */
export function gatedMlpReference(kind: ActivationName, gate: Float32Array, up: Float32Array): Float32Array {
  const f = FUNCTIONS[kind];
  return gate.map((g, i) => f(g) * up[i]!);
}

/** The fused form: x [rows, 2F]; gate = first or second half, the other half multiplies. */
export function gatedMlpFusedReference(kind: ActivationName, x: Float32Array, cols: number, gate: 'first' | 'second'): Float32Array {
  const rows = x.length / (2 * cols);
  const f = FUNCTIONS[kind];
  const out = new Float32Array(rows * cols);
  for (let r = 0; r < rows; r++) {
    for (let j = 0; j < cols; j++) {
      const first = x[r * 2 * cols + j]!;
      const second = x[r * 2 * cols + cols + j]!;
      out[r * cols + j] = gate === 'first' ? f(first) * second : f(second) * first;
    }
  }
  return out;
}
