/** CPU reference of ops/scale.ts: out = x·s + b, rounded to f32. */
export function scaleReference(x: Float32Array, s: number, b = 0): Float32Array {
  return x.map((v) => v * Math.fround(s) + Math.fround(b));
}
