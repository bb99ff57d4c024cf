// Rotary position embedding from a host-side table: cos and sin of every (position, pair)
// angle are computed in f64 on the host and uploaded as f32 (WGSL's sin/cos are only
// accurate on [-π, π], and position·frequency reaches 10^5 rad and more), so the shader only
// multiplies. One invocation per rotated pair, plus one per passed-through element when the
// output is a separate tensor.
// Defines: F16 (bool) f16 storage (f32 arithmetic); INTERLEAVED (bool) pairs (2i, 2i+1) (FLUX,
// GPT-J), else rotate-half pairs (i, i + rot/2) (Llama, Qwen2, NeoX); INPLACE (bool) x is also
// the output; POSITIONS (bool) each token's table row comes from a u32 positions tensor
// [B, L], else row = pos_offset + token index.
#if ${F16}
enable f16;
alias T = f16;
#else
alias T = f32;
#endif

struct Params {
  batches: u32, seq: u32, heads: u32, head_dim: u32,
  half: u32, items: u32, pos_offset: u32, pos_bs: u32,
  x_base: u32, x_rs: u32, x_bs: u32, pos_base: u32,
  o_base: u32, o_rs: u32, o_bs: u32, table_rows: u32,
  row_first: u32, table_base: u32, pad0: u32, pad1: u32,
}

#if ${INPLACE}
@group(0) @binding(0) var<storage, read_write> x: array<T>;
#else
@group(0) @binding(0) var<storage, read> x: array<T>;
@group(0) @binding(1) var<storage, read_write> out: array<T>;
#endif
@group(0) @binding(${TABLE_BINDING}) var<storage, read> table: array<vec2f>;  // [rows, half] (cos, sin)
#if ${POSITIONS}
@group(0) @binding(${POS_BINDING}) var<storage, read> positions: array<u32>;
#endif
@group(0) @binding(${PARAMS_BINDING}) var<uniform> p: Params;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let id = gid.x + gid.y * nwg.x * 256u;
  let total = p.batches * p.seq * p.heads * p.items;
  if (id >= total) {
    return;
  }
  let item = id % p.items;
  var rest = id / p.items;
  let h = rest % p.heads;
  rest = rest / p.heads;
  let l = rest % p.seq;
  let b = rest / p.seq;
  let xb = p.x_base + b * p.x_bs + l * p.x_rs + h * p.head_dim;
#if ${INPLACE}
  let ob = xb;
#else
  let ob = p.o_base + b * p.o_bs + l * p.o_rs + h * p.head_dim;
#endif
  if (item >= p.half) {
    // Past the rotary dims: copied unchanged (out-of-place only).
    let d = 2u * p.half + item - p.half;
#if ${INPLACE}
#else
    out[ob + d] = x[xb + d];
#endif
    return;
  }
#if ${POSITIONS}
  let row = positions[p.pos_base + b * p.pos_bs + l];
#else
  let row = p.pos_offset + l;
#endif
  // The binding may hold only rows row_first.. of the table (split bindings); table_base is row_first's pair 0.
  let cs = table[p.table_base + (min(row, p.table_rows - 1u) - p.row_first) * p.half + item];
#if ${INTERLEAVED}
  let i0 = 2u * item;
  let i1 = i0 + 1u;
#else
  let i0 = item;
  let i1 = item + p.half;
#endif
  let x0 = f32(x[xb + i0]);
  let x1 = f32(x[xb + i1]);
#if ${INPLACE}
  x[ob + i0] = T(x0 * cs.x - x1 * cs.y);
  x[ob + i1] = T(x1 * cs.x + x0 * cs.y);
#else
  out[ob + i0] = T(x0 * cs.x - x1 * cs.y);
  out[ob + i1] = T(x1 * cs.x + x0 * cs.y);
#endif
}
