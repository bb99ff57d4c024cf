// Included by both conv2d kernels (// @include conv2d_params): the activation type and the
// uniform struct the host fills the same way for either (ci_tile: the direct kernel's input
// channels a filter slice; the implicit GEMM ignores it).
#if ${F16}
enable f16;
alias T = f16;
#else
alias T = f32;
#endif

struct Params {
  batch: u32,
  cin: u32,
  h: u32,
  w: u32,
  cout: u32,
  hout: u32,
  wout: u32,
  kh: u32,
  kw: u32,
  stride_h: u32,
  stride_w: u32,
  pad_top: u32,
  pad_left: u32,
  dil_h: u32,
  dil_w: u32,
  ci_tile: u32,
  co_tiles: u32,
  px_tiles: u32,
}

// The image, channel tile and pixel tile of workgroup `index` (wg.x + wg.y * num_workgroups.x;
// a 2-D grid past the per-dimension limit), or none past the last.
struct ConvTile {
  valid: bool,
  n: u32,
  co_tile: u32,
  px_tile: u32,
}

fn conv_tile(index: u32) -> ConvTile {
  let rest = index / params.px_tiles;
  return ConvTile(index < params.batch * params.co_tiles * params.px_tiles, rest / params.co_tiles, rest % params.co_tiles, index % params.px_tiles);
}
