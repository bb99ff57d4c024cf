// out[m, n] = scale · Σ_k x[m, k] · w[n, k] + bias[n] on tensor cores: chromium_experimental_subgroup_matrix,
// f16 16×16 left/right operands, f32 accumulation, subgroups of 32 (WG = 256: 8 subgroups).
// A workgroup computes a BM×BN tile; subgroup s owns SG_M×SG_N 16×16 blocks of it (unrolled in
// TS: DECL, BODY, STORE). Two ways to feed the operands:
//  - shared (any weight layout, f32 or f16 x): per 32-deep step, x and the decoded weights are
//    converted to f16 (clamped to ±65504: f16's range) into workgroup memory, the loads of the
//    next two steps held in registers meanwhile;
//  - DIRECT (f16 x and f16 weights, K % 16 == 0, M and N multiples of 16): operands load straight
//    from the storage buffers, one 16-deep step ahead of the multiply-accumulates.
// Results go through workgroup memory (one 16×16 f32 block per subgroup) to apply scale and bias,
// clip at the edges and round to the output type.
// Defines: F16 (bool: f16 x and output), DIRECT (bool), BM, BN, SG_M, SG_N, WN (subgroups along n),
// GROUP_M (u32), ALIGNED (bool: K % 4 == 0), W_TYPE, DEQUANT, BIAS (bool), BIAS_FN, DECL, BODY, STORE.
enable f16;
enable chromium_experimental_subgroup_matrix;
// Operand offsets depend on the subgroup (lid / 32): uniform within each subgroup, which is all
// the matrix builtins need, but the uniformity analysis only knows workgroup uniformity.
diagnostic(off, chromium.subgroup_matrix_uniformity);
#if ${F16}
alias XT = f16;
#else
alias XT = f32;
#endif

struct Params {
  m: u32,
  n: u32,
  k: u32,
  ldo: u32,
  n_base: u32,
  groups: u32,
  tiles_n: u32,
  scale: f32,
}

#if ${DIRECT}
@group(0) @binding(0) var<storage, read> x: array<f16>;
@group(0) @binding(1) var<storage, read> w: array<f16>;
#else
#if ${ALIGNED}
@group(0) @binding(0) var<storage, read> x: array<vec4<XT>>;
#else
@group(0) @binding(0) var<storage, read> x: array<XT>;
#endif
@group(0) @binding(1) var<storage, read> w: array<${W_TYPE}>;
#endif
#if ${BIAS}
@group(0) @binding(2) var<storage, read> bias: array<u32>;
@group(0) @binding(3) var<storage, read_write> out: array<XT>;
@group(0) @binding(4) var<uniform> params: Params;
#else
@group(0) @binding(2) var<storage, read_write> out: array<XT>;
@group(0) @binding(3) var<uniform> params: Params;
#endif

#if ${DIRECT}
#else
${DEQUANT}
#endif

${BIAS_FN}

const BM = ${BM}u;
const BN = ${BN}u;
const BK = 32u;
const AS = BK + 8u;                 // padded row stride of the shared tiles (f16 elements)
const WG = 256u;
const GROUP_M = ${GROUP_M}u;
const KQ = BK / 4u;
const LA = BM * KQ / WG;
const LB = BN * KQ / WG;

#if ${DIRECT}
#else
var<workgroup> As: array<f16, BM * AS>;
var<workgroup> Bs: array<f16, BN * AS>;

fn to_f16(v: vec4<f32>) -> vec4<f16> {
  return vec4<f16>(clamp(v, vec4<f32>(-65504.0), vec4<f32>(65504.0)));
}

fn load_x(m: u32, k: u32) -> vec4<f16> {
  if (m >= params.m) {
    return vec4<f16>(0.0);
  }
#if ${ALIGNED}
  if (k >= params.k) {
    return vec4<f16>(0.0);
  }
#if ${F16}
  return x[(m * params.k + k) >> 2u];
#else
  return to_f16(x[(m * params.k + k) >> 2u]);
#endif
#else
  var v = vec4<f32>(0.0);
  for (var i = 0u; i < 4u; i++) {
    if (k + i < params.k) {
      v[i] = f32(x[m * params.k + k + i]);
    }
  }
  return to_f16(v);
#endif
}

fn load_w(n: u32, k: u32) -> vec4<f16> {
  if (n >= params.n) {
    return vec4<f16>(0.0);
  }
#if ${ALIGNED}
  if (k >= params.k) {
    return vec4<f16>(0.0);
  }
  return to_f16(w_vec4(n * params.k + k));
#else
  var v = vec4<f32>(0.0);
  for (var i = 0u; i < 4u; i++) {
    if (k + i < params.k) {
      v[i] = w_elem(n * params.k + k + i);
    }
  }
  return to_f16(v);
#endif
}

fn fetch_x(m0: u32, k0: u32, lid: u32) -> array<vec4<f16>, LA> {
  var p: array<vec4<f16>, LA>;
  for (var i = 0u; i < LA; i++) {
    let idx = lid + i * WG;
    p[i] = load_x(m0 + idx / KQ, k0 + (idx % KQ) * 4u);
  }
  return p;
}

fn fetch_w(n0: u32, k0: u32, lid: u32) -> array<vec4<f16>, LB> {
  var p: array<vec4<f16>, LB>;
  for (var i = 0u; i < LB; i++) {
    let idx = lid + i * WG;
    p[i] = load_w(n0 + idx / KQ, k0 + (idx % KQ) * 4u);
  }
  return p;
}

fn stage(pa: array<vec4<f16>, LA>, pb: array<vec4<f16>, LB>, lid: u32) {
  for (var i = 0u; i < LA; i++) {
    put(0u, lid + i * WG, pa[i]);
  }
  for (var i = 0u; i < LB; i++) {
    put(1u, lid + i * WG, pb[i]);
  }
}

fn put(tile: u32, idx: u32, v: vec4<f16>) {
  let r = idx / KQ;
  let at = r * AS + (idx % KQ) * 4u;
  if (tile == 0u) {
    As[at] = v.x; As[at + 1u] = v.y; As[at + 2u] = v.z; As[at + 3u] = v.w;
  } else {
    Bs[at] = v.x; Bs[at + 1u] = v.y; Bs[at + 2u] = v.z; Bs[at + 3u] = v.w;
  }
}
#endif

// One 16×16 f32 block per subgroup on its way out.
var<workgroup> Cs: array<f32, 8u * 256u>;

fn store_tile(acc: subgroup_matrix_result<f32, 16, 16>, am: u32, bn: u32, sg: u32, lane: u32) {
  subgroupMatrixStore<row_major>(&Cs, sg * 256u, acc, 16u);
  workgroupBarrier();
  for (var i = 0u; i < 8u; i++) {
    let e = lane + 32u * i;
    let m = am + e / 16u;
    let n = bn + e % 16u;
    if (m < params.m && n < params.n) {
      let col = params.n_base + n;
      out[m * params.ldo + col] = XT(Cs[sg * 256u + e] * params.scale + bias_at(col));
    }
  }
  workgroupBarrier();
}

@compute @workgroup_size(256)
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
  let sg = lid / 32u;
  let lane = lid % 32u;
  // This subgroup's block of the tile, relative to the tile (shared) or absolute (DIRECT).
  let sm = (sg / ${WN}u) * (16u * ${SG_M}u);
  let sn = (sg % ${WN}u) * (16u * ${SG_N}u);

  ${DECL}

#if ${DIRECT}
  let am = m0 + sm;
  let bn = n0 + sn;
  let om = 0u;
  let on = 0u;
  // BODY: the whole k loop, each step's operands loaded one step ahead.
  ${BODY}
#else
  let am = sm;
  let bn = sn;
  let om = m0;
  let on = n0;
  // Tiles are fetched two steps ahead into two register sets (global latency exceeds one
  // step's tensor work), then staged into workgroup memory step by step.
  let steps = (params.k + BK - 1u) / BK;
  var pa0 = fetch_x(m0, 0u, lid);
  var pb0 = fetch_w(n0, 0u, lid);
  var pa1 = pa0;
  var pb1 = pb0;
  if (steps > 1u) {
    pa1 = fetch_x(m0, BK, lid);
    pb1 = fetch_w(n0, BK, lid);
  }
  for (var t = 0u; t < steps; t += 2u) {
    stage(pa0, pb0, lid);
    workgroupBarrier();
    if (t + 2u < steps) {
      pa0 = fetch_x(m0, (t + 2u) * BK, lid);
      pb0 = fetch_w(n0, (t + 2u) * BK, lid);
    }
    for (var kk = 0u; kk < BK; kk += 16u) {
      ${BODY}
    }
    workgroupBarrier();
    if (t + 1u < steps) {
      stage(pa1, pb1, lid);
      workgroupBarrier();
      if (t + 3u < steps) {
        pa1 = fetch_x(m0, (t + 3u) * BK, lid);
        pb1 = fetch_w(n0, (t + 3u) * BK, lid);
      }
      for (var kk = 0u; kk < BK; kk += 16u) {
        ${BODY}
      }
      workgroupBarrier();
    }
  }
#endif

  ${STORE}
}
