import { bf16BitsToF32, f16BitsToF32 } from '../dtypes.ts';
import { ggmlByteLength, ggmlTypeById, ggmlTypeByName, QK_K, type GgmlTypeInfo, type GgmlTypeName } from './types.ts';

/*
 * CPU dequantizers that compute exactly what ggml's reference `dequantize_row_*` computes
 * (ggml-quants.c), so a kernel or a test can compare bit for bit.
 *
 * ggml computes in float32. JavaScript computes in doubles, so every float operation whose
 * result feeds another is rounded back with Math.fround. That is exact: a double holds
 * more than 2×24+2 bits, so rounding a double sum, difference or product of two floats to
 * float gives the correctly rounded float result (no double-rounding error). The last
 * operation of each element is rounded by the store into the Float32Array itself.
 * ggml does not fuse multiply-adds in these loops, and neither does this code.
 */

const fround = Math.fround;

let F16: Float32Array | undefined;
/** f16 bits → f32 for all 65536 patterns, built once (the scales are read per block). */
function f16Table(): Float32Array {
  if (!F16) {
    F16 = new Float32Array(65536);
    for (let h = 0; h < 65536; h++) F16[h] = f16BitsToF32(h);
  }
  return F16;
}

type Dequantizer = (src: Uint8Array, out: Float32Array, blocks: number) => void;

const half = (t: Float32Array, b: Uint8Array, at: number): number => t[b[at]! | (b[at + 1]! << 8)]!;

// ---- 32-element blocks ----------------------------------------------------------------

/** block_q4_0: f16 d, 16 bytes of nibbles; y = (q - 8) × d, low nibbles first. */
const q4_0: Dequantizer = (src, y, blocks) => {
  const t = f16Table();
  for (let i = 0, o = 0, p = 0; i < blocks; i++, o += 32, p += 18) {
    const d = half(t, src, p);
    for (let j = 0; j < 16; j++) {
      const q = src[p + 2 + j]!;
      y[o + j] = ((q & 0x0f) - 8) * d;
      y[o + j + 16] = ((q >> 4) - 8) * d;
    }
  }
};

/** block_q4_1: f16 d, f16 m, nibbles; y = q × d + m. */
const q4_1: Dequantizer = (src, y, blocks) => {
  const t = f16Table();
  for (let i = 0, o = 0, p = 0; i < blocks; i++, o += 32, p += 20) {
    const d = half(t, src, p);
    const m = half(t, src, p + 2);
    for (let j = 0; j < 16; j++) {
      const q = src[p + 4 + j]!;
      y[o + j] = fround((q & 0x0f) * d) + m;
      y[o + j + 16] = fround((q >> 4) * d) + m;
    }
  }
};

/** block_q5_0: f16 d, 32 high bits (u32 LE), nibbles; y = (q | hbit << 4) - 16, × d. */
const q5_0: Dequantizer = (src, y, blocks) => {
  const t = f16Table();
  for (let i = 0, o = 0, p = 0; i < blocks; i++, o += 32, p += 22) {
    const d = half(t, src, p);
    const qh = (src[p + 2]! | (src[p + 3]! << 8) | (src[p + 4]! << 16) | (src[p + 5]! << 24)) >>> 0;
    for (let j = 0; j < 16; j++) {
      const q = src[p + 6 + j]!;
      const h0 = ((qh >>> j) << 4) & 0x10;
      const h1 = (qh >>> (j + 12)) & 0x10;
      y[o + j] = (((q & 0x0f) | h0) - 16) * d;
      y[o + j + 16] = (((q >> 4) | h1) - 16) * d;
    }
  }
};

/** block_q5_1: f16 d, f16 m, 32 high bits, nibbles; y = q × d + m. */
const q5_1: Dequantizer = (src, y, blocks) => {
  const t = f16Table();
  for (let i = 0, o = 0, p = 0; i < blocks; i++, o += 32, p += 24) {
    const d = half(t, src, p);
    const m = half(t, src, p + 2);
    const qh = (src[p + 4]! | (src[p + 5]! << 8) | (src[p + 6]! << 16) | (src[p + 7]! << 24)) >>> 0;
    for (let j = 0; j < 16; j++) {
      const q = src[p + 8 + j]!;
      const h0 = ((qh >>> j) << 4) & 0x10;
      const h1 = (qh >>> (j + 12)) & 0x10;
      y[o + j] = fround(((q & 0x0f) | h0) * d) + m;
      y[o + j + 16] = fround(((q >> 4) | h1) * d) + m;
    }
  }
};

/** block_q8_0: f16 d, 32 int8; y = q × d. */
const q8_0: Dequantizer = (src, y, blocks) => {
  const t = f16Table();
  for (let i = 0, o = 0, p = 0; i < blocks; i++, o += 32, p += 34) {
    const d = half(t, src, p);
    for (let j = 0; j < 32; j++) y[o + j] = ((src[p + 2 + j]! << 24) >> 24) * d;
  }
};

// ---- 256-element super-blocks (K-quants) ----------------------------------------------

/**
 * block_q2_K: scales[16] (low nibble scale, high nibble min), qs[64] (2-bit), f16 d, f16 dmin.
 * Each 128 weights use 32 bytes of qs at shifts 0, 2, 4, 6, in two 16-weight halves.
 */
const q2_K: Dequantizer = (src, y, blocks) => {
  const t = f16Table();
  let o = 0;
  for (let i = 0, p = 0; i < blocks; i++, p += 84) {
    const d = half(t, src, p + 80);
    const min = half(t, src, p + 82);
    let is = 0;
    for (let n = 0, q = p + 16; n < QK_K; n += 128, q += 32) {
      for (let shift = 0; shift < 8; shift += 2) {
        for (let part = 0; part < 32; part += 16) {
          const sc = src[p + is++]!;
          const dl = fround(d * (sc & 0x0f));
          const ml = fround(min * (sc >> 4));
          for (let l = 0; l < 16; l++) y[o++] = fround(dl * ((src[q + part + l]! >> shift) & 3)) - ml;
        }
      }
    }
  }
};

/**
 * block_q3_K: hmask[32], qs[64] (2-bit), scales[12] (16 six-bit scales, packed), f16 d.
 * The high bit of each 3-bit value is in hmask (set means +0, clear means -4).
 */
const q3_K: Dequantizer = (src, y, blocks) => {
  const t = f16Table();
  const scales = new Int8Array(16);
  let o = 0;
  for (let i = 0, p = 0; i < blocks; i++, p += 110) {
    const dAll = half(t, src, p + 108);
    unpackQ3Scales(src, p + 96, scales);
    let is = 0;
    let m = 1;
    for (let n = 0, q = p + 32; n < QK_K; n += 128, q += 32) {
      for (let shift = 0; shift < 8; shift += 2, m <<= 1) {
        for (let part = 0; part < 32; part += 16) {
          const dl = fround(dAll * (scales[is++]! - 32));
          for (let l = 0; l < 16; l++) {
            const v = ((src[q + part + l]! >> shift) & 3) - ((src[p + part + l]! & m) ? 0 : 4);
            y[o++] = dl * v;
          }
        }
      }
    }
  }
};

/**
 * The 12 scale bytes hold 16 six-bit values: the low nibbles of bytes 0-7 (bytes 0-3 for
 * scales 0-3 and 8-11 via low/high nibble) and two high bits each from bytes 8-11. This is
 * ggml's u32-mask unpacking written per byte (little-endian u32 lanes = bytes).
 */
function unpackQ3Scales(src: Uint8Array, at: number, out: Int8Array): void {
  for (let j = 0; j < 16; j++) {
    // aux[0..1] (scales 0-7) take low nibbles of bytes 0-7; aux[2..3] (8-15) the high nibbles.
    const lowByte = src[at + (j & 7)]!;
    const low = j < 8 ? lowByte & 0x0f : lowByte >> 4;
    // tmp = bytes 8-11; scale j's high bits come from byte 8 + (j & 3), bits 2×(j >> 2).
    const high = (src[at + 8 + (j & 3)]! >> (2 * (j >> 2))) & 3;
    out[j] = low | (high << 4);
  }
}

/** ggml's get_scale_min_k4: 8 six-bit scales and 8 six-bit mins packed in 12 bytes. */
function scaleMinK4(j: number, src: Uint8Array, at: number, out: Uint8Array): void {
  if (j < 4) {
    out[0] = src[at + j]! & 63;
    out[1] = src[at + j + 4]! & 63;
  } else {
    out[0] = (src[at + j + 4]! & 0x0f) | ((src[at + j - 4]! >> 6) << 4);
    out[1] = (src[at + j + 4]! >> 4) | ((src[at + j]! >> 6) << 4);
  }
}

/** block_q4_K: f16 d, f16 dmin, scales[12], qs[128]; y = d×sc × q − dmin×m per 32 weights. */
const q4_K: Dequantizer = (src, y, blocks) => {
  const t = f16Table();
  const sm = new Uint8Array(2);
  let o = 0;
  for (let i = 0, p = 0; i < blocks; i++, p += 144) {
    const d = half(t, src, p);
    const min = half(t, src, p + 2);
    for (let j = 0, is = 0, q = p + 16; j < QK_K; j += 64, is += 2, q += 32) {
      scaleMinK4(is, src, p + 4, sm);
      const d1 = fround(d * sm[0]!);
      const m1 = fround(min * sm[1]!);
      scaleMinK4(is + 1, src, p + 4, sm);
      const d2 = fround(d * sm[0]!);
      const m2 = fround(min * sm[1]!);
      for (let l = 0; l < 32; l++) y[o++] = fround(d1 * (src[q + l]! & 0x0f)) - m1;
      for (let l = 0; l < 32; l++) y[o++] = fround(d2 * (src[q + l]! >> 4)) - m2;
    }
  }
};

/** block_q5_K: f16 d, f16 dmin, scales[12], qh[32], qs[128]; as Q4_K with a fifth bit from qh. */
const q5_K: Dequantizer = (src, y, blocks) => {
  const t = f16Table();
  const sm = new Uint8Array(2);
  let o = 0;
  for (let i = 0, p = 0; i < blocks; i++, p += 176) {
    const d = half(t, src, p);
    const min = half(t, src, p + 2);
    const qh = p + 16;
    let u1 = 1;
    let u2 = 2;
    for (let j = 0, is = 0, ql = p + 48; j < QK_K; j += 64, is += 2, ql += 32, u1 <<= 2, u2 <<= 2) {
      scaleMinK4(is, src, p + 4, sm);
      const d1 = fround(d * sm[0]!);
      const m1 = fround(min * sm[1]!);
      scaleMinK4(is + 1, src, p + 4, sm);
      const d2 = fround(d * sm[0]!);
      const m2 = fround(min * sm[1]!);
      for (let l = 0; l < 32; l++) y[o++] = fround(d1 * ((src[ql + l]! & 0x0f) + (src[qh + l]! & u1 ? 16 : 0))) - m1;
      for (let l = 0; l < 32; l++) y[o++] = fround(d2 * ((src[ql + l]! >> 4) + (src[qh + l]! & u2 ? 16 : 0))) - m2;
    }
  }
};

/** block_q6_K: ql[128] (low 4 bits), qh[64] (high 2 bits), int8 scales[16], f16 d; y = d × sc × (q − 32). */
const q6_K: Dequantizer = (src, y, blocks) => {
  const t = f16Table();
  for (let i = 0, p = 0, o = 0; i < blocks; i++, p += 210) {
    const d = half(t, src, p + 208);
    for (let n = 0, ql = p, qh = p + 128, sc = p + 192; n < QK_K; n += 128, ql += 64, qh += 32, sc += 8, o += 128) {
      for (let l = 0; l < 32; l++) {
        const is = l >> 4;
        const h = src[qh + l]!;
        const q1 = ((src[ql + l]! & 0x0f) | ((h & 3) << 4)) - 32;
        const q2 = ((src[ql + l + 32]! & 0x0f) | (((h >> 2) & 3) << 4)) - 32;
        const q3 = ((src[ql + l]! >> 4) | (((h >> 4) & 3) << 4)) - 32;
        const q4 = ((src[ql + l + 32]! >> 4) | (((h >> 6) & 3) << 4)) - 32;
        y[o + l] = fround(d * ((src[sc + is]! << 24) >> 24)) * q1;
        y[o + l + 32] = fround(d * ((src[sc + is + 2]! << 24) >> 24)) * q2;
        y[o + l + 64] = fround(d * ((src[sc + is + 4]! << 24) >> 24)) * q3;
        y[o + l + 96] = fround(d * ((src[sc + is + 6]! << 24) >> 24)) * q4;
      }
    }
  }
};

/** block_q8_K: f32 d, int8 qs[256], int16 bsums[16] (unused here); y = d × q. */
const q8_K: Dequantizer = (src, y, blocks) => {
  const view = new DataView(src.buffer, src.byteOffset, src.byteLength);
  for (let i = 0, p = 0, o = 0; i < blocks; i++, p += 292, o += QK_K) {
    const d = view.getFloat32(p, true);
    for (let j = 0; j < QK_K; j++) y[o + j] = ((src[p + 4 + j]! << 24) >> 24) * d;
  }
};

// ---- plain types ----------------------------------------------------------------------

const f16: Dequantizer = (src, y, n) => {
  const t = f16Table();
  for (let i = 0; i < n; i++) y[i] = t[src[2 * i]! | (src[2 * i + 1]! << 8)]!;
};

const bf16: Dequantizer = (src, y, n) => {
  for (let i = 0; i < n; i++) y[i] = bf16BitsToF32(src[2 * i]! | (src[2 * i + 1]! << 8));
};

const f32: Dequantizer = (src, y, n) => {
  // Byte copy: keeps every bit pattern (NaN payloads included) and ignores the source's alignment.
  new Uint8Array(y.buffer, y.byteOffset, n * 4).set(src.subarray(0, n * 4));
};

/** Little-endian words read with a DataView, whatever the source's alignment. */
function viaView(size: number, get: (v: DataView, at: number) => number): Dequantizer {
  return (src, y, n) => {
    const view = new DataView(src.buffer, src.byteOffset, src.byteLength);
    for (let i = 0; i < n; i++) y[i] = get(view, i * size);
  };
}

const DEQUANTIZERS = new Map<number, Dequantizer>([
  [0, f32], [1, f16], [2, q4_0], [3, q4_1], [6, q5_0], [7, q5_1], [8, q8_0],
  [10, q2_K], [11, q3_K], [12, q4_K], [13, q5_K], [14, q6_K], [15, q8_K],
  [24, viaView(1, (v, at) => v.getInt8(at))],
  [25, viaView(2, (v, at) => v.getInt16(at, true))],
  [26, viaView(4, (v, at) => v.getInt32(at, true))],
  [27, viaView(8, (v, at) => Number(v.getBigInt64(at, true)))],
  [28, viaView(8, (v, at) => v.getFloat64(at, true))],
  [30, bf16],
]);

// The little-endian check for f32's byte copy: every platform WebGPU runs on is little-endian.
if (new Uint8Array(new Uint32Array([1]).buffer)[0] !== 1) throw new Error('MultiGPU-Web needs a little-endian host');

function resolve(type: number | GgmlTypeName | GgmlTypeInfo): GgmlTypeInfo {
  const info = typeof type === 'number' ? ggmlTypeById(type) : typeof type === 'string' ? ggmlTypeByName(type) : type;
  if (!info) throw new RangeError(`unknown ggml type ${String(type)}`);
  return info;
}

/** Whether `dequantize` handles this type (by id or name). */
export function canDequantize(type: number | string): boolean {
  const info = typeof type === 'number' ? ggmlTypeById(type) : ggmlTypeByName(type);
  return info !== undefined && DEQUANTIZERS.has(info.id);
}

/**
 * `elements` values of `type` (a ggml type id, name or table entry) from their stored bytes
 * to float32, exactly as ggml's `dequantize_row_*`. Misuse (an unsupported type, an element
 * count that is not whole blocks, too few bytes) is a RangeError: a file's tensors reach
 * here only after its header was validated, so these are programming errors.
 */
export function dequantize(type: number | GgmlTypeName | GgmlTypeInfo, bytes: Uint8Array, elements: number): Float32Array {
  const info = resolve(type);
  const run = DEQUANTIZERS.get(info.id);
  if (!run) throw new RangeError(`cannot dequantize ggml type ${info.name} (${info.id})`);
  if (!Number.isSafeInteger(elements) || elements < 0 || elements % info.blockSize !== 0) {
    throw new RangeError(`${elements} elements is not a whole number of ${info.name} blocks (${info.blockSize} each)`);
  }
  const needed = ggmlByteLength(info, elements);
  if (bytes.byteLength < needed) {
    throw new RangeError(`${elements} ${info.name} elements need ${needed} bytes, got ${bytes.byteLength}`);
  }
  const out = new Float32Array(elements);
  run(bytes, out, info.blockSize === 1 ? elements : elements / info.blockSize);
  return out;
}
