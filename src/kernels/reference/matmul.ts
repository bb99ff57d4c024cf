/**
 * CPU reference of ops/matmul.ts (linear): out[m, n] = scale · Σ_k x[m, k] · w[n, k] + bias[n].
 * Weights are decoded from their stored bytes exactly as the checkpoint defines them (GGUF
 * blocks through src/formats/gguf/dequantize.ts, bit-exact to ggml); the sum is accumulated
 * in f64, so the only error a kernel is measured against is its own f32 (or f16) rounding.
 */
import { bf16BitsToF32, f16BitsToF32, f8e4m3ToF32, f8e5m2ToF32 } from '../../formats/dtypes.ts';
import { dequantize } from '../../formats/gguf/dequantize.ts';
import type { GgmlTypeName } from '../../formats/gguf/types.ts';
import type { GpuDtype } from '../tensor.ts';

const GGUF_TYPE: Partial<Record<GpuDtype, GgmlTypeName>> = {
  q8_0: 'Q8_0', q4_0: 'Q4_0', q4_1: 'Q4_1', q5_0: 'Q5_0', q5_1: 'Q5_1', q4_k: 'Q4_K', q5_k: 'Q5_K', q6_k: 'Q6_K',
};

/** The f32 values of `elements` weights stored as `dtype` (the GpuTensor layout). */
export function dequantizeWeight(dtype: GpuDtype, bytes: Uint8Array, elements: number): Float32Array {
  const gguf = GGUF_TYPE[dtype];
  if (gguf) return dequantize(gguf, bytes, elements);
  const out = new Float32Array(elements);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  switch (dtype) {
    case 'f32':
      for (let i = 0; i < elements; i++) out[i] = view.getFloat32(4 * i, true);
      return out;
    case 'f16':
      for (let i = 0; i < elements; i++) out[i] = f16BitsToF32(view.getUint16(2 * i, true));
      return out;
    case 'bf16':
      for (let i = 0; i < elements; i++) out[i] = bf16BitsToF32(view.getUint16(2 * i, true));
      return out;
    case 'f8_e4m3':
      for (let i = 0; i < elements; i++) out[i] = f8e4m3ToF32(bytes[i]!);
      return out;
    case 'f8_e5m2':
      for (let i = 0; i < elements; i++) out[i] = f8e5m2ToF32(bytes[i]!);
      return out;
    default:
      throw new RangeError(`no weight decoder for ${dtype}`);
  }
}

/**
 * x [m, k] · w[n, k]ᵀ · scale + bias, accumulated in f64 and rounded to f32 once.
 * `w` holds decoded weights (see dequantizeWeight).
 */
export function linearReference(x: Float32Array, w: Float32Array, m: number, n: number, k: number,
  bias: Float32Array | null = null, scale = 1): Float32Array {
  if (x.length !== m * k || w.length !== n * k) throw new RangeError(`linearReference: x ${x.length} ≠ ${m}×${k} or w ${w.length} ≠ ${n}×${k}`);
  const out = new Float32Array(m * n);
  for (let i = 0; i < m; i++) {
    const xo = i * k;
    for (let j = 0; j < n; j++) {
      const wo = j * k;
      let s = 0;
      for (let t = 0; t < k; t++) s += x[xo + t]! * w[wo + t]!;
      out[i * n + j] = s * scale + (bias ? bias[j]! : 0);
    }
  }
  return out;
}

/**
 * Σ_k |x[m, k] · w[n, k]| · |scale| per output: the scale of the rounding error a reordered
 * f32 sum can make, which the tests' tolerances are stated against.
 */
export function linearMagnitudes(x: Float32Array, w: Float32Array, m: number, n: number, k: number, scale = 1): Float32Array {
  const out = new Float32Array(m * n);
  for (let i = 0; i < m; i++) {
    for (let j = 0; j < n; j++) {
      let s = 0;
      for (let t = 0; t < k; t++) s += Math.abs(x[i * k + t]! * w[j * k + t]!);
      out[i * n + j] = s * Math.abs(scale);
    }
  }
  return out;
}
