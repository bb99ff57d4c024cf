// LayerNorm (GPT-2, CLIP, FLUX): out[r, :] = (x[r, :] - mean) / sqrt(var + eps) * weight + bias,
// the biased variance as PyTorch computes it, from a second pass around the mean. Weight and bias
// are optional (FLUX's norms have neither). MODULATE fuses AdaLN after it:
// out = norm * (1 + scale[batch, :]) + shift[batch, :], batch = r / rows_per_batch, the two
// vectors read at offsets and a row stride inside (possibly one and the same) modulation tensor.
// One workgroup per row; sums in f32.
// Defines: F16 (bool), HAS_WEIGHT, HAS_BIAS (bool), W_F16 / W_BF16 and B_F16 / B_BF16 (bool: the
// stored forms of weight and bias, f32 otherwise), MODULATE (bool), SUBGROUPS (bool),
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
  rows_per_batch: u32,
  shift_offset: u32,
  scale_offset: u32,
  shift_stride: u32,
  scale_stride: u32,
}

@group(0) @binding(0) var<storage, read> x: array<T>;
@group(0) @binding(1) var<storage, read> wt: array<u32>;
@group(0) @binding(2) var<storage, read> bias: array<u32>;
@group(0) @binding(3) var<storage, read> shift: array<T>;
@group(0) @binding(4) var<storage, read> scale: array<T>;
@group(0) @binding(5) var<storage, read_write> out: array<T>;
@group(0) @binding(6) var<uniform> params: Params;

var<workgroup> scratch: array<f32, ${WORKGROUP_SIZE}>;

// @include workgroup_reduce

// @include stored_weight
// @include stored_bias

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
  _ = arrayLength(&bias);
  _ = arrayLength(&shift);
  _ = arrayLength(&scale);
  let row = wg.x + wg.y * groups.x;
  if (row >= params.rows) {
    return;
  }
  let cols = params.cols;
  let base = row * cols;
  var sum = 0.0;
  for (var c = lid; c < cols; c += ${WORKGROUP_SIZE}u) {
    sum += f32(x[base + c]);
  }
  let mean = reduce_sum(sum, lid, sgid, nsg) / f32(cols);
  var sq = 0.0;
  for (var c = lid; c < cols; c += ${WORKGROUP_SIZE}u) {
    let d = f32(x[base + c]) - mean;
    sq += d * d;
  }
  let r = inverseSqrt(reduce_sum(sq, lid, sgid, nsg) / f32(cols) + params.eps);
  let batch = row / params.rows_per_batch;
  for (var c = lid; c < cols; c += ${WORKGROUP_SIZE}u) {
    var y = (f32(x[base + c]) - mean) * r;
#if ${HAS_WEIGHT}
    y = y * load_w(c);
#endif
#if ${HAS_BIAS}
    y = y + load_b(c);
#endif
#if ${MODULATE}
    y = y * (1.0 + f32(scale[batch * params.scale_stride + params.scale_offset + c])) + f32(shift[batch * params.shift_stride + params.shift_offset + c]);
#endif
    out[base + c] = T(y);
  }
}
