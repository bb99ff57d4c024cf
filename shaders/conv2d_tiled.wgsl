// 2-D convolution on NCHW as an implicit GEMM, for convolutions wide enough to fill its tile
// (the SD VAE and UNet's 3×3 and 1×1 layers): out[n, co, p] = bias[co] + sum over k of
// w[co, k] * patch[k, p], where k runs over (ci, ky, kx) and patch[k, p] is the input value
// under filter tap k for output pixel p (zero in the padding) — the columns of im2col, built
// in workgroup memory a slice at a time, never whole. Same math and layout as conv2d.wgsl.
// A workgroup computes 64 * CO_VEC output channels x 64 pixels of one image; each invocation
// 4 * CO_VEC channels x 4 pixels (16 or 32 accumulators), so every value read from workgroup
// memory feeds 4 (CO_VEC 1) or 5.3 (CO_VEC 2) multiply-adds (conv2d.wgsl's one pixel x 4
// channels fed 4 per value read from memory, with no reuse of the input across channels beyond
// 16). Accumulation in f32.
// Defines: F16 (bool: f16 activations), W_F16 / W_BF16, B_F16 / B_BF16 (bool: stored forms),
// HAS_BIAS (bool), CO_VEC (u32, 1 or 2: vec4s of channels an invocation),
// WORKGROUP_SIZE (u32, must be 256 = 16 pixel lanes x 16 channel groups).

// @include conv2d_params

const CO_VEC = ${CO_VEC}u;
const TCO = 64u * CO_VEC;
const TPX = 64u;
const RK = 16u; // filter taps per slice

@group(0) @binding(0) var<storage, read> x: array<T>;
@group(0) @binding(1) var<storage, read> wt: array<u32>;
@group(0) @binding(2) var<storage, read> bias: array<u32>;
@group(0) @binding(3) var<storage, read_write> out: array<T>;
@group(0) @binding(4) var<uniform> params: Params;

var<workgroup> wsh: array<vec4f, 256 * ${CO_VEC}>; // [RK][TCO / 4]: 4 channels of one tap
var<workgroup> xsh: array<f32, 1024>; // [RK][TPX]

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
  let co0 = co_tile * TCO;
  let p0 = px_tile * TPX;
  let pixels = params.hout * params.wout;
  let khw = params.kh * params.kw;
  let taps = params.cin * khw;
  let plane = params.h * params.w;
  // Pixel lanes run along consecutive pixels (reads of xsh without bank conflicts, coalesced
  // writes); the 16 lanes of a channel quad read the same wsh entry (a broadcast).
  let lane = lid % 16u;
  let quad = lid / 16u; // channels co0 + (quad * CO_VEC + m) * 4 + i
  var acc: array<vec4f, 4 * ${CO_VEC}>; // [m * 4 + j]: pixel lane + 16 j, 4 channels

  for (var k0 = 0u; k0 < taps; k0 += RK) {
    // Filter slice: tap-contiguous reads (16 consecutive taps of a channel per 16 invocations).
    for (var e = lid; e < RK * TCO; e += ${WORKGROUP_SIZE}u) {
      let c = e / RK;
      let r = e % RK;
      let co = co0 + c;
      let k = k0 + r;
      var v = 0.0;
      if (co < params.cout && k < taps) {
        v = load_w(co * taps + k);
      }
      wsh[r * (TCO / 4u) + c / 4u][c % 4u] = v;
    }
    // Patch slice: pixel-contiguous reads.
    for (var e = lid; e < RK * TPX; e += ${WORKGROUP_SIZE}u) {
      let r = e / TPX;
      let pl = e % TPX;
      let p = p0 + pl;
      let k = k0 + r;
      var v = 0.0;
      if (p < pixels && k < taps) {
        let ci = k / khw;
        let tap = k % khw;
        let ky = tap / params.kw;
        let kx = tap % params.kw;
        let iy = i32((p / params.wout) * params.stride_h + ky * params.dil_h) - i32(params.pad_top);
        let ix = i32((p % params.wout) * params.stride_w + kx * params.dil_w) - i32(params.pad_left);
        if (iy >= 0 && iy < i32(params.h) && ix >= 0 && ix < i32(params.w)) {
          v = f32(x[(n * params.cin + ci) * plane + u32(iy) * params.w + u32(ix)]);
        }
      }
      xsh[e] = v;
    }
    workgroupBarrier();
    for (var r = 0u; r < RK; r++) {
      let xr = r * TPX + lane;
      let x0 = xsh[xr];
      let x1 = xsh[xr + 16u];
      let x2 = xsh[xr + 32u];
      let x3 = xsh[xr + 48u];
      for (var m = 0u; m < CO_VEC; m++) {
        let wv = wsh[r * (TCO / 4u) + quad * CO_VEC + m];
        acc[m * 4u] += x0 * wv;
        acc[m * 4u + 1u] += x1 * wv;
        acc[m * 4u + 2u] += x2 * wv;
        acc[m * 4u + 3u] += x3 * wv;
      }
    }
    workgroupBarrier();
  }

  for (var j = 0u; j < 4u; j++) {
    let p = p0 + lane + 16u * j;
    if (p >= pixels) {
      continue;
    }
    for (var i = 0u; i < 4u * CO_VEC; i++) {
      let co = co0 + quad * 4u * CO_VEC + i;
      if (co < params.cout) {
        var y = acc[(i / 4u) * 4u + j][i % 4u];
#if ${HAS_BIAS}
        y += load_b(co);
#endif
        out[(n * params.cout + co) * pixels + p] = T(y);
      }
    }
  }
}
