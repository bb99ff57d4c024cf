// Activations, alone or gating an MLP. ACT picks the function:
//   0 gelu       x * Phi(x), Phi from our own erfc fit (below): GELU with erf, exact form
//   1 gelu_tanh  0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))): GPT-2's gelu_new, T5's gated-gelu
//   2 quick_gelu x * sigmoid(1.702 x): CLIP
//   3 silu       x * sigmoid(x): Llama, the VAE and UNet
// GATED = false: out[i] = act(x[i]). GATED = true: out[r, j] = act(gate[r, j]) * up[r, j] for
// j < cols, each operand read at its own offset and row stride, so one kernel serves separate
// gate/up tensors (Llama SwiGLU, T5 gated-gelu) and the two halves of one projection (diffusers
// GEGLU: hidden, gate = proj(x).chunk(2), out = hidden * gelu(gate)).
// WGSL may assume no infinities, so every exp argument is clamped to a finite range; in
// particular tanh is never evaluated: 0.5 (1 + tanh(u)) = sigmoid(2u), with x clamped to
// [-10, 10] inside u (past it the factor is 0 or 1 to f32 precision), so large |x| never meets
// an infinity or a NaN. Arithmetic is f32 whatever the storage.
// Defines: F16 (bool), ACT (u32), GATED (bool), WORKGROUP_SIZE (u32).
#if ${F16}
enable f16;
alias T = f16;
#else
alias T = f32;
#endif

const ACT = ${ACT}u;

struct Params {
  n: u32,
  cols: u32,
  gate_offset: u32,
  gate_stride: u32,
  up_offset: u32,
  up_stride: u32,
}

#if ${GATED}
@group(0) @binding(0) var<storage, read> gate: array<T>;
@group(0) @binding(1) var<storage, read> up: array<T>;
@group(0) @binding(2) var<storage, read_write> out: array<T>;
@group(0) @binding(3) var<uniform> params: Params;
#else
@group(0) @binding(0) var<storage, read> x: array<T>;
@group(0) @binding(1) var<storage, read_write> out: array<T>;
@group(0) @binding(2) var<uniform> params: Params;
#endif

// x * Phi(x), Phi(x) = 0.5 erfc(-x / sqrt 2). With h = 0.5 erfc(|x| / sqrt 2): Phi = h for x < 0
// (no cancellation, so the tail keeps its relative accuracy) and 1 - h for x >= 0.
// erfc(z) = t exp(-z^2 + P(t)), t = 1 / (1 + z / 2), P of degree 9 fitted by us (iteratively
// reweighted least squares, Chebyshev basis, against mpmath's erfc on z in [0, 10]). z^2 = x^2 / 2
// is formed from a 12-bit head of |x| (whose square is exact in f32) plus a correction, since
// rounding z^2 would cost 2 z^2 ulp of relative error in the tail.
// Error in f32 arithmetic (numpy model of these steps, 140001 points on [-14, 14]): |erf error|
// <= 3.6e-7, GELU relative error <= 4.5e-7 wherever |GELU| > 1e-30; the device's exp adds its own
// few ulp. Below x = -13 the result is below f32's normal range and is returned as 0.
fn gelu_erf(x: f32) -> f32 {
  let a = min(abs(x), 13.0);
  let z = a * 0.70710678118654752;
  let t = 1.0 / (1.0 + 0.5 * z);
  var p = 0.1421782523393631;
  p = p * t - 0.6659812331199646;
  p = p * t + 1.1222201585769653;
  p = p * t - 0.6510224938392639;
  p = p * t - 0.11696302145719528;
  p = p * t + 0.020283689722418785;
  p = p * t + 0.02832896262407303;
  p = p * t + 0.3879052996635437;
  p = p * t + 0.9984918832778931;
  p = p * t - 1.2654414176940918;
  let hi = bitcast<f32>(bitcast<u32>(a) & 0xfffff000u);
  let lo = a - hi;
  let h = 0.5 * t * exp(-0.5 * (hi * hi)) * exp(p - 0.5 * lo * (a + hi));
  // Below x = -13, x * Phi(x) is under 4e-38 in size: 0, whatever the device does with subnormals.
  return select(x * select(1.0 - h, h, x < 0.0), 0.0, x < -13.0);
}

// sigmoid(z), and exactly 0 below z = -80 (where it is under 2e-35), so that x * sigmoid(..)
// stays right for any finite x: WGSL may assume no infinities, and clamping alone would leave
// sigmoid(-80) = 1.8e-35 times an x as large as 3e38.
fn sigmoid(z: f32) -> f32 {
  return select(1.0 / (1.0 + exp(-clamp(z, -80.0, 80.0))), 0.0, z < -80.0);
}

fn act(x: f32) -> f32 {
  if (ACT == 0u) {
    return gelu_erf(x);
  }
  if (ACT == 1u) {
    let c = clamp(x, -10.0, 10.0);
    // 0.5 (1 + tanh(u)) = sigmoid(2u), 2u = 2 sqrt(2/pi) (c + 0.044715 c^3), in [-87.4, 87.4].
    return x * sigmoid(1.5957691216057308 * (c + 0.044715 * c * c * c));
  }
  if (ACT == 2u) {
    return x * sigmoid(1.702 * x);
  }
  return x * sigmoid(x);
}

@compute @workgroup_size(${WORKGROUP_SIZE})
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) groups: vec3u) {
  let i = gid.x + gid.y * groups.x * ${WORKGROUP_SIZE}u;
  if (i >= params.n) {
    return;
  }
#if ${GATED}
  let r = i / params.cols;
  let j = i - r * params.cols;
  let g = f32(gate[r * params.gate_stride + params.gate_offset + j]);
  let u = f32(up[r * params.up_stride + params.up_offset + j]);
  out[i] = T(act(g) * u);
#else
  out[i] = T(act(f32(x[i])));
#endif
}
