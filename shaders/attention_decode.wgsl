// Attention for one query row per (batch, head): decoding with a KV cache. The flash kernel
// (attention.wgsl) tiles 32 query rows per workgroup and would run 1/32 full with Lq = 1; here
// one workgroup owns one (batch, head): it scores up to CHUNK keys at a time into workgroup
// memory (one thread per key), takes their max and sum (online softmax across chunks), then
// each thread accumulates one or two output columns over those keys (coalesced reads of v).
// No masks, key padding or relative bias (the caller checks); causal limits `keys`.
// Defines: F16 (bool) f16 storage of q, k, v, out (f32 arithmetic).
#if ${F16}
enable f16;
alias T = f16;
#else
alias T = f32;
#endif

struct Params {
  keys: u32, heads: u32, head_dim: u32, group: u32,
  q_base: u32, q_bs: u32, k_base: u32, k_rs: u32,
  k_bs: u32, v_base: u32, v_rs: u32, v_bs: u32,
  o_base: u32, o_bs: u32, groups: u32, scale: f32,
}

@group(0) @binding(0) var<storage, read> q: array<T>;
@group(0) @binding(1) var<storage, read> k: array<T>;
@group(0) @binding(2) var<storage, read> v: array<T>;
@group(0) @binding(3) var<storage, read_write> out: array<T>;
@group(0) @binding(4) var<uniform> p: Params;

const WG = 128u;
const CHUNK = 1024u;
const MAX_D = 256u;

var<workgroup> qs: array<f32, MAX_D>;
var<workgroup> scores: array<f32, CHUNK>;
var<workgroup> red: array<f32, WG>;

fn reduce_max(lid: u32, x: f32) -> f32 {
  red[lid] = x;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s >>= 1u) {
    if (lid < s) {
      red[lid] = max(red[lid], red[lid + s]);
    }
    workgroupBarrier();
  }
  let r = red[0];
  workgroupBarrier();
  return r;
}

fn reduce_sum(lid: u32, x: f32) -> f32 {
  red[lid] = x;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s >>= 1u) {
    if (lid < s) {
      red[lid] += red[lid + s];
    }
    workgroupBarrier();
  }
  let r = red[0];
  workgroupBarrier();
  return r;
}

@compute @workgroup_size(128)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let g = wid.x + wid.y * nwg.x;
  // Whole workgroups past the grid leave together, before any barrier.
  if (g >= p.groups) {
    return;
  }
  let h = g % p.heads;
  let b = g / p.heads;
  let d_len = p.head_dim;
  let kvh = h / p.group;
  let qb = p.q_base + b * p.q_bs + h * d_len;
  for (var d = lid; d < d_len; d += WG) {
    qs[d] = f32(q[qb + d]) * p.scale;
  }
  workgroupBarrier();
  let kb = p.k_base + b * p.k_bs + kvh * d_len;
  let vb = p.v_base + b * p.v_bs + kvh * d_len;
  var m = -3.0e38;
  var l = 0.0;
  var acc0 = 0.0;
  var acc1 = 0.0;
  for (var j0 = 0u; j0 < p.keys; j0 += CHUNK) {
    let n = min(CHUNK, p.keys - j0);
    var local_max = -3.0e38;
    for (var j = lid; j < n; j += WG) {
      let row = kb + (j0 + j) * p.k_rs;
      // Partial sums of 32 products, then their sum: the rounding of the tiled kernel's 32-wide chunks.
      var s = 0.0;
      for (var d0 = 0u; d0 < d_len; d0 += 32u) {
        var part = 0.0;
        for (var d = d0; d < min(d0 + 32u, d_len); d++) {
          part += qs[d] * f32(k[row + d]);
        }
        s += part;
      }
      scores[j] = s;
      local_max = max(local_max, s);
    }
    let m_new = max(m, reduce_max(lid, local_max));
    var local_sum = 0.0;
    for (var j = lid; j < n; j += WG) {
      let e = exp(scores[j] - m_new);
      scores[j] = e;
      local_sum += e;
    }
    let chunk_sum = reduce_sum(lid, local_sum);
    let correction = exp(m - m_new);
    l = l * correction + chunk_sum;
    acc0 *= correction;
    acc1 *= correction;
    for (var j = 0u; j < n; j++) {
      let pj = scores[j];
      let row = vb + (j0 + j) * p.v_rs;
      if (lid < d_len) {
        acc0 += pj * f32(v[row + lid]);
      }
      if (lid + WG < d_len) {
        acc1 += pj * f32(v[row + lid + WG]);
      }
    }
    m = m_new;
    workgroupBarrier();
  }
  let ob = p.o_base + b * p.o_bs + h * d_len;
  let inv = select(0.0, 1.0 / l, l > 0.0);
  if (lid < d_len) {
    out[ob + lid] = T(acc0 * inv);
  }
  if (lid + WG < d_len) {
    out[ob + lid + WG] = T(acc1 * inv);
  }
}
