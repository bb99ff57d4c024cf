// Sinusoidal timestep embeddings (diffusers' get_timestep_embedding). WGSL's sin and cos are
// only specified on [-pi, pi] (to 2^-11), and the angles here reach t * 1 = 1000 rad, so the
// table is computed on the host in f64 (src/kernels/ops/timestep.ts) and travels in this
// dispatch's uniforms, 4 values per vec4: the kernel places values [offset, offset + n) of it
// into out, as f32 or f16. The uniforms belong to the recorded dispatch, so nothing has to
// outlive it.
// Defines: F16 (bool), WORKGROUP_SIZE (u32).
#if ${F16}
enable f16;
alias T = f16;
#else
alias T = f32;
#endif

struct Params {
  n: u32,
  offset: u32,
  table: array<vec4f, 4095>,
}

@group(0) @binding(0) var<storage, read_write> out: array<T>;
@group(0) @binding(1) var<uniform> params: Params;

@compute @workgroup_size(${WORKGROUP_SIZE})
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) groups: vec3u) {
  let i = gid.x + gid.y * groups.x * ${WORKGROUP_SIZE}u;
  if (i >= params.n) {
    return;
  }
  out[params.offset + i] = T(params.table[i / 4u][i % 4u]);
}
