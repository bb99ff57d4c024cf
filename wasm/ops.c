// The CPU device's other ops (norms, softmax, activations, element-wise, attention, im2col):
// one thread entry, ops_run(job, thread), that every thread calls; work items (rows,
// groups, chunks) are taken from the job's atomic counter. Activations are f32.
#include "common.h"

enum {
  OP_RMS_NORM = 1, OP_LAYER_NORM = 2, OP_GROUP_NORM = 3, OP_SOFTMAX = 4, OP_ACTIVATION = 5, OP_GATED = 6,
  OP_BINARY = 7, OP_SCALE = 8, OP_ATTENTION = 9, OP_IM2COL = 10, OP_TRANSPOSE2D = 11, OP_ROPE = 12,
  OP_PERMUTE = 13, OP_COPY_ROWS = 14, OP_UPSAMPLE = 15, OP_MODULATE = 16, OP_GATED_RESIDUAL = 17, OP_EMBEDDING = 18,
};
enum { ACT_GELU = 0, ACT_GELU_TANH = 1, ACT_QUICK_GELU = 2, ACT_SILU = 3 };
enum { BIN_ADD = 0, BIN_SUB = 1, BIN_MUL = 2, BIN_DIV = 3 };

// Job record: i[0] op, i[1] work counter, i[2] items, i[3] scratch base, i[4] scratch bytes per thread, i[8..] the op's parameters.
typedef struct {
  int32_t op, next, items, scratch, scratch_bytes, pad[3];
  int32_t p[56];
} OpJob;

#define P_I(j, n) ((j)->p[n])
#define P_F(j, n) (__builtin_bit_cast(f32, (j)->p[n]))
#define P_PTR(j, n) ((f32 *)(uintptr_t)(uint32_t)(j)->p[n])

// ---- f32x4 math ---------------------------------------------------------------------------

/** e^x, relative error about 1 ulp; 0 below -103, +inf above 88.7. */
INLINE v128 v_exp(v128 x) {
  const v128 hi = wasm_f32x4_splat(88.72283935546875f), lo = wasm_f32x4_splat(-103.0f);
  v128 big = wasm_f32x4_gt(x, hi), tiny = wasm_f32x4_lt(x, lo);
  x = wasm_f32x4_pmin(wasm_f32x4_pmax(x, lo), hi);
  v128 n = wasm_f32x4_nearest(wasm_f32x4_mul(x, wasm_f32x4_splat(1.44269504088896341f)));
  v128 r = wasm_f32x4_sub(x, wasm_f32x4_mul(n, wasm_f32x4_splat(0.693145751953125f)));
  r = wasm_f32x4_sub(r, wasm_f32x4_mul(n, wasm_f32x4_splat(1.428606765330187045e-06f)));
  // e^r, |r| ≤ ln2/2: Taylor to r^7 (truncation < 2e-8 relative).
  v128 p = wasm_f32x4_splat(1.0f / 5040);
  p = wasm_f32x4_add(wasm_f32x4_mul(p, r), wasm_f32x4_splat(1.0f / 720));
  p = wasm_f32x4_add(wasm_f32x4_mul(p, r), wasm_f32x4_splat(1.0f / 120));
  p = wasm_f32x4_add(wasm_f32x4_mul(p, r), wasm_f32x4_splat(1.0f / 24));
  p = wasm_f32x4_add(wasm_f32x4_mul(p, r), wasm_f32x4_splat(1.0f / 6));
  p = wasm_f32x4_add(wasm_f32x4_mul(p, r), wasm_f32x4_splat(0.5f));
  p = wasm_f32x4_add(wasm_f32x4_mul(p, r), wasm_f32x4_splat(1.0f));
  p = wasm_f32x4_add(wasm_f32x4_mul(p, r), wasm_f32x4_splat(1.0f));
  // × 2^n in two steps (n down to -149 reaches the subnormals).
  v128 ni = wasm_i32x4_trunc_sat_f32x4(n);
  v128 n1 = wasm_i32x4_shr(ni, 1), n2 = wasm_i32x4_sub(ni, n1);
  v128 s1 = wasm_i32x4_shl(wasm_i32x4_add(n1, wasm_i32x4_splat(127)), 23);
  v128 s2 = wasm_i32x4_shl(wasm_i32x4_add(n2, wasm_i32x4_splat(127)), 23);
  p = wasm_f32x4_mul(wasm_f32x4_mul(p, s1), s2);
  p = wasm_v128_andnot(p, tiny);
  return wasm_v128_or(wasm_v128_andnot(p, big), wasm_v128_and(big, wasm_f32x4_splat(__builtin_inff())));
}

/** erfc(z), fractional error about 1.2e-7 (Chebyshev fit, Numerical Recipes' erfcc). */
INLINE v128 v_erfc(v128 z) {
  v128 a = wasm_f32x4_abs(z);
  v128 t = wasm_f32x4_div(wasm_f32x4_splat(1.0f), wasm_f32x4_add(wasm_f32x4_splat(1.0f), wasm_f32x4_mul(wasm_f32x4_splat(0.5f), a)));
  static const f32 c[] = {0.17087277f, -0.82215223f, 1.48851587f, -1.13520398f, 0.27886807f, -0.18628806f, 0.09678418f, 0.37409196f, 1.00002368f, -1.26551223f};
  v128 p = wasm_f32x4_splat(c[0]);
  for (int i = 1; i < 10; i++) p = wasm_f32x4_add(wasm_f32x4_mul(p, t), wasm_f32x4_splat(c[i]));
  // exp(-a² + p), with a² split into an exact high part so the exponent keeps its precision.
  v128 ah = wasm_v128_and(a, wasm_i32x4_splat((int32_t)0xfffff000u));
  v128 al = wasm_f32x4_sub(a, ah);
  v128 sq_hi = wasm_f32x4_mul(ah, ah);
  v128 sq_lo = wasm_f32x4_mul(al, wasm_f32x4_add(a, ah));
  v128 e = wasm_f32x4_mul(v_exp(wasm_f32x4_neg(sq_hi)), v_exp(wasm_f32x4_sub(p, sq_lo)));
  v128 ans = wasm_f32x4_mul(t, e);
  v128 neg = wasm_f32x4_lt(z, wasm_f32x4_splat(0.0f));
  return wasm_v128_bitselect(wasm_f32x4_sub(wasm_f32x4_splat(2.0f), ans), ans, neg);
}

INLINE v128 v_sigmoid_mul(v128 x, v128 k) {  // x / (1 + e^(−k·x))
  return wasm_f32x4_div(x, wasm_f32x4_add(wasm_f32x4_splat(1.0f), v_exp(wasm_f32x4_neg(wasm_f32x4_mul(k, x)))));
}

INLINE v128 v_act(const int kind, v128 x) {
  switch (kind) {
    case ACT_GELU:  // 0.5·x·erfc(−x/√2)
      return wasm_f32x4_mul(wasm_f32x4_mul(wasm_f32x4_splat(0.5f), x), v_erfc(wasm_f32x4_mul(x, wasm_f32x4_splat(-0.70710678118654752f))));
    case ACT_GELU_TANH: {  // 0.5·x·(1 + tanh(u)) = x·e^(2u)/(e^(2u)+1) = x / (1 + e^(−2u))
      v128 x3 = wasm_f32x4_mul(wasm_f32x4_mul(x, x), x);
      v128 u = wasm_f32x4_mul(wasm_f32x4_splat(0.7978845608028654f), wasm_f32x4_add(x, wasm_f32x4_mul(wasm_f32x4_splat(0.044715f), x3)));
      v128 e = v_exp(wasm_f32x4_mul(wasm_f32x4_splat(-2.0f), u));
      return wasm_f32x4_div(x, wasm_f32x4_add(wasm_f32x4_splat(1.0f), e));
    }
    case ACT_QUICK_GELU: return v_sigmoid_mul(x, wasm_f32x4_splat(1.702f));
    default: return v_sigmoid_mul(x, wasm_f32x4_splat(1.0f));
  }
}

/** Loads up to 4 floats (the rest 0) / stores the first `n` lanes. */
INLINE v128 load_part(const f32 *p, int n) {
  f32 t[4] = {0, 0, 0, 0};
  for (int i = 0; i < n; i++) t[i] = p[i];
  return wasm_v128_load(t);
}
INLINE void store_part(f32 *p, v128 v, int n) {
  f32 t[4];
  wasm_v128_store(t, v);
  for (int i = 0; i < n; i++) p[i] = t[i];
}

// ---- norms ----------------------------------------------------------------------------------

static void rms_norm_row(const f32 *x, const f32 *w, f32 *y, int cols, f32 eps) {
  v128 s0 = wasm_f32x4_splat(0), s1 = s0;
  int c = 0;
  for (; c + 8 <= cols; c += 8) {
    v128 a = wasm_v128_load(x + c), b = wasm_v128_load(x + c + 4);
    s0 = wasm_f32x4_add(s0, wasm_f32x4_mul(a, a));
    s1 = wasm_f32x4_add(s1, wasm_f32x4_mul(b, b));
  }
  f32 sum = hsum(wasm_f32x4_add(s0, s1));
  for (; c < cols; c++) sum += x[c] * x[c];
  const f32 r = 1.0f / __builtin_sqrtf(sum / (f32)cols + eps);
  const v128 vr = wasm_f32x4_splat(r);
  for (c = 0; c + 4 <= cols; c += 4) {
    v128 v = wasm_f32x4_mul(wasm_v128_load(x + c), vr);
    if (w) v = wasm_f32x4_mul(v, wasm_v128_load(w + c));
    wasm_v128_store(y + c, v);
  }
  for (; c < cols; c++) y[c] = x[c] * r * (w ? w[c] : 1.0f);
}

/** Mean and 1/sqrt(biased variance + eps) of n values, two passes. */
// Two passes (mean, then squared deviations). Each 1024-value block is summed in f32 lanes and
// its total added in f64: one f32 running sum over a GroupNorm group of 4 Mi values (a 1024²
// image) rounds every addition the same way and drifts by whole units at a mean of 1e3.
#define MOMENT_BLOCK 1024
static void moments(const f32 *x, int n, f32 eps, f32 *mean, f32 *rstd) {
  double sum = 0;
  for (int c0 = 0; c0 < n; c0 += MOMENT_BLOCK) {
    const int end = c0 + MOMENT_BLOCK < n ? c0 + MOMENT_BLOCK : n;
    v128 s = wasm_f32x4_splat(0);
    int c = c0;
    for (; c + 4 <= end; c += 4) s = wasm_f32x4_add(s, wasm_v128_load(x + c));
    f32 block = hsum(s);
    for (; c < end; c++) block += x[c];
    sum += block;
  }
  const f32 m = (f32)(sum / n);
  const v128 vm = wasm_f32x4_splat(m);
  double sq = 0;
  for (int c0 = 0; c0 < n; c0 += MOMENT_BLOCK) {
    const int end = c0 + MOMENT_BLOCK < n ? c0 + MOMENT_BLOCK : n;
    v128 s = wasm_f32x4_splat(0);
    int c = c0;
    for (; c + 4 <= end; c += 4) {
      v128 d = wasm_f32x4_sub(wasm_v128_load(x + c), vm);
      s = wasm_f32x4_add(s, wasm_f32x4_mul(d, d));
    }
    f32 block = hsum(s);
    for (; c < end; c++) block += (x[c] - m) * (x[c] - m);
    sq += block;
  }
  *mean = m;
  *rstd = 1.0f / __builtin_sqrtf((f32)(sq / n) + eps);
}

// layer norm: p0 x, p1 w, p2 b, p3 out, p4 cols, p5 eps, p6 shift, p7 scale (modulation, 0 = none),
// p8 shift stride, p9 scale stride, p10 rows per batch
static void layer_norm_row(OpJob *j, int row) {
  const int cols = P_I(j, 4);
  const f32 *x = P_PTR(j, 0) + (size_t)row * cols;
  f32 *y = P_PTR(j, 3) + (size_t)row * cols;
  const f32 *w = P_PTR(j, 1), *b = P_PTR(j, 2);
  const f32 *shift = P_PTR(j, 6), *scale = P_PTR(j, 7);
  f32 mean, r;
  moments(x, cols, P_F(j, 5), &mean, &r);
  if (shift) {
    const int batch = row / P_I(j, 10);
    shift += (size_t)batch * P_I(j, 8);
    scale += (size_t)batch * P_I(j, 9);
  }
  for (int c = 0; c < cols; c++) {
    f32 v = (x[c] - mean) * r;
    if (w) v *= w[c];
    if (b) v += b[c];
    if (shift) v = v * (1.0f + scale[c]) + shift[c];
    y[c] = v;
  }
}

// group norm: p0 x, p1 w, p2 b, p3 out, p4 channels, p5 groups, p6 spatial, p7 eps, p8 silu; item = n·groups + g
static void group_norm_item(OpJob *j, int item) {
  const int channels = P_I(j, 4), groups = P_I(j, 5), spatial = P_I(j, 6), silu = P_I(j, 8);
  const int n = item / groups, g = item % groups, per = channels / groups;
  const size_t base = ((size_t)n * channels + (size_t)g * per) * spatial;
  const f32 *x = P_PTR(j, 0) + base;
  f32 *y = P_PTR(j, 3) + base;
  const f32 *w = P_PTR(j, 1), *b = P_PTR(j, 2);
  f32 mean, r;
  moments(x, per * spatial, P_F(j, 7), &mean, &r);
  for (int ci = 0; ci < per; ci++) {
    const int c = g * per + ci;
    const f32 o = b ? b[c] : 0.0f;
    const f32 *xs = x + (size_t)ci * spatial;
    f32 *ys = y + (size_t)ci * spatial;
    int s = 0;
    for (; s < spatial; s += 4) {
      const int left = spatial - s < 4 ? spatial - s : 4;
      v128 v = left == 4 ? wasm_v128_load(xs + s) : load_part(xs + s, left);
      // (x − mean)·r·w + b, in the reference's order
      v = wasm_f32x4_add(wasm_f32x4_mul(wasm_f32x4_mul(wasm_f32x4_sub(v, wasm_f32x4_splat(mean)), wasm_f32x4_splat(r)),
                                        wasm_f32x4_splat(w ? w[c] : 1.0f)), wasm_f32x4_splat(o));
      if (silu) v = v_act(ACT_SILU, v);
      if (left == 4) wasm_v128_store(ys + s, v);
      else store_part(ys + s, v, left);
    }
  }
}

// ---- softmax --------------------------------------------------------------------------------

// p0 x, p1 out, p2 n, p3 scale
static void softmax_row(OpJob *j, int row) {
  const int n = P_I(j, 2);
  const f32 scale = P_F(j, 3);
  const f32 *x = P_PTR(j, 0) + (size_t)row * n;
  f32 *y = P_PTR(j, 1) + (size_t)row * n;
  f32 max = -__builtin_inff();
  for (int i = 0; i < n; i++) {
    const f32 v = x[i] * scale;
    if (v > max) max = v;
  }
  if (max == -__builtin_inff()) {
    for (int i = 0; i < n; i++) y[i] = 0;
    return;
  }
  const v128 vs = wasm_f32x4_splat(scale), vm = wasm_f32x4_splat(max);
  v128 acc = wasm_f32x4_splat(0);
  int i = 0;
  for (; i + 4 <= n; i += 4) {
    v128 e = v_exp(wasm_f32x4_sub(wasm_f32x4_mul(wasm_v128_load(x + i), vs), vm));
    wasm_v128_store(y + i, e);
    acc = wasm_f32x4_add(acc, e);
  }
  f32 sum = hsum(acc);
  if (i < n) {
    v128 e = v_exp(wasm_f32x4_sub(wasm_f32x4_mul(load_part(x + i, n - i), vs), vm));
    f32 t[4];
    wasm_v128_store(t, e);
    for (int q = 0; q < n - i; q++) {
      y[i + q] = t[q];
      sum += t[q];
    }
  }
  const v128 inv = wasm_f32x4_splat(sum);
  for (i = 0; i + 4 <= n; i += 4) wasm_v128_store(y + i, wasm_f32x4_div(wasm_v128_load(y + i), inv));
  for (; i < n; i++) y[i] /= sum;
}

// ---- element-wise ---------------------------------------------------------------------------

#define CHUNK 4096

// activation: p0 kind, p1 x, p2 out, p3 count
NOINLINE void act_chunk(const int kind, const f32 *x, f32 *y, int count) {
  int i = 0;
  switch (kind) {
#define ACT_LOOP(K)                                                               \
  case K:                                                                         \
    for (; i + 4 <= count; i += 4) wasm_v128_store(y + i, v_act(K, wasm_v128_load(x + i))); \
    if (i < count) store_part(y + i, v_act(K, load_part(x + i, count - i)), count - i); \
    break;
    ACT_LOOP(ACT_GELU)
    ACT_LOOP(ACT_GELU_TANH)
    ACT_LOOP(ACT_QUICK_GELU)
    ACT_LOOP(ACT_SILU)
  }
}

// gated: p0 kind, p1 gate, p2 gate row stride, p3 up, p4 up row stride, p5 out, p6 cols (out row stride), p7 total; item = row
NOINLINE void gated_row(const int kind, const f32 *g, const f32 *u, f32 *y, int cols) {
  int i = 0;
  switch (kind) {
#define GATED_LOOP(K)                                                                                          \
  case K:                                                                                                      \
    for (; i + 4 <= cols; i += 4) wasm_v128_store(y + i, wasm_f32x4_mul(v_act(K, wasm_v128_load(g + i)), wasm_v128_load(u + i))); \
    if (i < cols) store_part(y + i, wasm_f32x4_mul(v_act(K, load_part(g + i, cols - i)), load_part(u + i, cols - i)), cols - i); \
    break;
    GATED_LOOP(ACT_GELU)
    GATED_LOOP(ACT_GELU_TANH)
    GATED_LOOP(ACT_QUICK_GELU)
    GATED_LOOP(ACT_SILU)
  }
}

// binary: p0 op, p1 a, p2 b, p3 out, p4 rank (≤ 6, last dim innermost), p5..p10 out dims, p11..p16 a strides,
// p17..p22 b strides (0 where broadcast); item = one row of the last dim
static void binary_row(OpJob *j, int row) {
  const int op = P_I(j, 0), rank = P_I(j, 4);
  const int last = P_I(j, 5 + rank - 1);
  size_t ao = 0, bo = 0;
  int r = row;
  for (int d = rank - 2; d >= 0; d--) {
    const int dim = P_I(j, 5 + d);
    const int idx = r % dim;
    r /= dim;
    ao += (size_t)idx * P_I(j, 11 + d);
    bo += (size_t)idx * P_I(j, 17 + d);
  }
  const f32 *a = P_PTR(j, 1) + ao, *b = P_PTR(j, 2) + bo;
  const int sa = P_I(j, 11 + rank - 1), sb = P_I(j, 17 + rank - 1);
  f32 *y = P_PTR(j, 3) + (size_t)row * last;
  for (int i = 0; i < last; i++) {
    const f32 x = a[(size_t)i * sa], z = b[(size_t)i * sb];
    y[i] = op == BIN_ADD ? x + z : op == BIN_SUB ? x - z : op == BIN_MUL ? x * z : x / z;
  }
}

// scale: p0 x, p1 out, p2 count, p3 s, p4 b; item = chunk
static void scale_chunk(OpJob *j, int item) {
  const int count = P_I(j, 2);
  const int i0 = item * CHUNK, i1 = i0 + CHUNK < count ? i0 + CHUNK : count;
  const f32 *x = P_PTR(j, 0);
  f32 *y = P_PTR(j, 1);
  const f32 s = P_F(j, 3), b = P_F(j, 4);
  for (int i = i0; i < i1; i++) y[i] = x[i] * s + b;
}

// ---- attention ------------------------------------------------------------------------------

// p0 q, p1 k, p2 v, p3 out, p4 B, p5 Lq, p6 Lk, p7 H, p8 Hkv, p9 D, p10 scale, p11 causal, p12 causal offset,
// p13 mask (0 = none), p14..p17 mask strides (b, h, i, j), p18 key padding (f32 [B, Lk], 0 masks; 0 = none),
// p19 relative bias ([H, Lq + Lk − 1]; 0 = none). Item = (b, h, i). Scratch: Lk scores.
#define MASKED_BELOW (-1e30f)
static void attention_row(OpJob *j, int item, f32 *scores) {
  const int Lq = P_I(j, 5), Lk = P_I(j, 6), H = P_I(j, 7), Hkv = P_I(j, 8), D = P_I(j, 9);
  const int i = item % Lq, h = (item / Lq) % H, b = item / (Lq * H);
  const int kh = h / (H / Hkv);
  const f32 scale = P_F(j, 10);
  const int causal = P_I(j, 11), offset = P_I(j, 12);
  const f32 *mask = P_PTR(j, 13), *pad = P_PTR(j, 18), *rel = P_PTR(j, 19);
  const f32 *q = P_PTR(j, 0) + ((size_t)(b * Lq + i) * H + h) * D;
  const f32 *k = P_PTR(j, 1), *v = P_PTR(j, 2);
  f32 *o = P_PTR(j, 3) + ((size_t)(b * Lq + i) * H + h) * D;
  f32 max = -__builtin_inff();
  int hi = Lk;
  if (causal && i + offset + 1 < hi) hi = i + offset + 1;
  for (int t = 0; t < Lk; t++) {
    f32 s = -__builtin_inff();
    if (t < hi && !(pad && pad[(size_t)b * Lk + t] == 0.0f)) {
      const f32 *kr = k + ((size_t)(b * Lk + t) * Hkv + kh) * D;
      v128 acc = wasm_f32x4_splat(0);
      int d = 0;
      for (; d + 4 <= D; d += 4) acc = wasm_f32x4_add(acc, wasm_f32x4_mul(wasm_v128_load(q + d), wasm_v128_load(kr + d)));
      f32 dot = hsum(acc);
      for (; d < D; d++) dot += q[d] * kr[d];
      s = dot * scale;
      if (mask) s += mask[(size_t)b * P_I(j, 14) + (size_t)h * P_I(j, 15) + (size_t)i * P_I(j, 16) + (size_t)t * P_I(j, 17)];
      if (rel) s += rel[(size_t)h * (Lq + Lk - 1) + t - i + Lq - 1];
      if (!(s >= MASKED_BELOW)) s = -__builtin_inff();
    }
    scores[t] = s;
    if (s > max) max = s;
  }
  for (int d = 0; d < D; d++) o[d] = 0;
  if (max == -__builtin_inff()) return;
  f32 sum = 0;
  int t = 0;
  const v128 vm = wasm_f32x4_splat(max);
  for (; t + 4 <= Lk; t += 4) {
    v128 e = v_exp(wasm_f32x4_sub(wasm_v128_load(scores + t), vm));
    wasm_v128_store(scores + t, e);
    sum += hsum(e);
  }
  for (; t < Lk; t++) {
    f32 e[4];
    wasm_v128_store(e, v_exp(wasm_f32x4_splat(scores[t] - max)));
    scores[t] = e[0];
    sum += e[0];
  }
  for (t = 0; t < Lk; t++) {
    const f32 p = scores[t];
    if (p == 0.0f) continue;
    const f32 *vr = v + ((size_t)(b * Lk + t) * Hkv + kh) * D;
    const v128 vp = wasm_f32x4_splat(p);
    int d = 0;
    for (; d + 4 <= D; d += 4) wasm_v128_store(o + d, wasm_f32x4_add(wasm_v128_load(o + d), wasm_f32x4_mul(vp, wasm_v128_load(vr + d))));
    for (; d < D; d++) o[d] += p * vr[d];
  }
  const f32 inv = 1.0f / sum;
  for (int d = 0; d < D; d++) o[d] *= inv;
}

// ---- conv helpers ---------------------------------------------------------------------------

// im2col for NCHW conv: p0 x, p1 cols out [pixels, Cin·kh·kw], p2 N, p3 Cin, p4 H, p5 W, p6 kh, p7 kw,
// p8 stride h, p9 stride w, p10 pad top, p11 pad left, p12 dil h, p13 dil w, p14 Hout, p15 Wout, p16 first pixel
// (over N·Hout·Wout). Item = output pixel of the chunk.
static void im2col_row(OpJob *j, int item) {
  const int pix = item + P_I(j, 16);
  const int Cin = P_I(j, 3), H = P_I(j, 4), W = P_I(j, 5), kh = P_I(j, 6), kw = P_I(j, 7);
  const int Hout = P_I(j, 14), Wout = P_I(j, 15);
  const int n = pix / (Hout * Wout), oy = (pix / Wout) % Hout, ox = pix % Wout;
  const f32 *x = P_PTR(j, 0) + (size_t)n * Cin * H * W;
  f32 *row = P_PTR(j, 1) + (size_t)item * Cin * kh * kw;
  for (int c = 0; c < Cin; c++)
    for (int ky = 0; ky < kh; ky++) {
      const int iy = oy * P_I(j, 8) + ky * P_I(j, 12) - P_I(j, 10);
      for (int kx = 0; kx < kw; kx++) {
        const int ix = ox * P_I(j, 9) + kx * P_I(j, 13) - P_I(j, 11);
        *row++ = (iy >= 0 && iy < H && ix >= 0 && ix < W) ? x[((size_t)c * H + iy) * W + ix] : 0.0f;
      }
    }
}

// [rows, cols] → out[c·ld + r] (ld ≥ rows): p0 in, p1 out, p2 rows, p3 cols, p4 ld; item = block of 8 rows
static void transpose_item(OpJob *j, int item) {
  const int rows = P_I(j, 2), cols = P_I(j, 3), ld = P_I(j, 4);
  const int r0 = item * 8, r1 = r0 + 8 < rows ? r0 + 8 : rows;
  const f32 *in = P_PTR(j, 0);
  f32 *out = P_PTR(j, 1);
  for (int c = 0; c < cols; c++)
    for (int r = r0; r < r1; r++) out[(size_t)c * ld + r] = in[(size_t)r * cols + c];
}

// ---- rope -----------------------------------------------------------------------------------

// p0 x (in place allowed), p1 out, p2 cos [B·L or L][rot/2], p3 sin, p4 B, p5 L, p6 H, p7 D, p8 rot, p9 interleaved,
// p10 table rows per batch (0: shared by every batch). Item = (b, l).
static void rope_item(OpJob *j, int item) {
  const int L = P_I(j, 5), H = P_I(j, 6), D = P_I(j, 7), rot = P_I(j, 8), inter = P_I(j, 9), per = P_I(j, 10);
  const int b = item / L, l = item % L, half = rot / 2;
  const size_t trow = per ? (size_t)b * L + l : (size_t)l;
  const f32 *cs = P_PTR(j, 2) + trow * half, *sn = P_PTR(j, 3) + trow * half;
  const f32 *x = P_PTR(j, 0) + (size_t)item * H * D;
  f32 *y = P_PTR(j, 1) + (size_t)item * H * D;
  for (int h = 0; h < H; h++) {
    const f32 *xh = x + (size_t)h * D;
    f32 *yh = y + (size_t)h * D;
    for (int i = 0; i < half; i++) {
      const int a = inter ? 2 * i : i, c = inter ? 2 * i + 1 : i + half;
      const f32 x0 = xh[a], x1 = xh[c];
      yh[a] = x0 * cs[i] - x1 * sn[i];
      yh[c] = x1 * cs[i] + x0 * sn[i];
    }
    if (y != x)
      for (int d = rot; d < D; d++) yh[d] = xh[d];
  }
}

// ---- data movement ----------------------------------------------------------------------------

// permute: p0 in, p1 out, p2 rank (≤ 6), p3..p8 out dims, p9..p14 the input stride of each out dim; item = out row
static void permute_row(OpJob *j, int row) {
  const int rank = P_I(j, 2);
  const int last = P_I(j, 3 + rank - 1);
  size_t src = 0;
  int r = row;
  for (int d = rank - 2; d >= 0; d--) {
    const int dim = P_I(j, 3 + d);
    src += (size_t)(r % dim) * P_I(j, 9 + d);
    r /= dim;
  }
  const f32 *in = P_PTR(j, 0) + src;
  const int s = P_I(j, 9 + rank - 1);
  f32 *out = P_PTR(j, 1) + (size_t)row * last;
  for (int i = 0; i < last; i++) out[i] = in[(size_t)i * s];
}

// copy rows: p0 src, p1 dst, p2 len, p3 src row stride, p4 dst row stride (floats); item = row
static void copy_row(OpJob *j, int row) {
  const f32 *src = P_PTR(j, 0) + (size_t)row * P_I(j, 3);
  f32 *dst = P_PTR(j, 1) + (size_t)row * P_I(j, 4);
  __builtin_memmove(dst, src, (size_t)P_I(j, 2) * 4);
}

// nearest upsampling of planes [P, h, w] by (fy, fx): p0 in, p1 out, p2 h, p3 w, p4 fy, p5 fx; item = out row (plane·h·fy + y)
static void upsample_row(OpJob *j, int row) {
  const int h = P_I(j, 2), w = P_I(j, 3), fy = P_I(j, 4), fx = P_I(j, 5);
  const int oh = h * fy, plane = row / oh, y = row % oh;
  const f32 *in = P_PTR(j, 0) + ((size_t)plane * h + y / fy) * w;
  f32 *out = P_PTR(j, 1) + (size_t)row * w * fx;
  for (int x = 0; x < w; x++)
    for (int q = 0; q < fx; q++) out[x * fx + q] = in[x];
}

// AdaLN: p0 x, p1 out, p2 cols, p3 rows per batch, p4 shift, p5 shift stride, p6 scale, p7 scale stride; item = row
static void modulate_row(OpJob *j, int row) {
  const int cols = P_I(j, 2), b = row / P_I(j, 3);
  const f32 *x = P_PTR(j, 0) + (size_t)row * cols;
  f32 *y = P_PTR(j, 1) + (size_t)row * cols;
  const f32 *shift = P_PTR(j, 4) + (size_t)b * P_I(j, 5), *scale = P_PTR(j, 6) + (size_t)b * P_I(j, 7);
  for (int c = 0; c < cols; c++) y[c] = x[c] * (1.0f + scale[c]) + shift[c];
}

// x + gate[b] · y: p0 x, p1 y, p2 out, p3 cols, p4 rows per batch, p5 gate, p6 gate stride; item = row
static void gated_residual_row(OpJob *j, int row) {
  const int cols = P_I(j, 3), b = row / P_I(j, 4);
  const f32 *x = P_PTR(j, 0) + (size_t)row * cols, *y = P_PTR(j, 1) + (size_t)row * cols;
  const f32 *g = P_PTR(j, 5) + (size_t)b * P_I(j, 6);
  f32 *o = P_PTR(j, 2) + (size_t)row * cols;
  for (int c = 0; c < cols; c++) o[c] = x[c] + g[c] * y[c];
}

void quant_decode_row(int wt, const uint8_t *w, int k, int row, f32 *out);

// embedding: p0 ids (i32), p1 table (a resident weight [n, k]), p2 weight type, p3 n, p4 k, p5 out; item = token.
// Ids outside [0, n) are skipped (the host zero-fills out; a split table runs once per part).
static void embedding_row(OpJob *j, int t) {
  const int id = ((const int32_t *)(uintptr_t)(uint32_t)P_I(j, 0))[t];
  const int wt = P_I(j, 2), n = P_I(j, 3), k = P_I(j, 4);
  if (id < 0 || id >= n) return;
  const uint8_t *w = (const uint8_t *)(uintptr_t)(uint32_t)P_I(j, 1);
  f32 *out = P_PTR(j, 5) + (size_t)t * k;
  if (wt >= W_Q8_0) {
    quant_decode_row(wt, w, k, id, out);
    return;
  }
  // panels of 8 rows: element (id, c) at ((id / 8)·k + c)·8 + id % 8
  const size_t base = (size_t)(id / 8) * k * 8 + (id % 8);
  for (int c = 0; c < k; c++) {
    const size_t e = base + (size_t)c * 8;
    switch (wt) {
      case W_F32: out[c] = ((const f32 *)w)[e]; break;
      case W_F16: out[c] = f16_to_f32(((const uint16_t *)w)[e]); break;
      case W_BF16: out[c] = bits_f32((uint32_t)((const uint16_t *)w)[e] << 16); break;
      case W_F8E4M3: out[c] = wasm_f32x4_extract_lane(e4m3x4_to_f32(wasm_i32x4_splat(w[e])), 0); break;
      default: out[c] = f16_to_f32((uint32_t)w[e] << 8); break;
    }
  }
}

// ---- the entry --------------------------------------------------------------------------------

EXPORT(ops_run) void ops_run(OpJob *j, int thread) {
  f32 *scratch = (f32 *)(uintptr_t)((uint32_t)j->scratch + (uint32_t)thread * (uint32_t)j->scratch_bytes);
  const int items = j->items;
  for (int t; (t = take(&j->next)) < items;) {
    switch (j->op) {
      case OP_RMS_NORM: {  // p0 x, p1 w, p2 out, p3 cols, p4 eps
        const int cols = P_I(j, 3);
        rms_norm_row(P_PTR(j, 0) + (size_t)t * cols, P_PTR(j, 1), P_PTR(j, 2) + (size_t)t * cols, cols, P_F(j, 4));
        break;
      }
      case OP_LAYER_NORM: layer_norm_row(j, t); break;
      case OP_GROUP_NORM: group_norm_item(j, t); break;
      case OP_SOFTMAX: softmax_row(j, t); break;
      case OP_ACTIVATION: {
        const int count = P_I(j, 3), i0 = t * CHUNK;
        act_chunk(P_I(j, 0), P_PTR(j, 1) + i0, P_PTR(j, 2) + i0, count - i0 < CHUNK ? count - i0 : CHUNK);
        break;
      }
      case OP_GATED: {  // p7: total count when the last row is short (0: rows × cols exactly)
        const int cols = P_I(j, 6), total = P_I(j, 7);
        const int len = total && total - t * cols < cols ? total - t * cols : cols;
        gated_row(P_I(j, 0), P_PTR(j, 1) + (size_t)t * P_I(j, 2), P_PTR(j, 3) + (size_t)t * P_I(j, 4), P_PTR(j, 5) + (size_t)t * cols, len);
        break;
      }
      case OP_BINARY: binary_row(j, t); break;
      case OP_SCALE: scale_chunk(j, t); break;
      case OP_ATTENTION: attention_row(j, t, scratch); break;
      case OP_IM2COL: im2col_row(j, t); break;
      case OP_TRANSPOSE2D: transpose_item(j, t); break;
      case OP_ROPE: rope_item(j, t); break;
      case OP_PERMUTE: permute_row(j, t); break;
      case OP_COPY_ROWS: copy_row(j, t); break;
      case OP_UPSAMPLE: upsample_row(j, t); break;
      case OP_MODULATE: modulate_row(j, t); break;
      case OP_GATED_RESIDUAL: gated_residual_row(j, t); break;
      case OP_EMBEDDING: embedding_row(j, t); break;
    }
  }
}
