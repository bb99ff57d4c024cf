// 2-D convolution on NCHW: out[n, co, oy, ox] = bias[co] + sum over ci, ky, kx of
// w[co, ci, ky, kx] * x[n, ci, oy * sh + ky * dh - pad_top, ox * sw + kx * dw - pad_left],
// zero outside the input. The padding after the input (bottom, right) only sets hout and wout on
// the host, so asymmetric pads such as the VAE downsampler's (0, 1, 0, 1) with stride 2 are one
// dispatch. The filter and bias stay in their stored form (f32 bits, or f16/bf16 halves).
// A workgroup computes 16 output channels x 64 output pixels of one image: each invocation one
// pixel and 4 channels. The filter slice of those 16 channels for ci_tile input channels
// (ci_tile * kh * kw <= 64 values per channel) is staged in workgroup memory; every input value
// read from memory feeds 4 multiply-adds. Accumulation in f32.
// Defines: F16 (bool: f16 activations), W_F16 / W_BF16, B_F16 / B_BF16 (bool: stored forms),
// HAS_BIAS (bool), WORKGROUP_SIZE (u32, must be 256 = 64 pixels x 4 channel quads).

// @include conv2d_params

const TCO = 16u;
const TPX = 64u;
const RMAX = 64u;

@group(0) @binding(0) var<storage, read> x: array<T>;
@group(0) @binding(1) var<storage, read> wt: array<u32>;
@group(0) @binding(2) var<storage, read> bias: array<u32>;
@group(0) @binding(3) var<storage, read_write> out: array<T>;
@group(0) @binding(4) var<uniform> params: Params;

var<workgroup> wsh: array<f32, 1024>; // [TCO][RMAX]

// @include stored_weight
// @include stored_bias

@compute @workgroup_size(${WORKGROUP_SIZE})
fn main(@builtin(workgroup_id) wg: vec3u, @builtin(num_workgroups) groups: vec3u,
  @builtin(local_invocation_index) lid: u32) {
  _ = arrayLength(&bias);
  let tile = conv_tile(wg.x + wg.y * groups.x);
  if (!tile.valid) {
    return;
  }
  let n = tile.n;
  let co_tile = tile.co_tile;
  let px_tile = tile.px_tile;
  let quad = lid / TPX;
  let p = px_tile * TPX + lid % TPX;
  let valid = p < params.hout * params.wout;
  let oy = p / params.wout;
  let ox = p % params.wout;
  let co0 = co_tile * TCO;
  let khw = params.kh * params.kw;
  let iy0 = i32(oy * params.stride_h) - i32(params.pad_top);
  let ix0 = i32(ox * params.stride_w) - i32(params.pad_left);
  let plane = params.h * params.w;
  var acc = vec4f(0.0);
  for (var ci0 = 0u; ci0 < params.cin; ci0 += params.ci_tile) {
    let cis = min(params.ci_tile, params.cin - ci0);
    let rlen = cis * khw;
    // w[co, ci0 + r / khw, ...] sits at (co * cin + ci0) * khw + r.
    for (var e = lid; e < TCO * RMAX; e += ${WORKGROUP_SIZE}u) {
      let co = co0 + e / RMAX;
      let r = e % RMAX;
      var v = 0.0;
      if (r < rlen && co < params.cout) {
        v = load_w((co * params.cin + ci0) * khw + r);
      }
      wsh[e] = v;
    }
    workgroupBarrier();
    if (valid) {
      for (var cl = 0u; cl < cis; cl++) {
        let xbase = (n * params.cin + ci0 + cl) * plane;
        for (var ky = 0u; ky < params.kh; ky++) {
          let iy = iy0 + i32(ky * params.dil_h);
          if (iy < 0 || iy >= i32(params.h)) {
            continue;
          }
          for (var kx = 0u; kx < params.kw; kx++) {
            let ix = ix0 + i32(kx * params.dil_w);
            if (ix < 0 || ix >= i32(params.w)) {
              continue;
            }
            let v = f32(x[xbase + u32(iy) * params.w + u32(ix)]);
            let r = cl * khw + ky * params.kw + kx;
            let q = quad * 4u * RMAX + r;
            acc += v * vec4f(wsh[q], wsh[q + RMAX], wsh[q + 2u * RMAX], wsh[q + 3u * RMAX]);
          }
        }
      }
    }
    workgroupBarrier();
  }
  if (!valid) {
    return;
  }
  for (var k = 0u; k < 4u; k++) {
    let co = co0 + quad * 4u + k;
    if (co < params.cout) {
      var y = acc[k];
#if ${HAS_BIAS}
      y += load_b(co);
#endif
      out[((n * params.cout + co) * params.hout + oy) * params.wout + ox] = T(y);
    }
  }
}
