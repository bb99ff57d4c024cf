// RMSNorm (Llama, T5): out[r, :] = x[r, :] / sqrt(mean(x[r, :]^2) + eps) * weight. No mean
// subtraction, no bias. One workgroup per row; sums in f32 whatever the storage.
// Defines: F16 (bool: f16 activations), HAS_WEIGHT (bool), W_F16 / W_BF16 (bool: the weight's
// stored form, f32 otherwise), SUBGROUPS (bool: subgroupAdd, else a tree in workgroup memory),
// WORKGROUP_SIZE (u32, a power of two).
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
  rows: u32,
  cols: u32,
  eps: f32,
}

@group(0) @binding(0) var<storage, read> x: array<T>;
@group(0) @binding(1) var<storage, read> wt: array<u32>;
@group(0) @binding(2) var<storage, read_write> out: array<T>;
@group(0) @binding(3) var<uniform> params: Params;

var<workgroup> scratch: array<f32, ${WORKGROUP_SIZE}>;

// @include workgroup_reduce

// @include stored_weight

@compute @workgroup_size(${WORKGROUP_SIZE})
fn main(@builtin(workgroup_id) wg: vec3u, @builtin(num_workgroups) groups: vec3u,
  @builtin(local_invocation_index) lid: u32,
#if ${SUBGROUPS}
  @builtin(subgroup_id) sgid: u32, @builtin(num_subgroups) nsg: u32,
#endif
) {
#if ${SUBGROUPS}
#else
  let sgid = 0u;
  let nsg = 0u;
#endif
  _ = arrayLength(&wt);
  // Two-dimensional grid past 65535 rows: rebuild the row index; the whole workgroup leaves together.
  let row = wg.x + wg.y * groups.x;
  if (row >= params.rows) {
    return;
  }
  let cols = params.cols;
  let base = row * cols;
  var sum = 0.0;
  for (var c = lid; c < cols; c += ${WORKGROUP_SIZE}u) {
    let v = f32(x[base + c]);
    sum += v * v;
  }
  let total = reduce_sum(sum, lid, sgid, nsg);
  let r = inverseSqrt(total / f32(cols) + params.eps);
  for (var c = lid; c < cols; c += ${WORKGROUP_SIZE}u) {
    var y = f32(x[base + c]) * r;
#if ${HAS_WEIGHT}
    y = y * load_w(c);
#endif
    out[base + c] = T(y);
  }
}
