// out = a OP b with NumPy broadcasting, up to 4 dimensions after merging: residual adds, biases
// along rows, per-channel terms in NCHW, per-batch rows. OP: 0 add, 1 sub, 2 mul, 3 div.
// a and out are activations (T); b is read in a stored form from u32 words (f32 bits, or two
// f16/bf16 halves per word), so it can be an f32 or f16 activation or a weight (a bias) kept as
// f16 or bf16. With BROADCAST the linear output index is split into 4 coordinates (out's
// merged shape) and each operand has its own strides (0 where it broadcasts).
// Defines: F16 (bool: a and out are f16), B_F16 / B_BF16 (bool: b's stored form, f32 otherwise),
// OP (u32), BROADCAST (bool), WORKGROUP_SIZE (u32).
#if ${F16}
enable f16;
alias T = f16;
#else
alias T = f32;
#endif

const OP = ${OP}u;

struct Params {
  n: u32,
  d1: u32,
  d2: u32,
  d3: u32,
  a_strides: vec4u,
  b_strides: vec4u,
}

@group(0) @binding(0) var<storage, read> a: array<T>;
@group(0) @binding(1) var<storage, read> bias: array<u32>;
@group(0) @binding(2) var<storage, read_write> out: array<T>;
@group(0) @binding(3) var<uniform> params: Params;

// @include stored_bias

@compute @workgroup_size(${WORKGROUP_SIZE})
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) groups: vec3u) {
  let i = gid.x + gid.y * groups.x * ${WORKGROUP_SIZE}u;
  if (i >= params.n) {
    return;
  }
#if ${BROADCAST}
  let i3 = i % params.d3;
  let t2 = i / params.d3;
  let i2 = t2 % params.d2;
  let t1 = t2 / params.d2;
  let i1 = t1 % params.d1;
  let i0 = t1 / params.d1;
  let c = vec4u(i0, i1, i2, i3);
  let ai = dot(c, params.a_strides);
  let bi = dot(c, params.b_strides);
#else
  let ai = i;
  let bi = i;
#endif
  let x = f32(a[ai]);
  let y = load_b(bi);
  var r: f32;
  if (OP == 0u) {
    r = x + y;
  } else if (OP == 1u) {
    r = x - y;
  } else if (OP == 2u) {
    r = x * y;
  } else {
    r = x / y;
  }
  out[i] = T(r);
}
