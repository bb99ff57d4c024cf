// AdaLN pieces for FLUX-style blocks, on x viewed as [rows, cols] with rows grouped in batches of
// rows_per_batch, and per-batch vectors read at (batch * stride + offset + col) in a modulation
// tensor (one projection's output holds shift, scale and gate for every batch row):
//   GATED = false: out = x * (1 + scale[batch]) + shift[batch]        (vector a = shift, b = scale)
//   GATED = true:  out = x + gate[batch] * y                         (vector a = gate; the residual)
// Arithmetic in f32; all tensors in one activation dtype.
// Defines: F16 (bool), GATED (bool), WORKGROUP_SIZE (u32).
#if ${F16}
enable f16;
alias T = f16;
#else
alias T = f32;
#endif

struct Params {
  n: u32,
  cols: u32,
  rows_per_batch: u32,
  a_offset: u32,
  a_stride: u32,
  b_offset: u32,
  b_stride: u32,
}

@group(0) @binding(0) var<storage, read> x: array<T>;
#if ${GATED}
@group(0) @binding(1) var<storage, read> y: array<T>;
@group(0) @binding(2) var<storage, read> gate: array<T>;
#else
@group(0) @binding(1) var<storage, read> shift: array<T>;
@group(0) @binding(2) var<storage, read> scale: array<T>;
#endif
@group(0) @binding(3) var<storage, read_write> out: array<T>;
@group(0) @binding(4) var<uniform> params: Params;

@compute @workgroup_size(${WORKGROUP_SIZE})
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) groups: vec3u) {
  let i = gid.x + gid.y * groups.x * ${WORKGROUP_SIZE}u;
  if (i >= params.n) {
    return;
  }
  let row = i / params.cols;
  let c = i - row * params.cols;
  let batch = row / params.rows_per_batch;
#if ${GATED}
  let g = f32(gate[batch * params.a_stride + params.a_offset + c]);
  out[i] = T(f32(x[i]) + g * f32(y[i]));
#else
  let sh = f32(shift[batch * params.a_stride + params.a_offset + c]);
  let sc = f32(scale[batch * params.b_stride + params.b_offset + c]);
  out[i] = T(f32(x[i]) * (1.0 + sc) + sh);
#endif
}
