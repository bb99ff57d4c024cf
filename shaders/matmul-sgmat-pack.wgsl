// Packs a row-major [R, K] matrix (f32, f16 or bf16) into the subgroup-matrix tile layout that
// matmul-sgmat-packed.wgsl reads: 16×16 f16 blocks, each 512 contiguous bytes (row-major inside
// the block: element (r, k) at (r % 16)·16 + k % 16), blocks ordered [R/16][KB] with KB = K/16
// rounded up to a multiple of 4; rows and columns past R and K are zeros. Values are clamped to
// ±65504 (f16's range). One thread writes 8 halves (half a block row) as one vec4<u32>.
// Defines: SRC_F32, SRC_BF16 (bools; neither: f16), VEC (bool: f16 source with K % 8 == 0, read as vec4<u32>).
enable f16;

struct Params {
  rows: u32,
  k: u32,
  kb: u32,
  total: u32,
}

#if ${VEC}
@group(0) @binding(0) var<storage, read> src: array<vec4<u32>>;
#elif ${SRC_F32}
@group(0) @binding(0) var<storage, read> src: array<f32>;
#else
@group(0) @binding(0) var<storage, read> src: array<u32>;
#endif
@group(0) @binding(1) var<storage, read_write> dst: array<vec4<u32>>;
@group(0) @binding(2) var<uniform> params: Params;

#if ${VEC}
#else
fn elem(e: u32) -> f32 {
#if ${SRC_F32}
  return src[e];
#elif ${SRC_BF16}
  return bitcast<f32>((src[e >> 1u] >> ((e & 1u) * 16u)) << 16u);
#else
  return unpack2x16float(src[e >> 1u] >> ((e & 1u) * 16u)).x;
#endif
}

fn pack2(a: f32, b: f32) -> u32 {
  return pack2x16float(clamp(vec2<f32>(a, b), vec2<f32>(-65504.0), vec2<f32>(65504.0)));
}
#endif

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let i = (wid.x + wid.y * nwg.x) * 256u + lid;
  if (i >= params.total) {
    return;
  }
  let blk = i / 32u;
  let within = i % 32u;
  let r = (blk / params.kb) * 16u + within / 2u;
  let c = (blk % params.kb) * 16u + (within % 2u) * 8u;
  var v = vec4<u32>(0u);
  if (r < params.rows && c < params.k) {
#if ${VEC}
    v = src[(r * params.k + c) >> 3u];
#else
    var f: array<f32, 8>;
    for (var j = 0u; j < 8u; j++) {
      if (c + j < params.k) {
        f[j] = elem(r * params.k + c + j);
      }
    }
    v = vec4<u32>(pack2(f[0], f[1]), pack2(f[2], f[3]), pack2(f[4], f[5]), pack2(f[6], f[7]));
#endif
  }
  dst[i] = v;
}
