// Row-wise softmax of scale·x, numerically stable: one workgroup per row; each invocation
// keeps a running (max, sum) over its strided elements (online), the workgroup combines them,
// then writes exp(scale·x − max) / sum. Arithmetic in f32 on both storage variants.
// Defines: F16 (bool) f16 storage; SUBGROUPS (bool) reductions with subgroupMax/subgroupAdd,
// else a tree in workgroup memory; INPLACE (bool) x is also the output (one read_write binding).
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
  rows: u32, n: u32, x_base: u32, x_rs: u32,
  o_base: u32, o_rs: u32, scale: f32, pad0: u32,
}

#if ${INPLACE}
@group(0) @binding(0) var<storage, read_write> x: array<T>;
@group(0) @binding(1) var<uniform> p: Params;
#else
@group(0) @binding(0) var<storage, read> x: array<T>;
@group(0) @binding(1) var<storage, read_write> out: array<T>;
@group(0) @binding(2) var<uniform> p: Params;
#endif

const WG = 256u;
const NEG = -3.0e38;

var<workgroup> red_m: array<f32, 256>;
var<workgroup> red_l: array<f32, 256>;

// Combines (m, l) pairs: the sum of exp(x − m) over both, relative to their common max.
fn merge_l(ma: f32, la: f32, mb: f32, lb: f32, m: f32) -> f32 {
  return la * exp(ma - m) + lb * exp(mb - m);
}

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) t: u32
#if ${SUBGROUPS}
  , @builtin(subgroup_invocation_id) lane: u32, @builtin(subgroup_size) sgsize: u32
#endif
) {
  let row = wid.x + wid.y * nwg.x;
  if (row >= p.rows) {
    return;
  }
  let xb = p.x_base + row * p.x_rs;
  var m = NEG;
  var l = 0.0;
  for (var i = t; i < p.n; i += WG) {
    let s = p.scale * f32(x[xb + i]);
    if (s > m) {
      l = l * exp(m - s) + 1.0;
      m = s;
    } else {
      l += exp(s - m);
    }
  }
#if ${SUBGROUPS}
  // Within each subgroup, then across the subgroups through workgroup memory.
  let sm = subgroupMax(m);
  let sl = subgroupAdd(l * exp(m - sm));
  let groups = (WG + sgsize - 1u) / sgsize;
  if (lane == 0u) {
    red_m[t / sgsize] = sm;
    red_l[t / sgsize] = sl;
  }
  workgroupBarrier();
  var mm = NEG;
  for (var g = 0u; g < groups; g++) {
    mm = max(mm, red_m[g]);
  }
  var ll = 0.0;
  for (var g = 0u; g < groups; g++) {
    ll += red_l[g] * exp(red_m[g] - mm);
  }
#else
  red_m[t] = m;
  red_l[t] = l;
  workgroupBarrier();
  for (var stride = WG / 2u; stride > 0u; stride /= 2u) {
    if (t < stride) {
      let ma = red_m[t];
      let mb = red_m[t + stride];
      let mx = max(ma, mb);
      red_l[t] = merge_l(ma, red_l[t], mb, red_l[t + stride], mx);
      red_m[t] = mx;
    }
    workgroupBarrier();
  }
  let mm = red_m[0];
  let ll = red_l[0];
#endif
  let inv = select(0.0, 1.0 / ll, ll > 0.0 && mm > -1.0e30);
#if ${INPLACE}
  for (var i = t; i < p.n; i += WG) {
    x[xb + i] = T(exp(p.scale * f32(x[xb + i]) - mm) * inv);
  }
#else
  let ob = p.o_base + row * p.o_rs;
  for (var i = t; i < p.n; i += WG) {
    out[ob + i] = T(exp(p.scale * f32(x[xb + i]) - mm) * inv);
  }
#endif
}
