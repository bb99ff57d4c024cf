// Embedding gather: out[t, :] = table[ids[t], :]. The table stays in its stored form (f32 bits,
// or f16/bf16 two per u32 word) and may be bound in pieces: this dispatch sees rows
// [first, first + count) of it, and writes only the tokens whose id falls there. A table larger
// than one binding takes one dispatch per piece. Ids outside [0, vocab) give zero rows (written
// by the one dispatch whose zero_invalid is set).
// Defines: F16 (bool: f16 output), W_F16 / W_BF16 (bool: the table's stored form), WORKGROUP_SIZE (u32).
#if ${F16}
enable f16;
alias T = f16;
#else
alias T = f32;
#endif

struct Params {
  n: u32,
  dim: u32,
  first: u32,
  count: u32,
  vocab: u32,
  zero_invalid: u32,
}

@group(0) @binding(0) var<storage, read> ids: array<i32>;
@group(0) @binding(1) var<storage, read> wt: array<u32>;
@group(0) @binding(2) var<storage, read_write> out: array<T>;
@group(0) @binding(3) var<uniform> params: Params;

// @include stored_weight

@compute @workgroup_size(${WORKGROUP_SIZE})
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) groups: vec3u) {
  let i = gid.x + gid.y * groups.x * ${WORKGROUP_SIZE}u;
  if (i >= params.n) {
    return;
  }
  let token = i / params.dim;
  let c = i - token * params.dim;
  let id = ids[token];
  if (id < 0 || u32(id) >= params.vocab) {
    if (params.zero_invalid != 0u) {
      out[i] = T(0.0);
    }
    return;
  }
  let local = u32(id) - params.first;
  // u32 wrap-around sends ids below first past count too.
  if (local >= params.count) {
    return;
  }
  out[i] = T(load_w(local * params.dim + c));
}
