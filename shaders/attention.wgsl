// Multi-head scaled-dot-product attention with an online softmax (flash-attention style):
// each workgroup owns BR query rows of one (batch, head) and up to 128 output columns (a
// "slice" of the head dim), walks the keys in tiles of BC, and keeps a running row max m,
// row sum l and unnormalised output acc, so the Lq × Lk score matrix never exists.
// Scores, softmax and accumulation are f32 on both storage variants.
//
// Defines: F16 (bool) f16 storage for q, k, v, out (f32 arithmetic); SUBGROUPS (bool) row
// reductions with subgroupShuffleXor (needs subgroup size >= 4), else through workgroup memory.
// Shapes, strides, offsets and options travel in `params` (see ops/attention.ts).
#if ${F16}
enable f16;
#endif
#if ${SUBGROUPS}
enable subgroups;
#endif
#if ${F16}
alias T = f16;
#else
alias T = f32;
#endif

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

@group(0) @binding(0) var<storage, read> q: array<T>;
@group(0) @binding(1) var<storage, read> k: array<T>;
@group(0) @binding(2) var<storage, read> v: array<T>;
@group(0) @binding(3) var<storage, read_write> out: array<T>;
@group(0) @binding(4) var<storage, read> mask: array<f32>;
@group(0) @binding(5) var<storage, read> kpad: array<u32>;
@group(0) @binding(6) var<storage, read> rbias: array<f32>;
// Split-key runs: per (row, head, slice) m, l and 128 unnormalised outputs, carried between dispatches.
@group(0) @binding(7) var<storage, read_write> state: array<f32>;
@group(0) @binding(8) var<uniform> p: Params;

const BR = 32u;       // query rows per workgroup
const BC = 32u;       // keys per tile
const DC = 32u;       // head-dim chunk of the QK^T product
const DV = 128u;      // output columns per workgroup (a slice)
const PAD = 33u;      // row pitch of the tiles in workgroup memory
const WG = 128u;
const SW = 130u;      // state words per (row, head, slice): m, l, 128 outputs

const CAUSAL = 1u;
const MASK = 2u;
const KEY_PADDING = 4u;
const REL_BIAS = 8u;
const RESUME_IN = 16u;
const RESUME_OUT = 32u;

const MASKED = -3.0e38;       // a masked score (finite, so max() and exp() stay defined)
const MASKED_BELOW = -1.0e30; // scores below this count as masked (-inf masks too)

var<workgroup> qs: array<f32, 1056>;   // BR × PAD: a Q chunk
var<workgroup> kvs: array<f32, 1056>;  // BC × PAD: a K chunk, then a V chunk
var<workgroup> ss: array<f32, 1056>;   // BR × PAD: scores, then probabilities
var<workgroup> row_alpha: array<f32, 32>;
var<workgroup> row_l: array<f32, 32>;
#if ${SUBGROUPS}
#else
var<workgroup> red: array<f32, 128>;
#endif

// Max and sum over the 4 consecutive invocations that share a softmax row.
fn row_max(x: f32, t: u32) -> f32 {
#if ${SUBGROUPS}
  let a = max(x, subgroupShuffleXor(x, 1u));
  return max(a, subgroupShuffleXor(a, 2u));
#else
  red[t] = x;
  workgroupBarrier();
  let b = t & ~3u;
  let r = max(max(red[b], red[b + 1u]), max(red[b + 2u], red[b + 3u]));
  workgroupBarrier();
  return r;
#endif
}

fn row_sum(x: f32, t: u32) -> f32 {
#if ${SUBGROUPS}
  let a = x + subgroupShuffleXor(x, 1u);
  return a + subgroupShuffleXor(a, 2u);
#else
  red[t] = x;
  workgroupBarrier();
  let b = t & ~3u;
  let r = (red[b] + red[b + 1u]) + (red[b + 2u] + red[b + 3u]);
  workgroupBarrier();
  return r;
#endif
}

// The score of local query row i (of this dispatch) against local key j, or MASKED.
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

@compute @workgroup_size(128)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) t: u32) {
  let wg = wid.x + wid.y * nwg.x;
  if (wg >= p.q_tiles * p.slices * p.heads * p.batches) {
    return;
  }
  let qt = wg % p.q_tiles;
  var rest = wg / p.q_tiles;
  let slice = rest % p.slices;
  rest = rest / p.slices;
  let h = rest % p.heads;
  let b = rest / p.heads;

  let D = p.head_dim;
  let kvh = (p.h0 + h) / p.group - p.kvh0;
  let r0 = qt * BR;                      // first local query row of this workgroup
  let rows = min(BR, p.lq - r0);
  let c0 = slice * DV;                   // first output column of this slice
  let cols = min(DV, D - c0);
  let nvc = (cols + 31u) / 32u;          // 32-column chunks of V
  let qb = p.q_base + b * p.q_bs + h * D;
  let kb = p.k_base + b * p.k_bs + kvh * D;
  let vb = p.v_base + b * p.v_bs + kvh * D;
  let ob = p.o_base + b * p.o_bs + h * D;

  // Roles: S and PV tiles: rows ty and ty + 16, columns tx + 8j (j < 4). Softmax: row sr, columns 8·sq .. 8·sq + 7.
  let ty = t / 8u;
  let tx = t % 8u;
  let sr = t / 4u;
  let sq = t % 4u;

  var m_run = MASKED;
  var l_run = 0.0;
  var acc = array<f32, 32>();   // [vc · 8 + rr · 4 + j]

  if ((p.flags & RESUME_IN) != 0u) {
    if (sr < rows) {
      let at = (((r0 + sr) * p.heads + h) * p.slices + slice) * SW;
      m_run = state[at];
      l_run = state[at + 1u];
    }
    for (var vc = 0u; vc < 4u; vc++) {
      for (var rr = 0u; rr < 2u; rr++) {
        let r = ty + rr * 16u;
        for (var j = 0u; j < 4u; j++) {
          let c = vc * 32u + tx + j * 8u;
          if (r < rows && c < cols) {
            acc[vc * 8u + rr * 4u + j] = state[(((r0 + r) * p.heads + h) * p.slices + slice) * SW + 2u + c];
          }
        }
      }
    }
  }

  // Keys past the causal limit of this workgroup's last row are skipped.
  var kend = p.lk;
  if ((p.flags & CAUSAL) != 0u) {
    let last = i32(p.q0 + r0 + rows - 1u) + p.causal_offset - i32(p.k0);
    kend = u32(clamp(last + 1, 0, i32(p.lk)));
  }

  for (var kt = 0u; kt < kend; kt += BC) {
    var s = array<f32, 8>();    // [rr · 4 + j]
    for (var d0 = 0u; d0 < D; d0 += DC) {
      for (var e = t; e < BR * DC; e += WG) {
        let r = e / DC;
        let c = e % DC;
        var qv = 0.0;
        if (r < rows && d0 + c < D) {
          qv = f32(q[qb + (r0 + r) * p.q_rs + d0 + c]);
        }
        qs[r * PAD + c] = qv;
        var kv = 0.0;
        if (kt + r < p.lk && d0 + c < D) {
          kv = f32(k[kb + (kt + r) * p.k_rs + d0 + c]);
        }
        kvs[r * PAD + c] = kv;
      }
      workgroupBarrier();
      let dn = min(DC, D - d0);
      for (var c = 0u; c < dn; c++) {
        let qa = qs[ty * PAD + c];
        let qc = qs[(ty + 16u) * PAD + c];
        for (var j = 0u; j < 4u; j++) {
          let kv = kvs[(tx + j * 8u) * PAD + c];
          s[j] += qa * kv;
          s[4u + j] += qc * kv;
        }
      }
      workgroupBarrier();
    }
    for (var rr = 0u; rr < 2u; rr++) {
      for (var j = 0u; j < 4u; j++) {
        let r = ty + rr * 16u;
        let c = tx + j * 8u;
        ss[r * PAD + c] = score(s[rr * 4u + j], b, h, r0 + r, kt + c);
      }
    }
    workgroupBarrier();

    // Online softmax: new row max, rescale factor of what came before, probabilities.
    var mx = MASKED;
    for (var c = 0u; c < 8u; c++) {
      mx = max(mx, ss[sr * PAD + sq * 8u + c]);
    }
    mx = row_max(mx, t);
    let m_new = max(m_run, mx);
    let alpha = exp(m_run - m_new);
    var sum = 0.0;
    for (var c = 0u; c < 8u; c++) {
      let sv = ss[sr * PAD + sq * 8u + c];
      let pv = select(0.0, exp(sv - m_new), sv > MASKED_BELOW);
      ss[sr * PAD + sq * 8u + c] = pv;
      sum += pv;
    }
    sum = row_sum(sum, t);
    l_run = l_run * alpha + sum;
    m_run = m_new;
    if (sq == 0u) {
      row_alpha[sr] = alpha;
    }
    workgroupBarrier();

    let a0 = row_alpha[ty];
    let a1 = row_alpha[ty + 16u];
    for (var vc = 0u; vc < 4u; vc++) {
      for (var j = 0u; j < 4u; j++) {
        acc[vc * 8u + j] *= a0;
        acc[vc * 8u + 4u + j] *= a1;
      }
    }
    for (var vc = 0u; vc < 4u; vc++) {
      if (vc < nvc) {
        for (var e = t; e < BC * 32u; e += WG) {
          let r = e / 32u;
          let c = e % 32u;
          var vv = 0.0;
          if (kt + r < p.lk && vc * 32u + c < cols) {
            vv = f32(v[vb + (kt + r) * p.v_rs + c0 + vc * 32u + c]);
          }
          kvs[r * PAD + c] = vv;
        }
        workgroupBarrier();
        for (var kk = 0u; kk < BC; kk++) {
          let pa = ss[ty * PAD + kk];
          let pc = ss[(ty + 16u) * PAD + kk];
          for (var j = 0u; j < 4u; j++) {
            let vv = kvs[kk * PAD + tx + j * 8u];
            acc[vc * 8u + j] += pa * vv;
            acc[vc * 8u + 4u + j] += pc * vv;
          }
        }
        workgroupBarrier();
      }
    }
  }

  if ((p.flags & RESUME_OUT) != 0u) {
    if (sq == 0u && sr < rows) {
      let at = (((r0 + sr) * p.heads + h) * p.slices + slice) * SW;
      state[at] = m_run;
      state[at + 1u] = l_run;
    }
    for (var vc = 0u; vc < 4u; vc++) {
      for (var rr = 0u; rr < 2u; rr++) {
        let r = ty + rr * 16u;
        for (var j = 0u; j < 4u; j++) {
          let c = vc * 32u + tx + j * 8u;
          if (r < rows && c < cols) {
            state[(((r0 + r) * p.heads + h) * p.slices + slice) * SW + 2u + c] = acc[vc * 8u + rr * 4u + j];
          }
        }
      }
    }
    return;
  }

  if (sq == 0u) {
    row_l[sr] = l_run;
  }
  workgroupBarrier();
  for (var vc = 0u; vc < 4u; vc++) {
    for (var rr = 0u; rr < 2u; rr++) {
      let r = ty + rr * 16u;
      let l = row_l[r];
      let inv = select(0.0, 1.0 / l, l > 0.0);
      for (var j = 0u; j < 4u; j++) {
        let c = vc * 32u + tx + j * 8u;
        if (r < rows && c < cols) {
          out[ob + (r0 + r) * p.o_rs + c0 + c] = T(acc[vc * 8u + rr * 4u + j] * inv);
        }
      }
    }
  }
}
