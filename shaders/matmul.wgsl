// out[m, n] = scale · Σ_k x[m, k] · w[n, k] + bias[n] (nn.Linear: x·wᵀ + b), tiled, f32 arithmetic.
// A workgroup computes a BM×BN tile of out; each of its WG = (BM/TM)·(BN/TN) threads owns a
// TM×TN register tile (unrolled in TS: DECL, BODY, STORE). Per BK-deep step the x tile and the
// decoded weight tile go to workgroup memory k-major (As[k][m], Bs[k][n], as vec4s), double
// buffered, with the next step's global loads in registers while this one computes.
// Tiles are visited in groups of GROUP_M tile rows, so concurrent workgroups share weights in L2.
// Defines: F16 (bool: f16 activations/output, f32 arithmetic), BM, BN, BK, TM, TN, WG, GROUP_M
// (u32), ALIGNED (bool: K % 4 == 0, vec4 loads), W_TYPE, DEQUANT (w_vec4 / w_elem), BIAS (bool),
// BIAS_FN, DECL, BODY, STORE (WGSL).
#if ${F16}
enable f16;
alias XT = f16;
#else
alias XT = f32;
#endif

struct Params {
  m: u32,        // rows of x (and out) in this dispatch
  n: u32,        // weight rows bound in this dispatch
  k: u32,
  ldo: u32,      // out's row stride (all of N)
  n_base: u32,   // out column (and bias index) of this dispatch's first weight row
  groups: u32,   // workgroups in this dispatch; past it (2-D grids) a workgroup returns
  tiles_n: u32,  // tiles along n
  scale: f32,    // per-tensor weight scale (scaled fp8), 1 otherwise
}

#if ${ALIGNED}
@group(0) @binding(0) var<storage, read> x: array<vec4<XT>>;
#else
@group(0) @binding(0) var<storage, read> x: array<XT>;
#endif
@group(0) @binding(1) var<storage, read> w: array<${W_TYPE}>;
#if ${BIAS}
@group(0) @binding(2) var<storage, read> bias: array<u32>;
@group(0) @binding(3) var<storage, read_write> out: array<XT>;
@group(0) @binding(4) var<uniform> params: Params;
#else
@group(0) @binding(2) var<storage, read_write> out: array<XT>;
@group(0) @binding(3) var<uniform> params: Params;
#endif

${DEQUANT}

${BIAS_FN}

const BM = ${BM}u;
const BN = ${BN}u;
const BK = ${BK}u;
const WG = ${WG}u;
const GROUP_M = ${GROUP_M}u;
const KQ = BK / 4u;                 // vec4s per tile row
const LA = BM * KQ / WG;            // x tile vec4s per thread
const LB = BN * KQ / WG;            // weight tile vec4s per thread

var<workgroup> As: array<array<vec4<f32>, BM / 4u>, 2u * BK>;
var<workgroup> Bs: array<array<vec4<f32>, BN / 4u>, 2u * BK>;

fn load_x(m: u32, k: u32) -> vec4<f32> {
  if (m >= params.m) {
    return vec4<f32>(0.0);
  }
#if ${ALIGNED}
  if (k >= params.k) {
    return vec4<f32>(0.0);
  }
  return vec4<f32>(x[(m * params.k + k) >> 2u]);
#else
  var v = vec4<f32>(0.0);
  for (var i = 0u; i < 4u; i++) {
    if (k + i < params.k) {
      v[i] = f32(x[m * params.k + k + i]);
    }
  }
  return v;
#endif
}

fn load_w(n: u32, k: u32) -> vec4<f32> {
  if (n >= params.n) {
    return vec4<f32>(0.0);
  }
#if ${ALIGNED}
  if (k >= params.k) {
    return vec4<f32>(0.0);
  }
  return w_vec4(n * params.k + k);
#else
  var v = vec4<f32>(0.0);
  for (var i = 0u; i < 4u; i++) {
    if (k + i < params.k) {
      v[i] = w_elem(n * params.k + k + i);
    }
  }
  return v;
#endif
}

fn store4(m: u32, n: u32, v: vec4<f32>) {
  let row = m * params.ldo + params.n_base;
  for (var q = 0u; q < 4u; q++) {
    if (n + q < params.n) {
      out[row + n + q] = XT(v[q] * params.scale + bias_at(params.n_base + n + q));
    }
  }
}

@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let g = wid.x + wid.y * nwg.x;
  if (g >= params.groups) {
    return;
  }
  let tiles_n = params.tiles_n;
  let tiles_m = params.groups / tiles_n;
  let per_group = GROUP_M * tiles_n;
  let first_m = (g / per_group) * GROUP_M;
  let group_rows = min(tiles_m - first_m, GROUP_M);
  let in_group = g % per_group;
  let m0 = (first_m + in_group % group_rows) * BM;
  let n0 = (in_group / group_rows) * BN;
  let tx = lid % (BN / ${TN}u);
  let ty = lid / (BN / ${TN}u);

  var pa: array<vec4<f32>, LA>;
  var pb: array<vec4<f32>, LB>;
  let steps = (params.k + BK - 1u) / BK;

  // Step 0 straight into buffer 0.
  for (var i = 0u; i < LA; i++) {
    let idx = lid + i * WG;
    pa[i] = load_x(m0 + idx / KQ, (idx % KQ) * 4u);
  }
  for (var i = 0u; i < LB; i++) {
    let idx = lid + i * WG;
    pb[i] = load_w(n0 + idx / KQ, (idx % KQ) * 4u);
  }
  for (var i = 0u; i < LA; i++) {
    let idx = lid + i * WG;
    let r = idx / KQ;
    let kq = (idx % KQ) * 4u;
    for (var c = 0u; c < 4u; c++) {
      As[kq + c][r >> 2u][r & 3u] = pa[i][c];
    }
  }
  for (var i = 0u; i < LB; i++) {
    let idx = lid + i * WG;
    let r = idx / KQ;
    let kq = (idx % KQ) * 4u;
    for (var c = 0u; c < 4u; c++) {
      Bs[kq + c][r >> 2u][r & 3u] = pb[i][c];
    }
  }
  workgroupBarrier();

  ${DECL}

  for (var t = 0u; t < steps; t++) {
    let kb = (t & 1u) * BK;
    let more = t + 1u < steps;
    if (more) {
      let k0 = (t + 1u) * BK;
      for (var i = 0u; i < LA; i++) {
        let idx = lid + i * WG;
        pa[i] = load_x(m0 + idx / KQ, k0 + (idx % KQ) * 4u);
      }
      for (var i = 0u; i < LB; i++) {
        let idx = lid + i * WG;
        pb[i] = load_w(n0 + idx / KQ, k0 + (idx % KQ) * 4u);
      }
    }
    for (var kk = 0u; kk < BK; kk++) {
      ${BODY}
    }
    if (more) {
      let nb = BK - kb;
      for (var i = 0u; i < LA; i++) {
        let idx = lid + i * WG;
        let r = idx / KQ;
        let kq = nb + (idx % KQ) * 4u;
        for (var c = 0u; c < 4u; c++) {
          As[kq + c][r >> 2u][r & 3u] = pa[i][c];
        }
      }
      for (var i = 0u; i < LB; i++) {
        let idx = lid + i * WG;
        let r = idx / KQ;
        let kq = nb + (idx % KQ) * 4u;
        for (var c = 0u; c < 4u; c++) {
          Bs[kq + c][r >> 2u][r & 3u] = pb[i][c];
        }
      }
    }
    workgroupBarrier();
  }

  ${STORE}
}
