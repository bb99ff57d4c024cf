// Flash attention on tensor cores (Dawn's chromium_experimental_subgroup_matrix): f16 16×16
// left/right matrices, f32 results, subgroups of 32. A workgroup of 4 subgroups owns 64 query
// rows (16 each) of one (batch, head); per tile of 32 keys each subgroup computes its 16×32
// scores S = Q·Kᵀ with matrix products (f32 accumulation: no f16 overflow, whatever the scores),
// the softmax runs on S in workgroup memory in f32, and O += P·V accumulates in f32 result
// matrices that stay in registers.
//
// Matrices live in named variables (q0..q7, o0..o7), never in arrays: arrays of subgroup
// matrices indexed in loops computed garbage on an H100 (Dawn, Vulkan). Head-dim blocks past
// head_dim / 16 are skipped by uniform branches. On that H100 (bench/results/attention.json),
// L=4096, H=32, D=128: direct loads with 32-key tiles 20.7 TFLOP/s, 64-key tiles 13.5, staged 16.2.
//
// Online softmax with lazy rescaling: a row keeps the max it last rescaled to (m_used) and its
// probabilities exp(s − m_used) stay ≤ e^TAU; only when some row's max grows past m_used + TAU
// does the whole workgroup rescale its O matrices (a round trip through workgroup memory).
//
// Needs head_dim % 16 == 0 and head_dim ≤ 128, q/k/v offsets and strides that are multiples
// of 4 (staged: read as vec4<f16>) or 8 (direct), no split bindings (ops/attention.ts checks).
// Defines: NEW_SYNTAX (bool): subgroupMatrixLoad<T, row_major>(p, offset, stride) (current Dawn)
// or the older subgroupMatrixLoad<T>(p, offset, col_major, stride). DIRECT (bool): Q, K and V
// matrices load straight from the storage buffers (rows past the end read neighbouring data,
// which the masks discard; ops/attention.ts takes it only where no tile reads past a buffer's
// end, since Dawn clamps such a load as a whole), else K and V tiles are staged in workgroup
// memory first. BC (u32): keys per tile, 32, or 64 with DIRECT.
enable f16;
enable subgroups;
enable chromium_experimental_subgroup_matrix;
// Matrix offsets depend on the subgroup (invocation index / 32): uniform within each subgroup,
// which is what the operations need, but not workgroup-uniform as Tint's analysis asks.
diagnostic(off, chromium.subgroup_matrix_uniformity);

alias LM = subgroup_matrix_left<f16, 16, 16>;
alias RM = subgroup_matrix_right<f16, 16, 16>;
alias AM = subgroup_matrix_result<f32, 16, 16>;

struct Params {
  lq: u32, lk: u32, heads: u32, head_dim: u32,
  group: u32, h0: u32, kvh0: u32, batches: u32,
  q_tiles: u32, slices: u32, q0: u32, k0: u32,
  q_base: u32, q_rs: u32, q_bs: u32,
  k_base: u32, k_rs: u32, k_bs: u32,
  v_base: u32, v_rs: u32, v_bs: u32,
  o_base: u32, o_rs: u32, o_bs: u32,
  m_base: u32, m_hs: u32, m_qs: u32, m_bs: u32,
  kp_base: u32, kp_bs: u32, rb_base: i32, rb_hs: u32,
  causal_offset: i32, scale: f32, flags: u32, pad0: u32,
}

#if ${DIRECT}
@group(0) @binding(0) var<storage, read> q: array<f16>;
@group(0) @binding(1) var<storage, read> k: array<f16>;
@group(0) @binding(2) var<storage, read> v: array<f16>;
#else
@group(0) @binding(0) var<storage, read> q: array<vec4<f16>>;
@group(0) @binding(1) var<storage, read> k: array<vec4<f16>>;
@group(0) @binding(2) var<storage, read> v: array<vec4<f16>>;
#endif
@group(0) @binding(3) var<storage, read_write> out: array<f16>;
@group(0) @binding(4) var<storage, read> mask: array<f32>;
@group(0) @binding(5) var<storage, read> kpad: array<u32>;
@group(0) @binding(6) var<storage, read> rbias: array<f32>;
@group(0) @binding(7) var<uniform> p: Params;

const BR = 64u;       // query rows per workgroup (16 per subgroup)
const BC = ${BC}u;    // keys per tile
const HALF = BC / 2u; // scores per invocation per tile
const WG = 128u;
const SP = BC + 4u;   // row pitch (f32) of each subgroup's 16×BC score block
const PP = BC + 8u;   // row pitch (f16) of each subgroup's 16×BC probability block
const TAU = 8.0;      // lazy rescaling threshold (natural log units): p ≤ e^8 ≈ 2981, f16-safe

const CAUSAL = 1u;
const MASK = 2u;
const KEY_PADDING = 4u;
const REL_BIAS = 8u;

const MASKED = -3.0e38;
const MASKED_BELOW = -1.0e30;

#if ${DIRECT}
#else
// K tile at [0, 32·KP), V tile at [32·KP, 64·KP), KP = head_dim + 8; the Q tile (64 rows) before the loop.
var<workgroup> kv_sh: array<f16, 8704>;
#endif
var<workgroup> s_sh: array<f32, 64u * SP>;   // 4 subgroups × 16 rows × SP
var<workgroup> p_sh: array<f16, 64u * PP>;
var<workgroup> need_row: array<u32, 64>;
var<workgroup> need: u32;

fn score(dot: f32, b: u32, h: u32, i: u32, j: u32) -> f32 {
  if (i >= p.lq || j >= p.lk) {
    return MASKED;
  }
  if ((p.flags & CAUSAL) != 0u && i32(p.k0 + j) > i32(p.q0 + i) + p.causal_offset) {
    return MASKED;
  }
  if ((p.flags & KEY_PADDING) != 0u && kpad[p.kp_base + b * p.kp_bs + j] == 0u) {
    return MASKED;
  }
  var s = dot * p.scale;
  if ((p.flags & MASK) != 0u) {
    s += mask[p.m_base + b * p.m_bs + h * p.m_hs + i * p.m_qs + j];
  }
  if ((p.flags & REL_BIAS) != 0u) {
    s += rbias[u32(p.rb_base + i32(h * p.rb_hs) + i32(j) - i32(i))];
  }
  return select(MASKED, s, s >= MASKED_BELOW);
}


// Loads and stores, in either syntax. Offsets are in elements; strides in elements per row (or
// per column for col_major).
fn ld_q(off: u32, stride: u32) -> LM {
#if ${DIRECT}
#if ${NEW_SYNTAX}
  return subgroupMatrixLoad<LM, row_major>(&q, off, stride);
#else
  return subgroupMatrixLoad<LM>(&q, off, false, stride);
#endif
#else
#if ${NEW_SYNTAX}
  return subgroupMatrixLoad<LM, row_major>(&kv_sh, off, stride);
#else
  return subgroupMatrixLoad<LM>(&kv_sh, off, false, stride);
#endif
#endif
}

// Kᵀ: K rows read column-major.
fn ld_k(off: u32, stride: u32) -> RM {
#if ${DIRECT}
#if ${NEW_SYNTAX}
  return subgroupMatrixLoad<RM, col_major>(&k, off, stride);
#else
  return subgroupMatrixLoad<RM>(&k, off, true, stride);
#endif
#else
#if ${NEW_SYNTAX}
  return subgroupMatrixLoad<RM, col_major>(&kv_sh, off, stride);
#else
  return subgroupMatrixLoad<RM>(&kv_sh, off, true, stride);
#endif
#endif
}

fn ld_v(off: u32, stride: u32) -> RM {
#if ${DIRECT}
#if ${NEW_SYNTAX}
  return subgroupMatrixLoad<RM, row_major>(&v, off, stride);
#else
  return subgroupMatrixLoad<RM>(&v, off, false, stride);
#endif
#else
#if ${NEW_SYNTAX}
  return subgroupMatrixLoad<RM, row_major>(&kv_sh, off, stride);
#else
  return subgroupMatrixLoad<RM>(&kv_sh, off, false, stride);
#endif
#endif
}

fn ld_p(off: u32) -> LM {
#if ${NEW_SYNTAX}
  return subgroupMatrixLoad<LM, row_major>(&p_sh, off, PP);
#else
  return subgroupMatrixLoad<LM>(&p_sh, off, false, PP);
#endif
}

fn st_s(off: u32, m: AM) {
#if ${NEW_SYNTAX}
  subgroupMatrixStore<row_major>(&s_sh, off, m, SP);
#else
  subgroupMatrixStore(&s_sh, off, m, false, SP);
#endif
}

fn ld_s(off: u32) -> AM {
#if ${NEW_SYNTAX}
  return subgroupMatrixLoad<AM, row_major>(&s_sh, off, SP);
#else
  return subgroupMatrixLoad<AM>(&s_sh, off, false, SP);
#endif
}

// One head-dim block of O += P · V: P as 16-key quarters (p2, p3 only with 64-key tiles), V from row v.
fn pv(o: AM, p0: LM, p1: LM, p2: LM, p3: LM, v: u32, stride: u32) -> AM {
  var r = subgroupMatrixMultiplyAccumulate(p0, ld_v(v, stride), o);
  r = subgroupMatrixMultiplyAccumulate(p1, ld_v(v + 16u * stride, stride), r);
#if ${BC64}
  r = subgroupMatrixMultiplyAccumulate(p2, ld_v(v + 32u * stride, stride), r);
  r = subgroupMatrixMultiplyAccumulate(p3, ld_v(v + 48u * stride, stride), r);
#endif
  return r;
}

// Multiplies row `row` (this invocation's half `sh`) of the 16×32 block in s_sh by a.
fn scale_half(s_row: u32, sh: u32, a: f32) {
  for (var c = 0u; c < 16u; c++) {
    s_sh[s_row + sh * 16u + c] *= a;
  }
}

// Writes this invocation's 16 outputs of row `row` from the 16×32 block in s_sh, columns col0 + 16·sh ...
fn emit(s_row: u32, sh: u32, at: u32, col0: u32, inv: f32, valid: bool) {
  if (valid) {
    for (var c = 0u; c < 16u; c++) {
      let col = col0 + sh * 16u + c;
      if (col < p.head_dim) {
        out[at + col] = f16(s_sh[s_row + sh * 16u + c] * inv);
      }
    }
  }
}

@compute @workgroup_size(128)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) t: u32) {
  let wg = wid.x + wid.y * nwg.x;
  if (wg >= p.q_tiles * p.heads * p.batches) {
    return;
  }
  let qt = wg % p.q_tiles;
  let h = (wg / p.q_tiles) % p.heads;
  let b = wg / (p.q_tiles * p.heads);

  let D = p.head_dim;
  let nd = D / 16u;
  let KP = D + 8u;
  let D4 = D / 4u;
  let kvh = (p.h0 + h) / p.group - p.kvh0;
  let r0 = qt * BR;
  let qb = p.q_base + b * p.q_bs + h * D;
  let kb = p.k_base + b * p.k_bs + kvh * D;
  let vb = p.v_base + b * p.v_bs + kvh * D;
  let ob = p.o_base + b * p.o_bs + h * D;

  let sg = t / 32u;          // subgroup: rows 16·sg .. 16·sg + 15 of the tile
  let sr = t / 2u;           // softmax row of this invocation (0..63)
  let sh = t % 2u;           // its half: columns 16·sh .. 16·sh + 15
  let s_row = sr * SP;       // = (sr / 16) · 16 · SP + (sr % 16) · SP: its row in s_sh
  let p_row = sr * PP;
  let s_blk = sg * 16u * SP; // this subgroup's 16×32 block of s_sh
  let p_blk = sg * 16u * PP;

#if ${DIRECT}
  // Q rows straight from q (rows past lq read neighbouring data; their scores are masked).
  let q_off = qb + (r0 + sg * 16u) * p.q_rs;
  let q_st = p.q_rs;
#else
  // Q tile staged through kv_sh, zeros past the last row.
  for (var e = t; e < BR * D4; e += WG) {
    let r = e / D4;
    let c = (e % D4) * 4u;
    var x = vec4<f16>();
    if (r0 + r < p.lq) {
      x = q[(qb + (r0 + r) * p.q_rs + c) / 4u];
    }
    let at = r * KP + c;
    kv_sh[at] = x.x;
    kv_sh[at + 1u] = x.y;
    kv_sh[at + 2u] = x.z;
    kv_sh[at + 3u] = x.w;
  }
  workgroupBarrier();
  let q_off = sg * 16u * KP;
  let q_st = KP;
#endif
  var q0 = LM(); var q1 = LM(); var q2 = LM(); var q3 = LM();
  var q4 = LM(); var q5 = LM(); var q6 = LM(); var q7 = LM();
  q0 = ld_q(q_off, q_st);
  if (nd > 1u) { q1 = ld_q(q_off + 16u, q_st); }
  if (nd > 2u) { q2 = ld_q(q_off + 32u, q_st); }
  if (nd > 3u) { q3 = ld_q(q_off + 48u, q_st); }
  if (nd > 4u) { q4 = ld_q(q_off + 64u, q_st); }
  if (nd > 5u) { q5 = ld_q(q_off + 80u, q_st); }
  if (nd > 6u) { q6 = ld_q(q_off + 96u, q_st); }
  if (nd > 7u) { q7 = ld_q(q_off + 112u, q_st); }
#if ${DIRECT}
#else
  workgroupBarrier();
#endif
  var o0 = AM(); var o1 = AM(); var o2 = AM(); var o3 = AM();
  var o4 = AM(); var o5 = AM(); var o6 = AM(); var o7 = AM();

  var m_used = MASKED;
  var l_run = 0.0;

  var kend = p.lk;
  if ((p.flags & CAUSAL) != 0u) {
    let last = i32(p.q0 + min(r0 + BR, p.lq) - 1u) + p.causal_offset - i32(p.k0);
    kend = u32(clamp(last + 1, 0, i32(p.lk)));
  }

  for (var kt = 0u; kt < kend; kt += BC) {
#if ${DIRECT}
    let k_st = p.k_rs;
    let v_st = p.v_rs;
    let k_at = kb + kt * p.k_rs;              // key row kt, dim 0
    let v_at = vb + kt * p.v_rs;
#else
    for (var e = t; e < BC * D4; e += WG) {
      let r = e / D4;
      let c = (e % D4) * 4u;
      var kx = vec4<f16>();
      var vx = vec4<f16>();
      if (kt + r < p.lk) {
        kx = k[(kb + (kt + r) * p.k_rs + c) / 4u];
        vx = v[(vb + (kt + r) * p.v_rs + c) / 4u];
      }
      let ka = r * KP + c;
      kv_sh[ka] = kx.x;
      kv_sh[ka + 1u] = kx.y;
      kv_sh[ka + 2u] = kx.z;
      kv_sh[ka + 3u] = kx.w;
      let va = (BC + r) * KP + c;
      kv_sh[va] = vx.x;
      kv_sh[va + 1u] = vx.y;
      kv_sh[va + 2u] = vx.z;
      kv_sh[va + 3u] = vx.w;
    }
    workgroupBarrier();
    let k_st = KP;
    let v_st = KP;
    let k_at = 0u;
    let v_at = BC * KP;
#endif

    // S (16 × BC per subgroup) = Q · Kᵀ, 16 keys at a time.
    for (var n = 0u; n < BC / 16u; n++) {
      let kn = k_at + n * 16u * k_st;
      var acc = AM();
      acc = subgroupMatrixMultiplyAccumulate(q0, ld_k(kn, k_st), acc);
      if (nd > 1u) { acc = subgroupMatrixMultiplyAccumulate(q1, ld_k(kn + 16u, k_st), acc); }
      if (nd > 2u) { acc = subgroupMatrixMultiplyAccumulate(q2, ld_k(kn + 32u, k_st), acc); }
      if (nd > 3u) { acc = subgroupMatrixMultiplyAccumulate(q3, ld_k(kn + 48u, k_st), acc); }
      if (nd > 4u) { acc = subgroupMatrixMultiplyAccumulate(q4, ld_k(kn + 64u, k_st), acc); }
      if (nd > 5u) { acc = subgroupMatrixMultiplyAccumulate(q5, ld_k(kn + 80u, k_st), acc); }
      if (nd > 6u) { acc = subgroupMatrixMultiplyAccumulate(q6, ld_k(kn + 96u, k_st), acc); }
      if (nd > 7u) { acc = subgroupMatrixMultiplyAccumulate(q7, ld_k(kn + 112u, k_st), acc); }
      st_s(s_blk + n * 16u, acc);
    }
    workgroupBarrier();

    // Softmax, f32: this invocation's 16 scores of row sr, and the row's tile max.
    var sv = array<f32, HALF>();
    var mx = MASKED;
    for (var c = 0u; c < HALF; c++) {
      let col = sh * HALF + c;
      sv[c] = score(s_sh[s_row + col], b, h, r0 + sr, kt + col);
      mx = max(mx, sv[c]);
    }
    mx = max(mx, subgroupShuffleXor(mx, 1u));
    if (sh == 0u) {
      need_row[sr] = select(0u, 1u, m_used > MASKED_BELOW && mx > m_used + TAU);
    }
    workgroupBarrier();
    if (t == 0u) {
      var any = 0u;
      for (var i = 0u; i < BR; i++) {
        any |= need_row[i];
      }
      need = any;
    }
    if (workgroupUniformLoad(&need) != 0u) {
      // Rescale every row to its new max: O and l by exp(m_used − m_new), O through s_sh.
      let m_new = max(m_used, mx);
      let a = exp(m_used - m_new);
      l_run *= a;
      m_used = m_new;
      st_s(s_blk, o0); st_s(s_blk + 16u, o1);
      workgroupBarrier();
      scale_half(s_row, sh, a);
      workgroupBarrier();
      o0 = ld_s(s_blk); o1 = ld_s(s_blk + 16u);
      workgroupBarrier();
      if (nd > 2u) {
        st_s(s_blk, o2); st_s(s_blk + 16u, o3);
        workgroupBarrier();
        scale_half(s_row, sh, a);
        workgroupBarrier();
        o2 = ld_s(s_blk); o3 = ld_s(s_blk + 16u);
        workgroupBarrier();
      }
      if (nd > 4u) {
        st_s(s_blk, o4); st_s(s_blk + 16u, o5);
        workgroupBarrier();
        scale_half(s_row, sh, a);
        workgroupBarrier();
        o4 = ld_s(s_blk); o5 = ld_s(s_blk + 16u);
        workgroupBarrier();
      }
      if (nd > 6u) {
        st_s(s_blk, o6); st_s(s_blk + 16u, o7);
        workgroupBarrier();
        scale_half(s_row, sh, a);
        workgroupBarrier();
        o6 = ld_s(s_blk); o7 = ld_s(s_blk + 16u);
        workgroupBarrier();
      }
    } else if (m_used <= MASKED_BELOW) {
      // A row's first unmasked scores: its O and l are still zero, nothing to rescale.
      m_used = mx;
    }

    var sum = 0.0;
    for (var c = 0u; c < HALF; c++) {
      let ph = f16(select(0.0, exp(sv[c] - m_used), sv[c] > MASKED_BELOW));
      p_sh[p_row + sh * HALF + c] = ph;
      sum += f32(ph);
    }
    l_run += sum + subgroupShuffleXor(sum, 1u);
    workgroupBarrier();

    // O += P · V (16 × BC · BC × D per subgroup).
    let p0 = ld_p(p_blk);
    let p1 = ld_p(p_blk + 16u);
#if ${BC64}
    let p2 = ld_p(p_blk + 32u);
    let p3 = ld_p(p_blk + 48u);
#else
    let p2 = LM();
    let p3 = LM();
#endif
    o0 = pv(o0, p0, p1, p2, p3, v_at, v_st);
    if (nd > 1u) { o1 = pv(o1, p0, p1, p2, p3, v_at + 16u, v_st); }
    if (nd > 2u) { o2 = pv(o2, p0, p1, p2, p3, v_at + 32u, v_st); }
    if (nd > 3u) { o3 = pv(o3, p0, p1, p2, p3, v_at + 48u, v_st); }
    if (nd > 4u) { o4 = pv(o4, p0, p1, p2, p3, v_at + 64u, v_st); }
    if (nd > 5u) { o5 = pv(o5, p0, p1, p2, p3, v_at + 80u, v_st); }
    if (nd > 6u) { o6 = pv(o6, p0, p1, p2, p3, v_at + 96u, v_st); }
    if (nd > 7u) { o7 = pv(o7, p0, p1, p2, p3, v_at + 112u, v_st); }
    workgroupBarrier();
  }

  // out = O / l, two 16-column blocks at a time through s_sh.
  let inv = select(0.0, 1.0 / l_run, l_run > 0.0);
  let at = ob + (r0 + sr) * p.o_rs;
  let valid = r0 + sr < p.lq;
  st_s(s_blk, o0); st_s(s_blk + 16u, o1);
  workgroupBarrier();
  emit(s_row, sh, at, 0u, inv, valid);
  workgroupBarrier();
  if (nd > 2u) {
    st_s(s_blk, o2); st_s(s_blk + 16u, o3);
    workgroupBarrier();
    emit(s_row, sh, at, 32u, inv, valid);
    workgroupBarrier();
  }
  if (nd > 4u) {
    st_s(s_blk, o4); st_s(s_blk + 16u, o5);
    workgroupBarrier();
    emit(s_row, sh, at, 64u, inv, valid);
    workgroupBarrier();
  }
  if (nd > 6u) {
    st_s(s_blk, o6); st_s(s_blk + 16u, o7);
    workgroupBarrier();
    emit(s_row, sh, at, 96u, inv, valid);
    workgroupBarrier();
  }
}
