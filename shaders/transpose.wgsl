// Permutes of up to 4 dimensions (after merging the dimensions that stay together).
// TILED = false, a gather: the linear output index is split into out's 4 coordinates and read at
// the input strides that the permutation gives each of them ([B, L, H, D] to [B, H, L, D] and back
// for attention, [N, C, HW] to [N, HW, C]).
// TILED = true, a batched 2-D transpose [batch, rows, cols] to [batch, cols, rows] through a
// 16 x 16 tile in workgroup memory, so both the reads and the writes are contiguous runs.
// Elements move as bits: u32 for 4-byte dtypes, f16 for f16 activations.
// Defines: HALF (bool: 2-byte elements through f16), TILED (bool), WORKGROUP_SIZE (u32, 256 when TILED).
#if ${HALF}
enable f16;
alias T = f16;
#else
alias T = u32;
#endif

struct Params {
  n: u32,
  d1: u32,
  d2: u32,
  d3: u32,
  strides: vec4u,
}

@group(0) @binding(0) var<storage, read> src: array<T>;
@group(0) @binding(1) var<storage, read_write> out: array<T>;
@group(0) @binding(2) var<uniform> params: Params;

#if ${TILED}
const TILE = 16u;
var<workgroup> tile: array<T, 272>; // 16 rows of 17: the odd pitch spreads a column over banks

// params: n = batch, d1 = rows, d2 = cols, d3 = tiles along cols; the grid is batch * row tiles * col tiles.
@compute @workgroup_size(16, 16)
fn main(@builtin(workgroup_id) wg: vec3u, @builtin(num_workgroups) groups: vec3u, @builtin(local_invocation_id) lid: vec3u) {
  let rows = params.d1;
  let cols = params.d2;
  let col_tiles = params.d3;
  let row_tiles = (rows + TILE - 1u) / TILE;
  let index = wg.x + wg.y * groups.x;
  if (index >= params.n * row_tiles * col_tiles) {
    return;
  }
  let tc = index % col_tiles;
  let tr = (index / col_tiles) % row_tiles;
  let b = index / (col_tiles * row_tiles);
  let base = b * rows * cols;
  let r = tr * TILE + lid.y;
  let c = tc * TILE + lid.x;
  if (r < rows && c < cols) {
    tile[lid.y * 17u + lid.x] = src[base + r * cols + c];
  }
  workgroupBarrier();
  // Write out[b, c', r'] with c' = tc * 16 + lid.y, r' = tr * 16 + lid.x: contiguous along r'.
  let oc = tc * TILE + lid.y;
  let orow = tr * TILE + lid.x;
  if (oc < cols && orow < rows) {
    out[base + oc * rows + orow] = tile[lid.x * 17u + lid.y];
  }
}
#else
@compute @workgroup_size(${WORKGROUP_SIZE})
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) groups: vec3u) {
  let i = gid.x + gid.y * groups.x * ${WORKGROUP_SIZE}u;
  if (i >= params.n) {
    return;
  }
  let i3 = i % params.d3;
  let t2 = i / params.d3;
  let i2 = t2 % params.d2;
  let t1 = t2 / params.d2;
  let i1 = t1 % params.d1;
  let i0 = t1 / params.d1;
  out[i] = src[dot(vec4u(i0, i1, i2, i3), params.strides)];
}
#endif
