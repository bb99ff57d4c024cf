// Appends new keys or values to a KV cache: values [B, n, W] (rows of any stride, e.g. a
// slice of a fused QKV output) → cache [B, capacity, W] at rows position .. position + n − 1,
// W = kv_heads · head_dim. Defines: F16 (bool) f16 storage of both.
#if ${F16}
enable f16;
alias T = f16;
#else
alias T = f32;
#endif

struct Params {
  batches: u32, n: u32, width: u32, position: u32,
  s_base: u32, s_rs: u32, s_bs: u32, pad0: u32,
  d_base: u32, d_rs: u32, d_bs: u32, pad1: u32,
}

@group(0) @binding(0) var<storage, read> src: array<T>;
@group(0) @binding(1) var<storage, read_write> cache: array<T>;
@group(0) @binding(2) var<uniform> p: Params;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let id = gid.x + gid.y * nwg.x * 256u;
  if (id >= p.batches * p.n * p.width) {
    return;
  }
  let c = id % p.width;
  let r = (id / p.width) % p.n;
  let b = id / (p.width * p.n);
  cache[p.d_base + b * p.d_bs + (p.position + r) * p.d_rs + c] = src[p.s_base + b * p.s_bs + r * p.s_rs + c];
}
