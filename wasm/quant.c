// GGUF weights, decoded inside the kernels from ggml's block layouts (ggml-quants.h):
// every 32 weights ("sub-block") decode to 32 small integers q and y = d·q + c, with d per
// 16 weights (Q6_K's scales change every 16) and c per 32 (a min, or 0). For the GEMM path
// quant_decode_panel writes y exactly as ggml's dequantize_row_* computes it (the same f32
// operations, no fused multiply-add); the GEMV path sums d·Σq·x + c·Σx per sub-block.
#include "common.h"

typedef struct {
  v128 q0, q1;   // 32 signed values (i8x16 each): elements 0..15 and 16..31
  f32 d0, d1;    // scale of elements 0..15 and 16..31
  f32 c;         // added to every element (0 when none)
} Sub;


INLINE f32 h2f(const uint8_t *p) { return f16_to_f32(rd16(p)); }

/** 32 high bits (u32 LE at p), bit e for element e → i8x16 of 0x10 or 0 (elements 0..15, 16..31). */
INLINE void high_bits(uint32_t qh, v128 *h0, v128 *h1) {
  const v128 bits = wasm_u8x16_make(1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128);
  v128 b = wasm_i32x4_splat((int32_t)qh);
  v128 lo = wasm_i8x16_shuffle(b, b, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1);
  v128 hi = wasm_i8x16_shuffle(b, b, 2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3);
  const v128 sixteen = wasm_i8x16_splat(0x10);
  *h0 = wasm_v128_and(wasm_i8x16_eq(wasm_v128_and(lo, bits), bits), sixteen);
  *h1 = wasm_v128_and(wasm_i8x16_eq(wasm_v128_and(hi, bits), bits), sixteen);
}

/** ggml's get_scale_min_k4 */
INLINE void scale_min_k4(int j, const uint8_t *q, uint32_t *d, uint32_t *m) {
  if (j < 4) {
    *d = q[j] & 63;
    *m = q[j + 4] & 63;
  } else {
    *d = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
    *m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
  }
}

int quant_block_elems(int wt) { return wt >= W_Q4_K ? 256 : 32; }
INLINE int block_bytes(int wt) {
  switch (wt) {
    case W_Q8_0: return 34;
    case W_Q4_0: return 18;
    case W_Q4_1: return 20;
    case W_Q5_0: return 22;
    case W_Q5_1: return 24;
    case W_Q4_K: return 144;
    case W_Q5_K: return 176;
    default: return 210;  // W_Q6_K
  }
}

/** Sub-block s (0 for 32-blocks, 0..7 for K-quants) of the block at b. */
INLINE Sub sub32(const int wt, const uint8_t *b, int s) {
  Sub r;
  const v128 low4 = wasm_i8x16_splat(0x0f);
  switch (wt) {
    case W_Q8_0:
      r.q0 = wasm_v128_load(b + 2);
      r.q1 = wasm_v128_load(b + 18);
      r.d0 = r.d1 = h2f(b);
      r.c = 0;
      break;
    case W_Q4_0: {
      v128 v = wasm_v128_load(b + 2);
      r.q0 = wasm_i8x16_sub(wasm_v128_and(v, low4), wasm_i8x16_splat(8));
      r.q1 = wasm_i8x16_sub(wasm_u8x16_shr(v, 4), wasm_i8x16_splat(8));
      r.d0 = r.d1 = h2f(b);
      r.c = 0;
      break;
    }
    case W_Q4_1: {
      v128 v = wasm_v128_load(b + 4);
      r.q0 = wasm_v128_and(v, low4);
      r.q1 = wasm_u8x16_shr(v, 4);
      r.d0 = r.d1 = h2f(b);
      r.c = h2f(b + 2);
      break;
    }
    case W_Q5_0: {
      v128 h0, h1;
      high_bits(rd32(b + 2), &h0, &h1);
      v128 v = wasm_v128_load(b + 6);
      r.q0 = wasm_i8x16_sub(wasm_v128_or(wasm_v128_and(v, low4), h0), wasm_i8x16_splat(16));
      r.q1 = wasm_i8x16_sub(wasm_v128_or(wasm_u8x16_shr(v, 4), h1), wasm_i8x16_splat(16));
      r.d0 = r.d1 = h2f(b);
      r.c = 0;
      break;
    }
    case W_Q5_1: {
      v128 h0, h1;
      high_bits(rd32(b + 4), &h0, &h1);
      v128 v = wasm_v128_load(b + 8);
      r.q0 = wasm_v128_or(wasm_v128_and(v, low4), h0);
      r.q1 = wasm_v128_or(wasm_u8x16_shr(v, 4), h1);
      r.d0 = r.d1 = h2f(b);
      r.c = h2f(b + 2);
      break;
    }
    case W_Q4_K:
    case W_Q5_K: {
      const int j = s >> 1, hi = s & 1;
      const uint8_t *qs = b + (wt == W_Q4_K ? 16 : 48) + j * 32;
      v128 v0 = wasm_v128_load(qs), v1 = wasm_v128_load(qs + 16);
      if (hi) {
        r.q0 = wasm_u8x16_shr(v0, 4);
        r.q1 = wasm_u8x16_shr(v1, 4);
      } else {
        r.q0 = wasm_v128_and(v0, low4);
        r.q1 = wasm_v128_and(v1, low4);
      }
      if (wt == W_Q5_K) {
        // bit s of qh[l] is element l's fifth bit
        const v128 bit = wasm_i8x16_splat((int8_t)(1 << s));
        const v128 sixteen = wasm_i8x16_splat(0x10);
        v128 h0 = wasm_v128_load(b + 16), h1 = wasm_v128_load(b + 32);
        r.q0 = wasm_v128_or(r.q0, wasm_v128_and(wasm_i8x16_eq(wasm_v128_and(h0, bit), bit), sixteen));
        r.q1 = wasm_v128_or(r.q1, wasm_v128_and(wasm_i8x16_eq(wasm_v128_and(h1, bit), bit), sixteen));
      }
      uint32_t sc, mn;
      scale_min_k4(s, b + 4, &sc, &mn);
      r.d0 = r.d1 = h2f(b) * (f32)sc;
      r.c = -(h2f(b + 2) * (f32)mn);
      break;
    }
    default: {  // W_Q6_K
      const int h = s >> 2, t = s & 3;
      const uint8_t *ql = b + h * 64 + (t & 1) * 32;
      const uint8_t *qh = b + 128 + h * 32;
      const int8_t *sc = (const int8_t *)(b + 192 + h * 8);
      v128 l0 = wasm_v128_load(ql), l1 = wasm_v128_load(ql + 16);
      if (t >= 2) {
        l0 = wasm_u8x16_shr(l0, 4);
        l1 = wasm_u8x16_shr(l1, 4);
      } else {
        l0 = wasm_v128_and(l0, low4);
        l1 = wasm_v128_and(l1, low4);
      }
      const v128 three = wasm_i8x16_splat(3);
      v128 h0 = wasm_v128_and(wasm_u8x16_shr(wasm_v128_load(qh), 2 * t), three);
      v128 h1 = wasm_v128_and(wasm_u8x16_shr(wasm_v128_load(qh + 16), 2 * t), three);
      r.q0 = wasm_i8x16_sub(wasm_v128_or(l0, wasm_i8x16_shl(h0, 4)), wasm_i8x16_splat(32));
      r.q1 = wasm_i8x16_sub(wasm_v128_or(l1, wasm_i8x16_shl(h1, 4)), wasm_i8x16_splat(32));
      const f32 d = h2f(b + 208);
      r.d0 = d * (f32)sc[2 * t];
      r.d1 = d * (f32)sc[2 * t + 1];
      r.c = 0;
      break;
    }
  }
  return r;
}

/** i8x16 → four f32x4 (elements 0-3, 4-7, 8-11, 12-15). */
INLINE void widen(v128 q, v128 *f) {
  v128 a = wasm_i16x8_extend_low_i8x16(q), b = wasm_i16x8_extend_high_i8x16(q);
  f[0] = wasm_f32x4_convert_i32x4(wasm_i32x4_extend_low_i16x8(a));
  f[1] = wasm_f32x4_convert_i32x4(wasm_i32x4_extend_high_i16x8(a));
  f[2] = wasm_f32x4_convert_i32x4(wasm_i32x4_extend_low_i16x8(b));
  f[3] = wasm_f32x4_convert_i32x4(wasm_i32x4_extend_high_i16x8(b));
}

// ---- GEMM: decode a panel ----------------------------------------------------------------

INLINE void transpose4(v128 a, v128 b, v128 c, v128 d, f32 *dst) {
  v128 t0 = wasm_i32x4_shuffle(a, b, 0, 4, 1, 5), t1 = wasm_i32x4_shuffle(a, b, 2, 6, 3, 7);
  v128 t2 = wasm_i32x4_shuffle(c, d, 0, 4, 1, 5), t3 = wasm_i32x4_shuffle(c, d, 2, 6, 3, 7);
  wasm_v128_store(dst, wasm_i32x4_shuffle(t0, t2, 0, 1, 4, 5));
  wasm_v128_store(dst + 8, wasm_i32x4_shuffle(t0, t2, 2, 3, 6, 7));
  wasm_v128_store(dst + 16, wasm_i32x4_shuffle(t1, t3, 0, 1, 4, 5));
  wasm_v128_store(dst + 24, wasm_i32x4_shuffle(t1, t3, 2, 3, 6, 7));
}

/** Rows [n0, n0 + 8) (zero past n), k in [k0, k0 + kc), into panel[kc][8]: 8 rows decoded, then 4×4 transposes. */
INLINE void decode_panel_t(const int wt, const uint8_t *w, int n, int k, int n0, int k0, int kc, f32 *panel) {
  const int be = quant_block_elems(wt), bb = block_bytes(wt);
  const size_t row_bytes = (size_t)(k / be) * bb;
  const int rows = n - n0 < 8 ? n - n0 : 8;
  v128 f[8][8];
  for (int r = rows; r < 8; r++)
    for (int v = 0; v < 8; v++) f[r][v] = wasm_f32x4_splat(0);
  for (int e = k0; e < k0 + kc; e += 32) {
    for (int r = 0; r < rows; r++) {
      const uint8_t *blk = w + (n0 + r) * row_bytes + (e / be) * bb;
      Sub sb = sub32(wt, blk, (e % be) / 32);
      widen(sb.q0, f[r]);
      widen(sb.q1, f[r] + 4);
      const v128 d0 = wasm_f32x4_splat(sb.d0), d1 = wasm_f32x4_splat(sb.d1), c = wasm_f32x4_splat(sb.c);
      for (int v = 0; v < 8; v++) {
        f[r][v] = wasm_f32x4_mul(f[r][v], v < 4 ? d0 : d1);
        if (wt == W_Q4_1 || wt == W_Q5_1 || wt == W_Q4_K || wt == W_Q5_K) f[r][v] = wasm_f32x4_add(f[r][v], c);
      }
    }
    f32 *dst = panel + (e - k0) * 8;
    for (int v = 0; v < 8; v++) {
      transpose4(f[0][v], f[1][v], f[2][v], f[3][v], dst + v * 32);
      transpose4(f[4][v], f[5][v], f[6][v], f[7][v], dst + v * 32 + 4);
    }
  }
}

#define DECODE_FN(WT) \
  NOINLINE void decode_panel_##WT(const uint8_t *w, int n, int k, int n0, int k0, int kc, f32 *panel) { decode_panel_t(WT, w, n, k, n0, k0, kc, panel); }
DECODE_FN(W_Q8_0)
DECODE_FN(W_Q4_0)
DECODE_FN(W_Q4_1)
DECODE_FN(W_Q5_0)
DECODE_FN(W_Q5_1)
DECODE_FN(W_Q4_K)
DECODE_FN(W_Q5_K)
DECODE_FN(W_Q6_K)

void quant_decode_panel(int wt, const uint8_t *w, int n, int k, int n0, int k0, int kc, f32 *panel) {
  switch (wt) {
    case W_Q8_0: decode_panel_W_Q8_0(w, n, k, n0, k0, kc, panel); break;
    case W_Q4_0: decode_panel_W_Q4_0(w, n, k, n0, k0, kc, panel); break;
    case W_Q4_1: decode_panel_W_Q4_1(w, n, k, n0, k0, kc, panel); break;
    case W_Q5_0: decode_panel_W_Q5_0(w, n, k, n0, k0, kc, panel); break;
    case W_Q5_1: decode_panel_W_Q5_1(w, n, k, n0, k0, kc, panel); break;
    case W_Q4_K: decode_panel_W_Q4_K(w, n, k, n0, k0, kc, panel); break;
    case W_Q5_K: decode_panel_W_Q5_K(w, n, k, n0, k0, kc, panel); break;
    default: decode_panel_W_Q6_K(w, n, k, n0, k0, kc, panel); break;
  }
}

// ---- GEMV: straight from the blocks ---------------------------------------------------------

/** Rows [n0, n1) for M ≤ 3 rows of x: out[i, n - n0] = scale · Σ_k x[i, k] · y[n, k] + bias[n - n0]. */
INLINE void gemv_t(const int wt, const int M, const uint8_t *w, int k, const f32 *x, int ldx, int n0, int n1, f32 *out, int ldo,
                   f32 scale, const f32 *bias) {
  const int be = quant_block_elems(wt), bb = block_bytes(wt);
  const int subs = k / 32;
  const int has_c = wt == W_Q4_1 || wt == W_Q5_1 || wt == W_Q4_K || wt == W_Q5_K;
  const size_t row_bytes = (size_t)(k / be) * bb;
  for (int row = n0; row < n1; row++) {
    const uint8_t *src = w + row * row_bytes;
    v128 acc[3];
    for (int i = 0; i < M; i++) acc[i] = wasm_f32x4_splat(0);
    for (int s = 0; s < subs; s++) {
      const uint8_t *blk = src + (s * 32 / be) * bb;
      Sub sb = sub32(wt, blk, s % (be / 32));
      v128 f[8];
      widen(sb.q0, f);
      widen(sb.q1, f + 4);
      const v128 d0 = wasm_f32x4_splat(sb.d0), d1 = wasm_f32x4_splat(sb.d1), c = wasm_f32x4_splat(sb.c);
      for (int i = 0; i < M; i++) {
        const f32 *xv = x + i * ldx + s * 32;
        v128 x0 = wasm_v128_load(xv), x1 = wasm_v128_load(xv + 4), x2 = wasm_v128_load(xv + 8), x3 = wasm_v128_load(xv + 12);
        v128 x4 = wasm_v128_load(xv + 16), x5 = wasm_v128_load(xv + 20), x6 = wasm_v128_load(xv + 24), x7 = wasm_v128_load(xv + 28);
        v128 s0 = wasm_f32x4_add(wasm_f32x4_mul(f[0], x0), wasm_f32x4_mul(f[1], x1));
        v128 s1 = wasm_f32x4_add(wasm_f32x4_mul(f[2], x2), wasm_f32x4_mul(f[3], x3));
        v128 s2 = wasm_f32x4_add(wasm_f32x4_mul(f[4], x4), wasm_f32x4_mul(f[5], x5));
        v128 s3 = wasm_f32x4_add(wasm_f32x4_mul(f[6], x6), wasm_f32x4_mul(f[7], x7));
        v128 part = wasm_f32x4_add(wasm_f32x4_mul(wasm_f32x4_add(s0, s1), d0), wasm_f32x4_mul(wasm_f32x4_add(s2, s3), d1));
        if (has_c) {
          v128 sx = wasm_f32x4_add(wasm_f32x4_add(wasm_f32x4_add(x0, x1), wasm_f32x4_add(x2, x3)),
                                   wasm_f32x4_add(wasm_f32x4_add(x4, x5), wasm_f32x4_add(x6, x7)));
          part = wasm_f32x4_add(part, wasm_f32x4_mul(sx, c));
        }
        acc[i] = wasm_f32x4_add(acc[i], part);
      }
    }
    for (int i = 0; i < M; i++) out[i * ldo + (row - n0)] = hsum(acc[i]) * scale + (bias ? bias[row - n0] : 0.0f);
  }
}

#define GEMV_FN(WT)                                                                                                  \
  NOINLINE void gemv_##WT(int M, const uint8_t *w, int k, const f32 *x, int ldx, int n0, int n1, f32 *out, int ldo, \
                          f32 scale, const f32 *bias) {                                                               \
    switch (M) {                                                                                                      \
      case 1: gemv_t(WT, 1, w, k, x, ldx, n0, n1, out, ldo, scale, bias); break;                                      \
      case 2: gemv_t(WT, 2, w, k, x, ldx, n0, n1, out, ldo, scale, bias); break;                                      \
      default: gemv_t(WT, 3, w, k, x, ldx, n0, n1, out, ldo, scale, bias); break;                                     \
    }                                                                                                                 \
  }
GEMV_FN(W_Q8_0)
GEMV_FN(W_Q4_0)
GEMV_FN(W_Q4_1)
GEMV_FN(W_Q5_0)
GEMV_FN(W_Q5_1)
GEMV_FN(W_Q4_K)
GEMV_FN(W_Q5_K)
GEMV_FN(W_Q6_K)

void quant_gemv(int wt, const uint8_t *w, int k, const f32 *x, int ldx, int m, int n0, int n1, f32 *out, int ldo, f32 scale,
                const f32 *bias) {
  switch (wt) {
    case W_Q8_0: gemv_W_Q8_0(m, w, k, x, ldx, n0, n1, out, ldo, scale, bias); break;
    case W_Q4_0: gemv_W_Q4_0(m, w, k, x, ldx, n0, n1, out, ldo, scale, bias); break;
    case W_Q4_1: gemv_W_Q4_1(m, w, k, x, ldx, n0, n1, out, ldo, scale, bias); break;
    case W_Q5_0: gemv_W_Q5_0(m, w, k, x, ldx, n0, n1, out, ldo, scale, bias); break;
    case W_Q5_1: gemv_W_Q5_1(m, w, k, x, ldx, n0, n1, out, ldo, scale, bias); break;
    case W_Q4_K: gemv_W_Q4_K(m, w, k, x, ldx, n0, n1, out, ldo, scale, bias); break;
    case W_Q5_K: gemv_W_Q5_K(m, w, k, x, ldx, n0, n1, out, ldo, scale, bias); break;
    default: gemv_W_Q6_K(m, w, k, x, ldx, n0, n1, out, ldo, scale, bias); break;
  }
}

/** Row `row` of a GGUF weight [n, k] decoded to k floats, exactly as ggml's dequantize_row_*. */
void quant_decode_row(int wt, const uint8_t *w, int k, int row, f32 *out) {
  const int be = quant_block_elems(wt), bb = block_bytes(wt);
  const uint8_t *src = w + (size_t)row * (size_t)(k / be) * bb;
  for (int e = 0; e < k; e += 32) {
    Sub sb;
    switch (wt) {
      case W_Q8_0: sb = sub32(W_Q8_0, src + (e / be) * bb, 0); break;
      case W_Q4_0: sb = sub32(W_Q4_0, src + (e / be) * bb, 0); break;
      case W_Q4_1: sb = sub32(W_Q4_1, src + (e / be) * bb, 0); break;
      case W_Q5_0: sb = sub32(W_Q5_0, src + (e / be) * bb, 0); break;
      case W_Q5_1: sb = sub32(W_Q5_1, src + (e / be) * bb, 0); break;
      case W_Q4_K: sb = sub32(W_Q4_K, src + (e / be) * bb, (e % be) / 32); break;
      case W_Q5_K: sb = sub32(W_Q5_K, src + (e / be) * bb, (e % be) / 32); break;
      default: sb = sub32(W_Q6_K, src + (e / be) * bb, (e % be) / 32); break;
    }
    v128 f[8];
    widen(sb.q0, f);
    widen(sb.q1, f + 4);
    const int has_c = wt == W_Q4_1 || wt == W_Q5_1 || wt == W_Q4_K || wt == W_Q5_K;
    for (int v = 0; v < 8; v++) {
      v128 y = wasm_f32x4_mul(f[v], wasm_f32x4_splat(v < 4 ? sb.d0 : sb.d1));
      if (has_c) y = wasm_f32x4_add(y, wasm_f32x4_splat(sb.c));
      wasm_v128_store(out + e + v * 4, y);
    }
  }
}
