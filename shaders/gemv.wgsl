// out[m, n] = scale · Σ_k x[m, k] · w[n, k] + bias[n] for few rows m (batch-1 decode): memory
// bound, so each weight byte is read once, in its stored form, with wide loads.
// One workgroup owns ROWS consecutive weight rows and one row m of x; its WG threads stride
// over the rows' chunks (CHUNK elements each, decoded by DEQUANT's chunk_dot), reusing
// each chunk of x for the ROWS rows, then reduce: subgroupAdd then one slot per subgroup
// where SUBGROUPS, else a tree in workgroup memory.
// Defines: F16 (bool: f16 activations and output), SUBGROUPS (bool), WG (u32, power of 2),
// ROWS (u32), CHUNK1 (bool: CHUNK is 1, scalar x), XV (u32: CHUNK / 4), W_TYPE (element type
// of w), DEQUANT (WGSL: chunk_dot and its helpers), BIAS (bool), BIAS_FN (WGSL: bias_at),
// RESIDUAL (bool: adds res, shaped like out — a residual connection without its own dispatch),
// PARTS2 / PARTS3 (bool: the weight stacks 2 or 3 projections; columns from split1 (split2)
// on go to out1 (out2), each with its own row stride: q, k and v from one dispatch).
#if ${F16}
enable f16;
#endif
#if ${SUBGROUPS}
enable subgroups;
#endif
#if ${F16}
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
  chunks: u32,   // k / CHUNK
  scale: f32,    // per-tensor weight scale (scaled fp8), 1 otherwise
  split1: u32,   // PARTS2: first column of out1, whose row stride is ld1
  ld1: u32,
  split2: u32,   // PARTS3: first column of out2, whose row stride is ld2
  ld2: u32,
}

#if ${CHUNK1}
@group(0) @binding(0) var<storage, read> x: array<XT>;
#else
@group(0) @binding(0) var<storage, read> x: array<vec4<XT>>;
#endif
@group(0) @binding(1) var<storage, read> w: array<${W_TYPE}>;
// Bindings after w are numbered in order: bias, res, out, params (the absent ones skipped).
#if ${BIAS}
@group(0) @binding(2) var<storage, read> bias: array<u32>;
#endif
#if ${RESIDUAL}
@group(0) @binding(${RES_BINDING}) var<storage, read> res: array<XT>;
#endif
@group(0) @binding(${OUT_BINDING}) var<storage, read_write> out: array<XT>;
#if ${PARTS2}
@group(0) @binding(${OUT1_BINDING}) var<storage, read_write> out1: array<XT>;
#endif
#if ${PARTS3}
@group(0) @binding(${OUT2_BINDING}) var<storage, read_write> out2: array<XT>;
#endif
@group(0) @binding(${PARAMS_BINDING}) var<uniform> params: Params;

${DEQUANT}

${BIAS_FN}

const WG = ${WG}u;
const ROWS = ${ROWS}u;

#if ${CHUNK1}
fn load_xc(i: u32) -> f32 {
  return f32(x[i]);
}
#else
fn load_xc(i: u32) -> array<vec4<f32>, ${XV}> {
  var xc: array<vec4<f32>, ${XV}>;
  let q = i >> 2u;
  for (var t = 0u; t < ${XV}u; t++) {
    xc[t] = vec4<f32>(x[q + t]);
  }
  return xc;
}
#endif

#if ${SUBGROUPS}
// One slot per subgroup and row; subgroups have at least 4 invocations.
var<workgroup> red: array<f32, (WG / 4u) * ROWS>;
#else
var<workgroup> red: array<f32, WG * ROWS>;
#endif

@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32
#if ${SUBGROUPS}
  , @builtin(subgroup_invocation_id) sg_lane: u32, @builtin(subgroup_size) sg_size: u32
#endif
) {
  let g = wid.x + wid.y * nwg.x;
  if (g >= params.groups) {
    return;
  }
  // m varies fastest: the workgroups that share weight rows run together and share them in L2.
  let mi = g % params.m;
  let row0 = (g / params.m) * ROWS;
  let k = params.k;
  let xbase = mi * k;

  var acc: array<f32, ROWS>;
  for (var r = 0u; r < ROWS; r++) {
    acc[r] = 0.0;
  }
  var wrow: array<u32, ROWS>;
  for (var r = 0u; r < ROWS; r++) {
    // Rows past the end re-read the last row; their sums are never written.
    wrow[r] = min(row0 + r, params.n - 1u) * k;
  }
  for (var c = lid; c < params.chunks; c += WG) {
    let kc = c * ${CHUNK}u;
    let xc = load_xc(xbase + kc);
    for (var r = 0u; r < ROWS; r++) {
      acc[r] += chunk_dot(wrow[r] + kc, xc);
    }
  }

#if ${SUBGROUPS}
  let slots = max(1u, WG / sg_size);
  for (var r = 0u; r < ROWS; r++) {
    let s = subgroupAdd(acc[r]);
    if (sg_lane == 0u) {
      red[(lid / sg_size) * ROWS + r] = s;
    }
  }
  workgroupBarrier();
  if (lid < ROWS) {
    var total = 0.0;
    for (var i = 0u; i < slots; i++) {
      total += red[i * ROWS + lid];
    }
    write_out(mi, row0 + lid, total);
  }
#else
  for (var r = 0u; r < ROWS; r++) {
    red[lid * ROWS + r] = acc[r];
  }
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s >>= 1u) {
    if (lid < s) {
      for (var r = 0u; r < ROWS; r++) {
        red[lid * ROWS + r] += red[(lid + s) * ROWS + r];
      }
    }
    workgroupBarrier();
  }
  if (lid < ROWS) {
    write_out(mi, row0 + lid, red[lid]);
  }
#endif
}

fn write_out(mi: u32, row: u32, total: f32) {
  if (row < params.n) {
    let n = params.n_base + row;
#if ${PARTS3}
    if (n >= params.split2) {
      out2[mi * params.ld2 + n - params.split2] = XT(total * params.scale + bias_at(n));
      return;
    }
#endif
#if ${PARTS2}
    if (n >= params.split1) {
      out1[mi * params.ld1 + n - params.split1] = XT(total * params.scale + bias_at(n));
      return;
    }
#endif
    let o = mi * params.ldo + n;
#if ${RESIDUAL}
    out[o] = XT(total * params.scale + bias_at(n) + f32(res[o]));
#else
    out[o] = XT(total * params.scale + bias_at(n));
#endif
  }
}
