/**
 * WGSL snippets shared by the matmul kernels (shaders/matmul.wgsl, matmul-sgmat.wgsl,
 * gemv.wgsl). wgsl-preprocessor has no #include, so the weight decoders live here as TS
 * strings and reach the kernels through `${DEQUANT}`-style defines. Every decoder reads the
 * weight in its stored form from the binding `w` (GpuTensor layout: f16/bf16 two per u32,
 * fp8 four per u32, GGUF blocks byte for byte) and yields f32; nothing is upcast in memory.
 *
 * Element indices `e` are linear within the bound range of `w`: row n of the chunk, column
 * k is e = n·K + k (GGUF rows are whole blocks, since ggml's ne0 = K is a multiple of the
 * block size, so the same formula finds the block).
 */
import type { GpuDtype } from '../tensor.ts';

/** Weight layouts `linear` reads in their stored form. */
export const LINEAR_WEIGHT_DTYPES = [
  'f32', 'f16', 'bf16', 'f8_e4m3', 'f8_e5m2',
  'q8_0', 'q4_0', 'q4_1', 'q5_0', 'q5_1', 'q4_k', 'q5_k', 'q6_k',
] as const satisfies readonly GpuDtype[];
export type LinearWeightDtype = (typeof LINEAR_WEIGHT_DTYPES)[number];

export const PLAIN_DTYPES: readonly LinearWeightDtype[] = ['f32', 'f16', 'bf16', 'f8_e4m3', 'f8_e5m2'];

export function isPlain(dtype: LinearWeightDtype): boolean {
  return PLAIN_DTYPES.includes(dtype);
}

/** Bytes per element of the plain layouts. */
export function plainBytes(dtype: LinearWeightDtype): number {
  return dtype === 'f32' ? 4 : dtype === 'f16' || dtype === 'bf16' ? 2 : 1;
}

// ---- scalar helpers -------------------------------------------------------------------

/** Byte-addressed reads from `w: array<u32>` (GGUF blocks are only 2-byte aligned). */
const BYTE_READS = /* wgsl */ `
fn w_byte(b: u32) -> u32 {
  return (w[b >> 2u] >> ((b & 3u) * 8u)) & 0xffu;
}
fn w_sbyte(b: u32) -> f32 {
  return f32(extractBits(bitcast<i32>(w[b >> 2u]), (b & 3u) * 8u, 8u));
}
// The f16 at an even byte address.
fn w_half(b: u32) -> f32 {
  return unpack2x16float(w[b >> 2u] >> ((b & 2u) * 8u)).x;
}
// Four bytes at an even byte address.
fn w_u32_2a(b: u32) -> u32 {
  let i = b >> 2u;
  let lo = w[i];
  if ((b & 2u) == 0u) {
    return lo;
  }
  return (lo >> 16u) | (w[i + 1u] << 16u);
}
// Four bytes at a multiple of 4.
fn w_u32_4a(b: u32) -> u32 {
  return w[b >> 2u];
}
fn nib_lo(q: u32) -> vec4<f32> {
  return vec4<f32>(f32(q & 15u), f32((q >> 8u) & 15u), f32((q >> 16u) & 15u), f32((q >> 24u) & 15u));
}
fn nib_hi(q: u32) -> vec4<f32> {
  return vec4<f32>(f32((q >> 4u) & 15u), f32((q >> 12u) & 15u), f32((q >> 20u) & 15u), f32(q >> 28u));
}
fn bytes4(q: u32) -> vec4<f32> {
  return vec4<f32>(f32(q & 255u), f32((q >> 8u) & 255u), f32((q >> 16u) & 255u), f32(q >> 24u));
}
fn sbytes4(q: u32) -> vec4<f32> {
  let s = bitcast<i32>(q);
  return vec4<f32>(f32(extractBits(s, 0u, 8u)), f32(extractBits(s, 8u, 8u)), f32(extractBits(s, 16u, 8u)), f32(extractBits(s, 24u, 8u)));
}
// Four 1-bit values of qh (bits j..j+3) as 0 or 16.
fn hbits4(qh: u32, j: u32) -> vec4<f32> {
  return vec4<f32>(f32(((qh >> j) & 1u) << 4u), f32(((qh >> (j + 1u)) & 1u) << 4u), f32(((qh >> (j + 2u)) & 1u) << 4u), f32(((qh >> (j + 3u)) & 1u) << 4u));
}
`;

const FP8 = /* wgsl */ `
// OCP FP8 E4M3 ("fn": no infinities; 0x7f and 0xff are NaN).
fn fp8_e4m3(b: u32) -> f32 {
  let e = (b >> 3u) & 15u;
  let m = b & 7u;
  var v = select(bitcast<f32>(((e + 120u) << 23u) | (m << 20u)), f32(m) * 0.001953125, e == 0u);
  v = select(v, bitcast<f32>(0x7f800000u | (b << 16u)), (b & 0x7fu) == 0x7fu);
  return select(v, -v, (b & 0x80u) != 0u);
}
// OCP FP8 E5M2 (IEEE-like: infinities and NaNs).
fn fp8_e5m2(b: u32) -> f32 {
  let e = (b >> 2u) & 31u;
  let m = b & 3u;
  var v = select(bitcast<f32>(((e + 112u) << 23u) | (m << 21u)), f32(m) * 0.0000152587890625, e == 0u);
  v = select(v, bitcast<f32>(0x7f800000u | (m << 21u)), e == 31u);
  return select(v, -v, (b & 0x80u) != 0u);
}
fn fp8x4(q: u32) -> vec4<f32> {
  return vec4<f32>(FP8_DECODE(q & 255u), FP8_DECODE((q >> 8u) & 255u), FP8_DECODE((q >> 16u) & 255u), FP8_DECODE(q >> 24u));
}
`;

function fp8(dtype: 'f8_e4m3' | 'f8_e5m2'): string {
  return FP8.replaceAll('FP8_DECODE', dtype === 'f8_e4m3' ? 'fp8_e4m3' : 'fp8_e5m2');
}

const BF16 = /* wgsl */ `
fn bf16x2(v: u32) -> vec2<f32> {
  return vec2<f32>(bitcast<f32>(v << 16u), bitcast<f32>(v & 0xffff0000u));
}
`;

/** ggml's get_scale_min_k4 on the 12 scale bytes at byte `s`: (scale, min) of sub-block j. */
const SCALE_MIN_K4 = /* wgsl */ `
fn scale_min_k4(j: u32, s: u32) -> vec2<f32> {
  if (j < 4u) {
    return vec2<f32>(f32(w_byte(s + j) & 63u), f32(w_byte(s + j + 4u) & 63u));
  }
  let a = w_byte(s + j + 4u);
  return vec2<f32>(f32((a & 15u) | ((w_byte(s + j - 4u) >> 6u) << 4u)), f32((a >> 4u) | ((w_byte(s + j) >> 6u) << 4u)));
}
`;

// ---- per-element decoders (w: array<u32>) ------------------------------------------------

/** `fn w_elem(e: u32) -> f32` for every dtype, reading w as array<u32>. */
const ELEM: Record<LinearWeightDtype, string> = {
  f32: `fn w_elem(e: u32) -> f32 { return bitcast<f32>(w[e]); }`,
  f16: `fn w_elem(e: u32) -> f32 { return unpack2x16float(w[e >> 1u] >> ((e & 1u) * 16u)).x; }`,
  bf16: `fn w_elem(e: u32) -> f32 { return bitcast<f32>((w[e >> 1u] >> ((e & 1u) * 16u)) << 16u); }`,
  f8_e4m3: `fn w_elem(e: u32) -> f32 { return fp8_e4m3(w_byte(e)); }`,
  f8_e5m2: `fn w_elem(e: u32) -> f32 { return fp8_e5m2(w_byte(e)); }`,
  q8_0: `fn w_elem(e: u32) -> f32 {
  let base = (e >> 5u) * 34u;
  return w_sbyte(base + 2u + (e & 31u)) * w_half(base);
}`,
  q4_0: `fn w_elem(e: u32) -> f32 {
  let base = (e >> 5u) * 18u;
  let j = e & 31u;
  let q = (w_byte(base + 2u + (j & 15u)) >> ((j >> 4u) * 4u)) & 15u;
  return (f32(q) - 8.0) * w_half(base);
}`,
  q4_1: `fn w_elem(e: u32) -> f32 {
  let base = (e >> 5u) * 20u;
  let j = e & 31u;
  let q = (w_byte(base + 4u + (j & 15u)) >> ((j >> 4u) * 4u)) & 15u;
  return f32(q) * w_half(base) + w_half(base + 2u);
}`,
  q5_0: `fn w_elem(e: u32) -> f32 {
  let base = (e >> 5u) * 22u;
  let j = e & 31u;
  let qh = w_u32_2a(base + 2u);
  let q = ((w_byte(base + 6u + (j & 15u)) >> ((j >> 4u) * 4u)) & 15u) | (((qh >> j) & 1u) << 4u);
  return (f32(q) - 16.0) * w_half(base);
}`,
  q5_1: `fn w_elem(e: u32) -> f32 {
  let base = (e >> 5u) * 24u;
  let j = e & 31u;
  let qh = w_u32_4a(base + 4u);
  let q = ((w_byte(base + 8u + (j & 15u)) >> ((j >> 4u) * 4u)) & 15u) | (((qh >> j) & 1u) << 4u);
  return f32(q) * w_half(base) + w_half(base + 2u);
}`,
  q4_k: `fn w_elem(e: u32) -> f32 {
  let base = (e >> 8u) * 144u;
  let j = e & 255u;
  let sb = j >> 5u;
  let l = j & 31u;
  let sm = scale_min_k4(sb, base + 4u);
  let q = (w_byte(base + 16u + (sb >> 1u) * 32u + l) >> ((sb & 1u) * 4u)) & 15u;
  return (w_half(base) * sm.x) * f32(q) - w_half(base + 2u) * sm.y;
}`,
  q5_k: `fn w_elem(e: u32) -> f32 {
  let base = (e >> 8u) * 176u;
  let j = e & 255u;
  let sb = j >> 5u;
  let l = j & 31u;
  let sm = scale_min_k4(sb, base + 4u);
  let q = ((w_byte(base + 48u + (sb >> 1u) * 32u + l) >> ((sb & 1u) * 4u)) & 15u) | (((w_byte(base + 16u + l) >> sb) & 1u) << 4u);
  return (w_half(base) * sm.x) * f32(q) - w_half(base + 2u) * sm.y;
}`,
  q6_k: `fn w_elem(e: u32) -> f32 {
  let base = (e >> 8u) * 210u;
  let j = e & 255u;
  let n = j >> 7u;
  let quarter = (j >> 5u) & 3u;
  let l = j & 31u;
  let lo = (w_byte(base + 64u * n + 32u * (quarter & 1u) + l) >> ((quarter >> 1u) * 4u)) & 15u;
  let hi = (w_byte(base + 128u + 32u * n + l) >> (2u * quarter)) & 3u;
  let sc = w_sbyte(base + 192u + 8u * n + 2u * quarter + (l >> 4u));
  return (w_half(base + 208u) * sc) * (f32(lo | (hi << 4u)) - 32.0);
}`,
};

// ---- GEMV chunks ------------------------------------------------------------------------

/**
 * What gemv.wgsl needs of a weight layout: the element type of `w`, CHUNK (elements one
 * thread decodes at a time) and `chunk_dot(e0, xc)`, the dot product of elements
 * e0..e0+CHUNK-1 with the activations `xc` (CHUNK/4 vec4s, or one f32 when CHUNK is 1).
 */
export interface GemvDecoder {
  readonly wType: string;
  readonly chunk: number;
  readonly code: string;
}

function gemvAligned(dtype: LinearWeightDtype): GemvDecoder {
  // One vec4<u32> (16 bytes) per chunk.
  switch (dtype) {
    case 'f32':
      return { wType: 'vec4<u32>', chunk: 4, code: `
fn chunk_dot(e0: u32, xc: array<vec4<f32>, 1>) -> f32 {
  return dot(bitcast<vec4<f32>>(w[e0 >> 2u]), xc[0]);
}` };
    case 'f16':
      return { wType: 'vec4<u32>', chunk: 8, code: `
fn chunk_dot(e0: u32, xc: array<vec4<f32>, 2>) -> f32 {
  let v = w[e0 >> 3u];
  return dot(vec4<f32>(unpack2x16float(v.x), unpack2x16float(v.y)), xc[0])
       + dot(vec4<f32>(unpack2x16float(v.z), unpack2x16float(v.w)), xc[1]);
}` };
    case 'bf16':
      return { wType: 'vec4<u32>', chunk: 8, code: `${BF16}
fn chunk_dot(e0: u32, xc: array<vec4<f32>, 2>) -> f32 {
  let v = w[e0 >> 3u];
  return dot(vec4<f32>(bf16x2(v.x), bf16x2(v.y)), xc[0]) + dot(vec4<f32>(bf16x2(v.z), bf16x2(v.w)), xc[1]);
}` };
    case 'f8_e4m3':
    case 'f8_e5m2':
      return { wType: 'vec4<u32>', chunk: 16, code: `${fp8(dtype)}
fn chunk_dot(e0: u32, xc: array<vec4<f32>, 4>) -> f32 {
  let v = w[e0 >> 4u];
  return dot(fp8x4(v.x), xc[0]) + dot(fp8x4(v.y), xc[1]) + dot(fp8x4(v.z), xc[2]) + dot(fp8x4(v.w), xc[3]);
}` };
    default:
      throw new RangeError(`${dtype} has no aligned GEMV chunk`);
  }
}

const GGUF_GEMV: Partial<Record<LinearWeightDtype, string>> = {
  q8_0: `
fn chunk_dot(e0: u32, xc: array<vec4<f32>, 8>) -> f32 {
  let base = (e0 >> 5u) * 34u;
  var s = 0.0;
  for (var i = 0u; i < 8u; i++) {
    s += dot(sbytes4(w_u32_2a(base + 2u + 4u * i)), xc[i]);
  }
  return s * w_half(base);
}`,
  q4_0: `
fn chunk_dot(e0: u32, xc: array<vec4<f32>, 8>) -> f32 {
  let base = (e0 >> 5u) * 18u;
  var s = 0.0;
  for (var i = 0u; i < 4u; i++) {
    let q = w_u32_2a(base + 2u + 4u * i);
    s += dot(nib_lo(q) - 8.0, xc[i]) + dot(nib_hi(q) - 8.0, xc[i + 4u]);
  }
  return s * w_half(base);
}`,
  q4_1: `
fn chunk_dot(e0: u32, xc: array<vec4<f32>, 8>) -> f32 {
  let base = (e0 >> 5u) * 20u;
  var s = 0.0;
  var sx = 0.0;
  for (var i = 0u; i < 4u; i++) {
    let q = w_u32_4a(base + 4u + 4u * i);
    s += dot(nib_lo(q), xc[i]) + dot(nib_hi(q), xc[i + 4u]);
    sx += dot(xc[i] + xc[i + 4u], vec4<f32>(1.0));
  }
  return s * w_half(base) + sx * w_half(base + 2u);
}`,
  q5_0: `
fn chunk_dot(e0: u32, xc: array<vec4<f32>, 8>) -> f32 {
  let base = (e0 >> 5u) * 22u;
  let qh = w_u32_2a(base + 2u);
  var s = 0.0;
  for (var i = 0u; i < 4u; i++) {
    let q = w_u32_2a(base + 6u + 4u * i);
    s += dot(nib_lo(q) + hbits4(qh, 4u * i) - 16.0, xc[i]) + dot(nib_hi(q) + hbits4(qh, 16u + 4u * i) - 16.0, xc[i + 4u]);
  }
  return s * w_half(base);
}`,
  q5_1: `
fn chunk_dot(e0: u32, xc: array<vec4<f32>, 8>) -> f32 {
  let base = (e0 >> 5u) * 24u;
  let qh = w_u32_4a(base + 4u);
  var s = 0.0;
  var sx = 0.0;
  for (var i = 0u; i < 4u; i++) {
    let q = w_u32_4a(base + 8u + 4u * i);
    s += dot(nib_lo(q) + hbits4(qh, 4u * i), xc[i]) + dot(nib_hi(q) + hbits4(qh, 16u + 4u * i), xc[i + 4u]);
    sx += dot(xc[i] + xc[i + 4u], vec4<f32>(1.0));
  }
  return s * w_half(base) + sx * w_half(base + 2u);
}`,
  // K-quants: one chunk is one 32-weight sub-block of a 256-weight super-block.
  q4_k: `
fn chunk_dot(e0: u32, xc: array<vec4<f32>, 8>) -> f32 {
  let base = (e0 >> 8u) * 144u;
  let sb = (e0 >> 5u) & 7u;
  let sm = scale_min_k4(sb, base + 4u);
  let qs = base + 16u + (sb >> 1u) * 32u;
  let shift = (sb & 1u) * 4u;
  var s = 0.0;
  var sx = 0.0;
  for (var i = 0u; i < 8u; i++) {
    let q = (w_u32_4a(qs + 4u * i) >> shift) & 0x0f0f0f0fu;
    s += dot(bytes4(q), xc[i]);
    sx += dot(xc[i], vec4<f32>(1.0));
  }
  return (w_half(base) * sm.x) * s - (w_half(base + 2u) * sm.y) * sx;
}`,
  q5_k: `
fn chunk_dot(e0: u32, xc: array<vec4<f32>, 8>) -> f32 {
  let base = (e0 >> 8u) * 176u;
  let sb = (e0 >> 5u) & 7u;
  let sm = scale_min_k4(sb, base + 4u);
  let qs = base + 48u + (sb >> 1u) * 32u;
  let shift = (sb & 1u) * 4u;
  var s = 0.0;
  var sx = 0.0;
  for (var i = 0u; i < 8u; i++) {
    let q = (w_u32_4a(qs + 4u * i) >> shift) & 0x0f0f0f0fu;
    let h = ((w_u32_4a(base + 16u + 4u * i) >> sb) & 0x01010101u) << 4u;
    s += dot(bytes4(q | h), xc[i]);
    sx += dot(xc[i], vec4<f32>(1.0));
  }
  return (w_half(base) * sm.x) * s - (w_half(base + 2u) * sm.y) * sx;
}`,
  q6_k: `
fn chunk_dot(e0: u32, xc: array<vec4<f32>, 8>) -> f32 {
  let base = (e0 >> 8u) * 210u;
  let j = e0 & 255u;
  let n = j >> 7u;
  let quarter = (j >> 5u) & 3u;
  let ql = base + 64u * n + 32u * (quarter & 1u);
  let qh = base + 128u + 32u * n;
  let lshift = (quarter >> 1u) * 4u;
  let hshift = 2u * quarter;
  let sc = base + 192u + 8u * n + 2u * quarter;
  var s0 = 0.0;
  var s1 = 0.0;
  for (var i = 0u; i < 8u; i++) {
    let lo = (w_u32_2a(ql + 4u * i) >> lshift) & 0x0f0f0f0fu;
    let hi = ((w_u32_2a(qh + 4u * i) >> hshift) & 0x03030303u) << 4u;
    let d = dot(bytes4(lo | hi) - 32.0, xc[i]);
    if (i < 4u) { s0 += d; } else { s1 += d; }
  }
  return w_half(base + 208u) * (w_sbyte(sc) * s0 + w_sbyte(sc + 1u) * s1);
}`,
};

function ggufPrelude(dtype: LinearWeightDtype): string {
  return BYTE_READS + (dtype === 'q4_k' || dtype === 'q5_k' ? SCALE_MIN_K4 : '');
}

function plainPrelude(dtype: LinearWeightDtype): string {
  return dtype === 'f8_e4m3' || dtype === 'f8_e5m2' ? BYTE_READS + fp8(dtype) : dtype === 'bf16' ? BF16 : '';
}

/**
 * The GEMV decoder of a layout. `aligned` (plain layouts whose rows are whole 16-byte
 * words) reads one vec4<u32> per chunk; otherwise plain layouts go element by element.
 * GGUF rows are always whole blocks: one 32-weight block (or K-quant sub-block) per chunk.
 */
export function gemvDecoder(dtype: LinearWeightDtype, aligned: boolean): GemvDecoder {
  const gguf = GGUF_GEMV[dtype];
  if (gguf) return { wType: 'u32', chunk: 32, code: ggufPrelude(dtype) + gguf };
  if (aligned) return gemvAligned(dtype);
  return { wType: 'u32', chunk: 1, code: `${plainPrelude(dtype)}
${ELEM[dtype]}
fn chunk_dot(e0: u32, xc: f32) -> f32 {
  return w_elem(e0) * xc;
}` };
}

/** Whether a plain weight's rows are whole 16-byte words (the aligned GEMV). */
export function gemvAlignedRows(dtype: LinearWeightDtype, k: number): boolean {
  return isPlain(dtype) && (k * plainBytes(dtype)) % 16 === 0;
}

// ---- tile decoders ----------------------------------------------------------------------

/**
 * What the tiled kernels need: `w_vec4(e)` (elements e..e+3, e a multiple of 4, one load
 * for plain layouts: w is array<vec4<u32>> for f32, vec2<u32> for f16/bf16, u32 for fp8)
 * when K is a multiple of 4, and `w_elem(e)` otherwise.
 */
export interface TileDecoder {
  readonly wType: string;
  readonly code: string;
}

export function tileDecoder(dtype: LinearWeightDtype, aligned: boolean): TileDecoder {
  if (!isPlain(dtype)) {
    return { wType: 'u32', code: `${ggufPrelude(dtype)}
${ELEM[dtype]}
fn w_vec4(e: u32) -> vec4<f32> {
  return vec4<f32>(w_elem(e), w_elem(e + 1u), w_elem(e + 2u), w_elem(e + 3u));
}` };
  }
  if (!aligned) return { wType: 'u32', code: `${plainPrelude(dtype)}\n${ELEM[dtype]}` };
  switch (dtype) {
    case 'f32':
      return { wType: 'vec4<u32>', code: `fn w_vec4(e: u32) -> vec4<f32> { return bitcast<vec4<f32>>(w[e >> 2u]); }` };
    case 'f16':
      return { wType: 'vec2<u32>', code: `fn w_vec4(e: u32) -> vec4<f32> {
  let v = w[e >> 2u];
  return vec4<f32>(unpack2x16float(v.x), unpack2x16float(v.y));
}` };
    case 'bf16':
      return { wType: 'vec2<u32>', code: `${BF16}
fn w_vec4(e: u32) -> vec4<f32> {
  let v = w[e >> 2u];
  return vec4<f32>(bf16x2(v.x), bf16x2(v.y));
}` };
    default:
      return { wType: 'u32', code: `${fp8(dtype as 'f8_e4m3' | 'f8_e5m2')}
fn w_vec4(e: u32) -> vec4<f32> { return fp8x4(w[e >> 2u]); }` };
  }
}

// ---- bias -------------------------------------------------------------------------------

export type BiasDtype = 'f32' | 'f16' | 'bf16';

/** `fn bias_at(i: u32) -> f32` over `bias: array<u32>`; 0 without a bias. */
export function biasCode(dtype: BiasDtype | null): string {
  switch (dtype) {
    case null:
      return 'fn bias_at(i: u32) -> f32 { return 0.0; }';
    case 'f32':
      return 'fn bias_at(i: u32) -> f32 { return bitcast<f32>(bias[i]); }';
    case 'f16':
      return 'fn bias_at(i: u32) -> f32 { return unpack2x16float(bias[i >> 1u] >> ((i & 1u) * 16u)).x; }';
    case 'bf16':
      return 'fn bias_at(i: u32) -> f32 { return bitcast<f32>((bias[i >> 1u] >> ((i & 1u) * 16u)) << 16u); }';
  }
}

// ---- generated kernel bodies -------------------------------------------------------------

/**
 * The register tile of shaders/matmul.wgsl, unrolled: a thread owns TM×TN outputs as
 * (TM/4) groups of 4 rows × (TN/4) vec4s of columns. Rows of group i are
 * 4·(ty + i·BM/TM) + r, columns of vec4 j are 4·(tx + j·BN/TN) + 0..3, so a warp's reads
 * of the shared tiles are contiguous vec4s.
 */
export function tiledMicrokernel(tm: number, tn: number, bm: number, bn: number): { decl: string; body: string; store: string } {
  const gi = tm / 4;
  const gj = tn / 4;
  const decl: string[] = [];
  const body: string[] = [];
  const store: string[] = [];
  for (let i = 0; i < gi; i++) for (let r = 0; r < 4; r++) for (let j = 0; j < gj; j++) decl.push(`var c_${i}_${r}_${j} = vec4<f32>(0.0);`);
  for (let i = 0; i < gi; i++) body.push(`let a_${i} = As[kb + kk][ty + ${i * (bm / tm)}u];`);
  for (let j = 0; j < gj; j++) body.push(`let b_${j} = Bs[kb + kk][tx + ${j * (bn / tn)}u];`);
  const comp = ['x', 'y', 'z', 'w'];
  for (let i = 0; i < gi; i++) for (let r = 0; r < 4; r++) for (let j = 0; j < gj; j++) {
    body.push(`c_${i}_${r}_${j} = fma(vec4<f32>(a_${i}.${comp[r]}), b_${j}, c_${i}_${r}_${j});`);
  }
  for (let i = 0; i < gi; i++) for (let r = 0; r < 4; r++) {
    store.push(`{ let m = m0 + 4u * (ty + ${i * (bm / tm)}u) + ${r}u;`);
    store.push(`  if (m < params.m) {`);
    for (let j = 0; j < gj; j++) store.push(`    store4(m, n0 + 4u * (tx + ${j * (bn / tn)}u), c_${i}_${r}_${j});`);
    store.push('  } }');
  }
  return { decl: decl.join('\n  '), body: body.join('\n      '), store: store.join('\n  ') };
}

/**
 * The subgroup-matrix kernel's per-subgroup work, unrolled: SG_M×SG_N 16×16 f32
 * accumulators; per 16-deep k step, SG_M left and SG_N right operands.
 */
export function sgmatMicrokernel(sgM: number, sgN: number, direct: boolean): { decl: string; body: string; store: string } {
  const decl: string[] = [];
  const store: string[] = [];
  for (let i = 0; i < sgM; i++) for (let j = 0; j < sgN; j++) decl.push(`var acc_${i}_${j} = subgroup_matrix_result<f32, 16, 16>();`);
  for (let i = 0; i < sgM; i++) for (let j = 0; j < sgN; j++) store.push(`store_tile(acc_${i}_${j}, om + am + ${16 * i}u, on + bn + ${16 * j}u, sg, lane);`);
  const mma = (l: string, r: string) => {
    const lines: string[] = [];
    for (let i = 0; i < sgM; i++) for (let j = 0; j < sgN; j++) lines.push(`acc_${i}_${j} = subgroupMatrixMultiplyAccumulate(${l}${i}, ${r}${j}, acc_${i}_${j});`);
    return lines;
  };
  if (!direct) {
    const body: string[] = [];
    for (let i = 0; i < sgM; i++) body.push(`let l_${i} = subgroupMatrixLoad<subgroup_matrix_left<f16, 16, 16>, row_major>(&As, (am + ${16 * i}u) * AS + kk, AS);`);
    for (let j = 0; j < sgN; j++) body.push(`let r_${j} = subgroupMatrixLoad<subgroup_matrix_right<f16, 16, 16>, col_major>(&Bs, (bn + ${16 * j}u) * AS + kk, AS);`);
    body.push(...mma('l_', 'r_'));
    return { decl: decl.join('\n  '), body: body.join('\n      '), store: store.join('\n  ') };
  }
  // Direct: the operands of step kk + 16 load while step kk multiplies (fragments past M or N
  // start at the last row: their results are never stored).
  const loads = (k: string, v: string) => [
    ...Array.from({ length: sgM }, (_, i) => `${v}l_${i} = subgroupMatrixLoad<subgroup_matrix_left<f16, 16, 16>, row_major>(&x, min(am + ${16 * i}u, params.m - 1u) * params.k + ${k}, params.k);`),
    ...Array.from({ length: sgN }, (_, j) => `${v}r_${j} = subgroupMatrixLoad<subgroup_matrix_right<f16, 16, 16>, col_major>(&w, min(bn + ${16 * j}u, params.n - 1u) * params.k + ${k}, params.k);`),
  ];
  const body = [
    ...loads('0u', 'var '),
    'for (var kk = 16u; kk < params.k; kk += 16u) {',
    ...loads('kk', 'let n').map((l) => `  ${l}`),
    ...mma('l_', 'r_').map((l) => `  ${l}`),
    ...Array.from({ length: sgM }, (_, i) => `  l_${i} = nl_${i};`),
    ...Array.from({ length: sgN }, (_, j) => `  r_${j} = nr_${j};`),
    '}',
    ...mma('l_', 'r_'),
  ];
  return { decl: decl.join('\n  '), body: body.join('\n  '), store: store.join('\n  ') };
}

/**
 * The packed subgroup-matrix kernel's per-subgroup work (shaders/matmul-sgmat-packed.wgsl),
 * unrolled: SG_M×SG_N accumulators; the k loop walks `unroll` 16-deep blocks per iteration
 * (the packing pads KB to a multiple of 4). `prefetch`: the next iteration's operands load
 * into registers while this one multiplies; else each iteration loads, then multiplies (the
 * driver's scheduler overlaps what it can). Operand blocks past the packed rows (mb, nb) clamp
 * to the last block: their results are never stored.
 */
export function sgmatPackedMicrokernel(sgM: number, sgN: number, unroll: number, prefetch: boolean): { decl: string; body: string; store: string } {
  const decl: string[] = [];
  const store: string[] = [];
  for (let i = 0; i < sgM; i++) for (let j = 0; j < sgN; j++) decl.push(`var acc_${i}_${j} = subgroup_matrix_result<f32, 16, 16>();`);
  for (let i = 0; i < sgM; i++) decl.push(`let bl_${i} = min(am / 16u + ${i}u, params.mb - 1u) * params.kb * 256u;`);
  for (let j = 0; j < sgN; j++) decl.push(`let br_${j} = min(bn / 16u + ${j}u, params.nb - 1u) * params.kb * 256u;`);
  for (let i = 0; i < sgM; i++) for (let j = 0; j < sgN; j++) store.push(`store_tile(acc_${i}_${j}, am + ${16 * i}u, bn + ${16 * j}u, sg, lane);`);
  const loads = (o: string, v: string, p: string) => {
    const lines: string[] = [];
    for (let s = 0; s < unroll; s++) {
      const off = s === 0 ? o : `${o} + ${256 * s}u`;
      for (let i = 0; i < sgM; i++) lines.push(`${v}${p}l_${s}_${i} = subgroupMatrixLoad<subgroup_matrix_left<f16, 16, 16>, row_major>(&xp, bl_${i} + ${off}, 16u);`);
      for (let j = 0; j < sgN; j++) lines.push(`${v}${p}r_${s}_${j} = subgroupMatrixLoad<subgroup_matrix_right<f16, 16, 16>, col_major>(&wp, br_${j} + ${off}, 16u);`);
    }
    return lines;
  };
  const mma = (p: string) => {
    const lines: string[] = [];
    for (let s = 0; s < unroll; s++) {
      for (let i = 0; i < sgM; i++) for (let j = 0; j < sgN; j++) {
        lines.push(`acc_${i}_${j} = subgroupMatrixMultiplyAccumulate(${p}l_${s}_${i}, ${p}r_${s}_${j}, acc_${i}_${j});`);
      }
    }
    return lines;
  };
  let body: string[];
  if (prefetch) {
    const moves: string[] = [];
    for (let s = 0; s < unroll; s++) {
      for (let i = 0; i < sgM; i++) moves.push(`l_${s}_${i} = nl_${s}_${i};`);
      for (let j = 0; j < sgN; j++) moves.push(`r_${s}_${j} = nr_${s}_${j};`);
    }
    body = [
      ...loads('0u', 'var ', ''),
      `for (var c = ${unroll}u; c < params.kb; c += ${unroll}u) {`,
      '  let o = c * 256u;',
      ...loads('o', 'let ', 'n').map((l) => `  ${l}`),
      ...mma('').map((l) => `  ${l}`),
      ...moves.map((l) => `  ${l}`),
      '}',
      ...mma(''),
    ];
  } else {
    body = [
      `for (var c = 0u; c < params.kb; c += ${unroll}u) {`,
      '  let o = c * 256u;',
      ...loads('o', 'let ', '').map((l) => `  ${l}`),
      ...mma('').map((l) => `  ${l}`),
      '}',
    ];
  }
  return { decl: decl.join('\n  '), body: body.join('\n  '), store: store.join('\n  ') };
}
