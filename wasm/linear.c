// linear: out[m, n] = scale · Σ_k x[m, k] · w[n, k] + bias[n]   (x, out, bias f32)
//
// Plain weights (f32, f16, bf16, fp8) are stored as panels of 8 rows (common.h), so one
// k step reads 8 consecutive outputs' weights: the micro-kernel broadcasts x and keeps
// MR×8 (or, for GEMV, MR×8·NP) f32x4 accumulators, with no horizontal sums. GGUF blocks
// stay byte for byte as ggml stores them (quant.c decodes them).
#include "common.h"

#ifndef MR
#define MR 4   // rows of the GEMM micro-kernel (4×8: 8 accumulators + operands fit 15 xmm)
#endif
#ifndef KC
#define KC 256 // k block of the GEMM path (a multiple of 256 keeps K-quant super-blocks whole)
#endif
#ifndef MC
#define MC 64  // rows per GEMM tile (f32 weights: nothing to decode)
#endif
#ifndef MC_DECODED_MAX
#define MC_DECODED_MAX 1024  // most rows per GEMM tile for weights decoded into panels first
#endif
#ifndef NPT
#define NPT 8  // panels (of 8 columns) per GEMM tile
#endif
#define GEMV_MAX_M 3

typedef struct {
  uint32_t x, w, out, bias;   // byte offsets; bias 0 = none
  int32_t m, n, k, wtype;
  f32 scale;
  int32_t ldx, ldo;           // row strides of x and out, in elements
  uint32_t scratch;           // per-thread scratch base (scratch_bytes each)
  uint32_t scratch_bytes;
  int32_t next;               // work counter (the host zeroes it before each run)
  int32_t threads;            // threads that run the job (sizes the tiles of decoded weights)
} LinearJob;

// ---- decoding 8 consecutive weights of a panel into two f32x4 --------------------------

INLINE int plain_bytes(int wt) { return wt == W_F32 ? 4 : (wt == W_F16 || wt == W_BF16) ? 2 : 1; }

INLINE void ld8(const int wt, const uint8_t *p, v128 *lo, v128 *hi) {
  if (wt == W_F32) {
    *lo = wasm_v128_load(p);
    *hi = wasm_v128_load(p + 16);
  } else if (wt == W_F16) {
    v128 h = wasm_v128_load(p);
    *lo = f16x4_to_f32(wasm_u32x4_extend_low_u16x8(h));
    *hi = f16x4_to_f32(wasm_u32x4_extend_high_u16x8(h));
  } else if (wt == W_BF16) {
    v128 h = wasm_v128_load(p), z = wasm_i32x4_splat(0);
    *lo = wasm_i16x8_shuffle(z, h, 0, 8, 1, 9, 2, 10, 3, 11);
    *hi = wasm_i16x8_shuffle(z, h, 4, 12, 5, 13, 6, 14, 7, 15);
  } else if (wt == W_F8E4M3) {
    v128 b = wasm_u16x8_extend_low_u8x16(wasm_v128_load64_zero(p));
    *lo = e4m3x4_to_f32(wasm_u32x4_extend_low_u16x8(b));
    *hi = e4m3x4_to_f32(wasm_u32x4_extend_high_u16x8(b));
  } else {  // W_F8E5M2: the top byte of a half
    v128 b = wasm_i16x8_shl(wasm_u16x8_extend_low_u8x16(wasm_v128_load64_zero(p)), 8);
    *lo = f16x4_to_f32(wasm_u32x4_extend_low_u16x8(b));
    *hi = f16x4_to_f32(wasm_u32x4_extend_high_u16x8(b));
  }
}

// ---- the micro-kernel ------------------------------------------------------------------

enum { ACCUMULATE = 1, FINISH = 2 };

/**
 * c[mr, np·8] (+)= a[mr, kc] · panels; panels j at b + j·pstride bytes, 8 weights per k.
 * mode ACCUMULATE adds c's previous values; FINISH applies scale and bias. Only the first
 * `cols` columns of c are written.
 */
INLINE void mk(const int wt, const int mr, const int np, const f32 *a, int lda, const uint8_t *b, int pstride, int kc,
               f32 *c, int ldc, int cols, int mode, f32 scale, const f32 *bias) {
  v128 acc[MR > 4 ? MR : 4][4][2];
  for (int i = 0; i < mr; i++)
    for (int j = 0; j < np; j++) acc[i][j][0] = acc[i][j][1] = wasm_f32x4_splat(0);
  const int step = 8 * plain_bytes(wt);
  for (int p = 0; p < kc; p++) {
    v128 bl[4], bh[4];
    for (int j = 0; j < np; j++) ld8(wt, b + j * pstride + p * step, &bl[j], &bh[j]);
    for (int i = 0; i < mr; i++) {
      v128 av = wasm_v128_load32_splat(a + i * lda + p);
      for (int j = 0; j < np; j++) {
        acc[i][j][0] = wasm_f32x4_add(acc[i][j][0], wasm_f32x4_mul(av, bl[j]));
        acc[i][j][1] = wasm_f32x4_add(acc[i][j][1], wasm_f32x4_mul(av, bh[j]));
      }
    }
  }
  const v128 vs = wasm_f32x4_splat(scale);
  for (int i = 0; i < mr; i++) {
    for (int j = 0; j < np; j++) {
      const int col = j * 8;
      if (col >= cols) break;
      f32 *cp = c + i * ldc + col;
      v128 r0 = acc[i][j][0], r1 = acc[i][j][1];
      if (cols - col >= 8) {
        if (mode & ACCUMULATE) {
          r0 = wasm_f32x4_add(r0, wasm_v128_load(cp));
          r1 = wasm_f32x4_add(r1, wasm_v128_load(cp + 4));
        }
        if (mode & FINISH) {
          r0 = wasm_f32x4_mul(r0, vs);
          r1 = wasm_f32x4_mul(r1, vs);
          if (bias) {
            r0 = wasm_f32x4_add(r0, wasm_v128_load(bias + col));
            r1 = wasm_f32x4_add(r1, wasm_v128_load(bias + col + 4));
          }
        }
        wasm_v128_store(cp, r0);
        wasm_v128_store(cp + 4, r1);
      } else {
        f32 t[8];
        wasm_v128_store(t, r0);
        wasm_v128_store(t + 4, r1);
        for (int q = 0; q < cols - col; q++) {
          f32 v = t[q];
          if (mode & ACCUMULATE) v += cp[q];
          if (mode & FINISH) v = v * scale + (bias ? bias[col + q] : 0.0f);
          cp[q] = v;
        }
      }
    }
  }
}

// Bias pointers must allow reading 8 floats per panel: the host pads bias to a multiple of 8.

// One small function per (weight type, rows, panels): V8's register allocator keeps the
// accumulators in registers only when a function holds a single hot loop.
#define MK_FN(WT, R, P)                                                                                   \
  NOINLINE void mk_##WT##_##R##_##P(const f32 *a, int lda, const uint8_t *b, int pstride, int kc, f32 *c, int ldc, \
                                   int cols, int mode, f32 scale, const f32 *bias) {                        \
    mk(WT, R, P, a, lda, b, pstride, kc, c, ldc, cols, mode, scale, bias);                                  \
  }
#define MK_TYPE(WT) MK_FN(WT, 1, 1) MK_FN(WT, 1, 4) MK_FN(WT, 2, 1) MK_FN(WT, 2, 2) MK_FN(WT, 3, 1) MK_FN(WT, MR, 1)
MK_TYPE(W_F32)
MK_TYPE(W_F16)
MK_TYPE(W_BF16)
MK_TYPE(W_F8E4M3)
MK_TYPE(W_F8E5M2)

#define MK_CASE(WT)                                                                                      \
  case WT:                                                                                               \
    switch (mr) {                                                                                        \
      case 1: (wide ? mk_##WT##_1_4 : mk_##WT##_1_1)(a, lda, b, pstride, kc, c, ldc, cols, mode, scale, bias); break; \
      case 2: (wide ? mk_##WT##_2_2 : mk_##WT##_2_1)(a, lda, b, pstride, kc, c, ldc, cols, mode, scale, bias); break; \
      case 3: mk_##WT##_3_1(a, lda, b, pstride, kc, c, ldc, cols, mode, scale, bias); break;             \
      default: mk_##WT##_##MR##_1(a, lda, b, pstride, kc, c, ldc, cols, mode, scale, bias); break;       \
    }                                                                                                    \
    break;

/** One micro-kernel call of mr rows (≤ MR); rows 1 and 2 take 4 and 2 panels at once when `wide`. */
static void mk_dispatch(int wt, int mr, int wide, const f32 *a, int lda, const uint8_t *b, int pstride, int kc,
                        f32 *c, int ldc, int cols, int mode, f32 scale, const f32 *bias) {
  switch (wt) { MK_CASE(W_F32) MK_CASE(W_F16) MK_CASE(W_BF16) MK_CASE(W_F8E4M3) MK_CASE(W_F8E5M2) }
}

// ---- quantized weights (quant.c) -------------------------------------------------------

int quant_block_elems(int wt);
/** Decodes rows [n0, n0+8) (rows ≥ n are zero), k in [k0, k0+kc), into panel[kc][8] f32. */
void quant_decode_panel(int wt, const uint8_t *w, int n, int k, int n0, int k0, int kc, f32 *panel);
/** GEMV rows [n0, n1) for m ≤ GEMV_MAX_M activation rows, straight from the blocks. */
void quant_gemv(int wt, const uint8_t *w, int k, const f32 *x, int ldx, int m, int n0, int n1, f32 *out, int ldo,
                f32 scale, const f32 *bias);

INLINE int is_quant(int wt) { return wt >= W_Q8_0; }

// ---- drivers ---------------------------------------------------------------------------

/**
 * Rows per GEMM tile. f32 panels are read in place: MC rows keep x's block in L2. Other types
 * are decoded per (tile, k block), so their tiles take as many rows as still leaves about 8
 * tiles per thread: each weight is decoded once when M is not too large.
 */
static int tile_rows(const LinearJob *j) {
  if (j->wtype == W_F32) return MC;
  const int nt = ((j->n + 7) / 8 + NPT - 1) / NPT;
  const int threads = j->threads > 0 ? j->threads : 1;
  int mt = (8 * threads + nt - 1) / nt;
  int mc = (j->m + mt - 1) / mt;
  mc = (mc + MR - 1) / MR * MR;
  return mc < MC ? MC : mc > MC_DECODED_MAX ? MC_DECODED_MAX : mc;
}

static void gemm_tile(LinearJob *j, int tm, int tn, f32 *scratch) {
  const int wt = j->wtype, K = j->k, N = j->n;
  const int mc = tile_rows(j);
  const int m0 = tm * mc, m1 = m0 + mc < j->m ? m0 + mc : j->m;
  const int panels = (N + 7) / 8;
  const int p0 = tn * NPT, p1 = p0 + NPT < panels ? p0 + NPT : panels;
  const f32 *x = (const f32 *)j->x;
  f32 *out = (f32 *)j->out;
  const f32 *bias = j->bias ? (const f32 *)j->bias : 0;
  const int eb = is_quant(wt) ? 4 : plain_bytes(wt);
  for (int k0 = 0; k0 < K; k0 += KC) {
    const int kc = K - k0 < KC ? K - k0 : KC;
    const int mode = (k0 ? ACCUMULATE : 0) | (k0 + kc == K ? FINISH : 0);
    for (int p = p0; p < p1; p++) {
      const uint8_t *b;
      int bwt = wt;
      if (is_quant(wt)) {
        quant_decode_panel(wt, (const uint8_t *)j->w, N, K, p * 8, k0, kc, scratch);
        b = (const uint8_t *)scratch;
        bwt = W_F32;
      } else if (wt != W_F32) {
        // Decode this panel's k block once for all MC rows.
        const uint8_t *src = (const uint8_t *)j->w + ((size_t)p * K + k0) * 8 * eb;
        for (int q = 0; q < kc; q++) {
          v128 lo, hi;
          switch (wt) {
            case W_F16: ld8(W_F16, src + q * 8 * eb, &lo, &hi); break;
            case W_BF16: ld8(W_BF16, src + q * 8 * eb, &lo, &hi); break;
            case W_F8E4M3: ld8(W_F8E4M3, src + q * 8 * eb, &lo, &hi); break;
            default: ld8(W_F8E5M2, src + q * 8 * eb, &lo, &hi); break;
          }
          wasm_v128_store(scratch + q * 8, lo);
          wasm_v128_store(scratch + q * 8 + 4, hi);
        }
        b = (const uint8_t *)scratch;
        bwt = W_F32;
      } else {
        b = (const uint8_t *)j->w + ((size_t)p * K + k0) * 32;
      }
      const int cols = N - p * 8 < 8 ? N - p * 8 : 8;
      for (int i = m0; i < m1; i += MR) {
        const int mr = m1 - i < MR ? m1 - i : MR;
        mk_dispatch(bwt, mr, 0, x + (size_t)i * j->ldx + k0, j->ldx, b, 0, kc, out + (size_t)i * j->ldo + p * 8, j->ldo,
                    cols, mode, j->scale, bias ? bias + p * 8 : 0);
      }
    }
  }
}

#define GEMV_PANELS 8  // panels per GEMV work item (64 outputs)

static void gemv_item(LinearJob *j, int item) {
  const int wt = j->wtype, K = j->k, N = j->n, M = j->m;
  const f32 *x = (const f32 *)j->x;
  f32 *out = (f32 *)j->out;
  const f32 *bias = j->bias ? (const f32 *)j->bias : 0;
  const int panels = (N + 7) / 8;
  const int p0 = item * GEMV_PANELS, p1 = p0 + GEMV_PANELS < panels ? p0 + GEMV_PANELS : panels;
  if (is_quant(wt)) {
    const int n1 = p1 * 8 < N ? p1 * 8 : N;
    quant_gemv(wt, (const uint8_t *)j->w, K, x, j->ldx, M, p0 * 8, n1, out + p0 * 8, j->ldo, j->scale, bias ? bias + p0 * 8 : 0);
    return;
  }
  const int eb = plain_bytes(wt);
  const int pstride = K * 8 * eb;
  const int group = M == 1 ? 4 : M == 2 ? 2 : 1;
  for (int p = p0; p < p1;) {
    const int wide = p + group <= p1 && group > 1;
    const int np = wide ? group : 1;
    const int cols = N - p * 8 < np * 8 ? N - p * 8 : np * 8;
    mk_dispatch(wt, M, wide, x, j->ldx, (const uint8_t *)j->w + (size_t)p * pstride, pstride, K, out + p * 8, j->ldo, cols,
                FINISH, j->scale, bias ? bias + p * 8 : 0);
    p += np;
  }
}

/** Every thread calls this with the same job; it returns when no work is left. */
EXPORT(linear_run) void linear_run(LinearJob *j, int thread) {
  f32 *scratch = (f32 *)(j->scratch + (uint32_t)thread * j->scratch_bytes);
  const int panels = (j->n + 7) / 8;
  if (j->m <= GEMV_MAX_M) {
    const int items = (panels + GEMV_PANELS - 1) / GEMV_PANELS;
    for (int t; (t = take(&j->next)) < items;) gemv_item(j, t);
    return;
  }
  const int mc = tile_rows(j);
  const int mt = (j->m + mc - 1) / mc, nt = (panels + NPT - 1) / NPT;
  for (int t; (t = take(&j->next)) < mt * nt;) gemm_tile(j, t % mt, t / mt, scratch);
}

/** Scratch bytes each thread needs for linear_run. */
EXPORT(linear_scratch_bytes) int linear_scratch_bytes(void) { return KC * 8 * 4; }
