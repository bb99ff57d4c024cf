// GroupNorm statistics, first of two dispatches (group_norm.wgsl is the second): each (n, g)
// run of C/G*S values (contiguous in NCHW) is cut into chunks of CHUNK values, one workgroup a
// chunk, so a VAE layer at 1024² (32 runs of 4 Mi values) spreads over thousands of workgroups
// instead of 32. Each chunk writes its mean and M2 (sum of squared deviations from its own mean,
// a second pass over the chunk): group_norm.wgsl merges them (Chan et al.) without the
// cancellation of a sum of squares. Sums in f32.
// Defines: F16 (bool), SUBGROUPS (bool), WORKGROUP_SIZE (u32, a power of two), CHUNK (u32).
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
  runs: u32,
  count: u32,
  chunks: u32,
}

@group(0) @binding(0) var<storage, read> x: array<T>;
@group(0) @binding(1) var<storage, read_write> partials: array<vec2f>; // [runs][chunks]: (mean, M2)
@group(0) @binding(2) var<uniform> params: Params;

var<workgroup> scratch: array<f32, ${WORKGROUP_SIZE}>;

// @include workgroup_reduce

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
  let index = wg.x + wg.y * groups.x;
  if (index >= params.runs * params.chunks) {
    return;
  }
  let run = index / params.chunks;
  let chunk = index % params.chunks;
  let start = chunk * ${CHUNK}u;
  let len = min(${CHUNK}u, params.count - start);
  let base = run * params.count + start;
  var sum = 0.0;
  for (var i = lid; i < len; i += ${WORKGROUP_SIZE}u) {
    sum += f32(x[base + i]);
  }
  let mean = reduce_sum(sum, lid, sgid, nsg) / f32(len);
  var sq = 0.0;
  for (var i = lid; i < len; i += ${WORKGROUP_SIZE}u) {
    let d = f32(x[base + i]) - mean;
    sq += d * d;
  }
  let m2 = reduce_sum(sq, lid, sgid, nsg);
  if (lid == 0u) {
    partials[index] = vec2f(mean, m2);
  }
}
