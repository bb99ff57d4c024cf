// GroupNorm (SD VAE and UNet): x is [N, C, S] (S = H*W, NCHW), C split into G groups of C/G
// channels; each (n, g) is one contiguous run of C/G*S values, normalized by its own mean and
// biased variance, then out = y * gamma[c] + beta[c], and with SILU out = out * sigmoid(out)
// (a ResnetBlock2D's norm then nonlinearity, fused). Second of two dispatches: each workgroup
// merges its run's chunk statistics from group_norm_stats.wgsl (mean = sum of len * mean_c over
// count; M2 = sum of M2_c + len * (mean_c - mean)^2), then normalizes one chunk of the run.
// Defines: F16 (bool), HAS_WEIGHT, HAS_BIAS (bool), W_F16 / W_BF16, B_F16 / B_BF16 (bool),
// SILU (bool), SUBGROUPS (bool), WORKGROUP_SIZE (u32, a power of two), CHUNK (u32, as the stats').
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
  batch: u32,
  channels: u32,
  spatial: u32,
  groups: u32,
  eps: f32,
  chunks: u32,
}

@group(0) @binding(0) var<storage, read> x: array<T>;
@group(0) @binding(1) var<storage, read> wt: array<u32>;
@group(0) @binding(2) var<storage, read> bias: array<u32>;
@group(0) @binding(3) var<storage, read> partials: array<vec2f>; // [runs][chunks]: (mean, M2)
@group(0) @binding(4) var<storage, read_write> out: array<T>;
@group(0) @binding(5) var<uniform> params: Params;

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
  let index = wg.x + wg.y * groups.x;
  if (index >= params.batch * params.groups * params.chunks) {
    return;
  }
  let run = index / params.chunks;
  let chunk = index % params.chunks;
  let g = run % params.groups;
  let per_group = params.channels / params.groups;
  let count = per_group * params.spatial;
  var weighted = 0.0;
  for (var c = lid; c < params.chunks; c += ${WORKGROUP_SIZE}u) {
    let len = min(${CHUNK}u, count - c * ${CHUNK}u);
    weighted += f32(len) * partials[run * params.chunks + c].x;
  }
  let mean = reduce_sum(weighted, lid, sgid, nsg) / f32(count);
  var m2 = 0.0;
  for (var c = lid; c < params.chunks; c += ${WORKGROUP_SIZE}u) {
    let len = min(${CHUNK}u, count - c * ${CHUNK}u);
    let p = partials[run * params.chunks + c];
    let d = p.x - mean;
    m2 += p.y + f32(len) * d * d;
  }
  let r = inverseSqrt(reduce_sum(m2, lid, sgid, nsg) / f32(count) + params.eps);
  // Runs are contiguous in NCHW: (n, g) starts at (n * C + g * C/G) * S = run * count.
  let start = chunk * ${CHUNK}u;
  let base = run * count + start;
  let len = min(${CHUNK}u, count - start);
  for (var i = lid; i < len; i += ${WORKGROUP_SIZE}u) {
    let c = g * per_group + (start + i) / params.spatial;
    var y = (f32(x[base + i]) - mean) * r;
#if ${HAS_WEIGHT}
    y = y * load_w(c);
#endif
#if ${HAS_BIAS}
    y = y + load_b(c);
#endif
#if ${SILU}
    // sigmoid, exactly 0 below -80 so that a huge negative y gives 0, not y * 1.8e-35.
    y = y * select(1.0 / (1.0 + exp(-clamp(y, -80.0, 80.0))), 0.0, y < -80.0);
#endif
    out[base + i] = T(y);
  }
}
