// Appends new keys or values to a KV cache: values [B, n, W] (rows of any stride, e.g. a
// slice of a fused QKV output) → cache [B, capacity, W] at rows position .. position + n − 1,
// W = kv_heads · head_dim. Defines: F16 (bool) f16 storage of both; PAIR (bool) keys and
// values in one dispatch (same layouts): the first half of the invocations write keys.
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

#if ${PAIR}
@group(0) @binding(0) var<storage, read> src: array<T>;
@group(0) @binding(1) var<storage, read> src_v: array<T>;
@group(0) @binding(2) var<storage, read_write> cache: array<T>;
@group(0) @binding(3) var<storage, read_write> cache_v: array<T>;
@group(0) @binding(4) var<uniform> p: Params;
#else
@group(0) @binding(0) var<storage, read> src: array<T>;
@group(0) @binding(1) var<storage, read_write> cache: array<T>;
@group(0) @binding(2) var<uniform> p: Params;
#endif

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  var id = gid.x + gid.y * nwg.x * 256u;
  let count = p.batches * p.n * p.width;
#if ${PAIR}
  if (id >= 2u * count) {
    return;
  }
  let values = id >= count;
  if (values) {
    id -= count;
  }
#else
  if (id >= count) {
    return;
  }
#endif
  let c = id % p.width;
  let r = (id / p.width) % p.n;
  let b = id / (p.width * p.n);
  let d = p.d_base + b * p.d_bs + (p.position + r) * p.d_rs + c;
  let s = p.s_base + b * p.s_bs + r * p.s_rs + c;
#if ${PAIR}
  if (values) {
    cache_v[d] = src_v[s];
    return;
  }
#endif
  cache[d] = src[s];
}
