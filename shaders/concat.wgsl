// One input of a concatenation: out viewed as [outer, out_row], the input as [outer, in_row];
// out[o, offset + j] = in[o, j]. A concat along dimension d has out_row = out.shape[d] * inner,
// in_row = in.shape[d] * inner and offset = (sum of the earlier inputs' shape[d]) * inner; one
// dispatch per input. Elements are moved as bits: u32 for 4-byte dtypes (f32, i32, u32), f16
// for f16 activations.
// With SLICE the other way round (a slice along dimension d): out viewed as [outer, out_row],
// src as [outer, in_row]; out[o, j] = src[o, offset + j].
// Defines: HALF (bool: 2-byte elements through f16, needs shader-f16), SLICE (bool),
// WORKGROUP_SIZE (u32).
#if ${HALF}
enable f16;
alias T = f16;
#else
alias T = u32;
#endif

struct Params {
  n: u32,
  in_row: u32,
  out_row: u32,
  offset: u32,
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
#if ${SLICE}
  let o = i / params.out_row;
  let j = i - o * params.out_row;
  out[i] = src[o * params.in_row + params.offset + j];
#else
  let o = i / params.in_row;
  let j = i - o * params.in_row;
  out[o * params.out_row + params.offset + j] = src[i];
#endif
}
