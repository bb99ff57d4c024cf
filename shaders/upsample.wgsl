// Nearest upsampling by integer factors (diffusers' Upsample2D: F.interpolate(scale_factor=2,
// mode="nearest")): out[nc, y, x] = in[nc, y / fy, x / fx] on NCHW.
// Defines: F16 (bool), WORKGROUP_SIZE (u32).
#if ${F16}
enable f16;
alias T = f16;
#else
alias T = f32;
#endif

struct Params {
  n: u32,
  in_h: u32,
  in_w: u32,
  out_h: u32,
  out_w: u32,
  fy: u32,
  fx: u32,
}

@group(0) @binding(0) var<storage, read> src: array<T>;
@group(0) @binding(1) var<storage, read_write> out: array<T>;
@group(0) @binding(2) var<uniform> params: Params;

@compute @workgroup_size(${WORKGROUP_SIZE})
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) groups: vec3u) {
  let i = gid.x + gid.y * groups.x * ${WORKGROUP_SIZE}u;
  if (i >= params.n) {
    return;
  }
  let x = i % params.out_w;
  let t = i / params.out_w;
  let y = t % params.out_h;
  let nc = t / params.out_h;
  out[i] = src[(nc * params.in_h + y / params.fy) * params.in_w + x / params.fx];
}
