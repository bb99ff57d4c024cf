// out[m, n] = scale · Σ_k x[m, k] · w[n, k] + bias[n] on tensor cores, both operands in the
// packed subgroup-matrix layout of matmul-sgmat-pack.wgsl (16×16 f16 blocks of 512 contiguous
// bytes, [rows/16][KB]): every subgroupMatrixLoad reads one contiguous block straight from the
// storage buffer, no workgroup memory and no barriers in the k loop. f32 accumulation.
// A workgroup of WM×WN subgroups computes a (WM·16·SG_M)×(WN·16·SG_N) tile; each subgroup
// SG_M×SG_N 16×16 accumulators (unrolled in TS: DECL, BODY, STORE; BODY walks KB, which the
// packing pads to a multiple of 4, UNROLL blocks at a time).
// Results go through workgroup memory (one 16×16 f32 block per subgroup) to apply scale and
// bias, clip at the edges and round to the output type.
// Defines: F16 (bool: f16 output), BM, BN, WN, WG (threads), GROUP_M, BIAS, BIAS_FN, DECL, BODY, STORE.
enable f16;
enable chromium_experimental_subgroup_matrix;
diagnostic(off, chromium.subgroup_matrix_uniformity);
#if ${F16}
alias XT = f16;
#else
alias XT = f32;
#endif

struct Params {
  m: u32,
  n: u32,
  kb: u32,
  ldo: u32,
  n_base: u32,
  groups: u32,
  tiles_n: u32,
  scale: f32,
  mb: u32,
  nb: u32,
}

@group(0) @binding(0) var<storage, read> xp: array<f16>;
@group(0) @binding(1) var<storage, read> wp: array<f16>;
#if ${BIAS}
@group(0) @binding(2) var<storage, read> bias: array<u32>;
@group(0) @binding(3) var<storage, read_write> out: array<XT>;
@group(0) @binding(4) var<uniform> params: Params;
#else
@group(0) @binding(2) var<storage, read_write> out: array<XT>;
@group(0) @binding(3) var<uniform> params: Params;
#endif

${BIAS_FN}

const BM = ${BM}u;
const BN = ${BN}u;
const WG = ${WG}u;
const GROUP_M = ${GROUP_M}u;

var<workgroup> Cs: array<f32, (WG / 32u) * 256u>;

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

@compute @workgroup_size(WG)
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
  let am = m0 + (sg / ${WN}u) * (16u * ${SG_M}u);
  let bn = n0 + (sg % ${WN}u) * (16u * ${SG_N}u);

  ${DECL}

  ${BODY}

  ${STORE}
}
