/**
 * Deterministic random weights in every stored layout `linear` reads, for the kernel tests
 * and the benchmarks: values that decode to finite numbers (no fp8 NaN/inf patterns, GGUF
 * block scales that are small finite f16s), so a kernel and the reference can be compared.
 */
import { f32ToF16Bits, fromFloat32 } from '../../formats/dtypes.ts';
import { GPU_DTYPE_LAYOUT, type GpuDtype } from '../tensor.ts';

/** mulberry32: a small, fast, seedable PRNG; yields [0, 1). */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Uniform values in [-scale, scale). */
export function randomValues(n: number, seed: number, scale = 1): Float32Array {
  const next = prng(seed);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = (next() * 2 - 1) * scale;
  return out;
}

/** Byte offsets of the f16 scale fields in each GGUF block, and whether they may be negative. */
const GGUF_SCALES: Partial<Record<GpuDtype, ReadonlyArray<readonly [number, boolean]>>> = {
  q8_0: [[0, true]],
  q4_0: [[0, true]],
  q4_1: [[0, true], [2, true]],
  q5_0: [[0, true]],
  q5_1: [[0, true], [2, true]],
  q4_k: [[0, false], [2, false]],
  q5_k: [[0, false], [2, false]],
  q6_k: [[208, true]],
};

/** The stored bytes of a random [rows, cols] weight in `dtype`. */
export function randomWeightBytes(dtype: GpuDtype, rows: number, cols: number, seed: number): Uint8Array {
  const elements = rows * cols;
  const next = prng(seed);
  switch (dtype) {
    case 'f32':
      return new Uint8Array(randomValues(elements, seed).buffer);
    case 'f16':
      return fromFloat32('F16', randomValues(elements, seed));
    case 'bf16':
      return fromFloat32('BF16', randomValues(elements, seed));
    case 'f8_e4m3':
    case 'f8_e5m2': {
      const out = new Uint8Array(elements);
      for (let i = 0; i < elements; i++) {
        let b = Math.floor(next() * 256);
        if (dtype === 'f8_e4m3' && (b & 0x7f) === 0x7f) b ^= 1; // 0x7f/0xff are NaN
        if (dtype === 'f8_e5m2' && (b & 0x7c) === 0x7c) b &= ~0x04; // exponent 31: inf/NaN
        out[i] = b;
      }
      return out;
    }
    default: {
      const scales = GGUF_SCALES[dtype];
      if (!scales) throw new RangeError(`no random weights for ${dtype}`);
      const { blockElements, blockBytes } = GPU_DTYPE_LAYOUT[dtype];
      const blocks = elements / blockElements;
      if (!Number.isInteger(blocks)) throw new RangeError(`${elements} ${dtype} elements are not whole blocks`);
      const out = new Uint8Array(blocks * blockBytes);
      for (let i = 0; i < out.length; i++) out[i] = Math.floor(next() * 256);
      for (let b = 0; b < blocks; b++) {
        for (const [at, signed] of scales) {
          const magnitude = 0.002 + next() * 0.03;
          const h = f32ToF16Bits(signed && next() < 0.5 ? -magnitude : magnitude);
          out[b * blockBytes + at] = h & 0xff;
          out[b * blockBytes + at + 1] = h >> 8;
        }
      }
      return out;
    }
  }
}
