// out = x * s + b with scalars s and b (latent scaling factors, guidance mixes, embedding
// scales). Arithmetic in f32 whatever the storage.
// Defines: F16 (bool), WORKGROUP_SIZE (u32).
#if ${F16}
enable f16;
alias T = f16;
#else
alias T = f32;
#endif

struct Params {
  n: u32,
  s: f32,
  b: f32,
}

@group(0) @binding(0) var<storage, read> x: array<T>;
@group(0) @binding(1) var<storage, read_write> out: array<T>;
@group(0) @binding(2) var<uniform> params: Params;

@compute @workgroup_size(${WORKGROUP_SIZE})
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) groups: vec3u) {
  let i = gid.x + gid.y * groups.x * ${WORKGROUP_SIZE}u;
  if (i >= params.n) {
    return;
  }
  out[i] = T(f32(x[i]) * params.s + params.b);
}
