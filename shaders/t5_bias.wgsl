// T5 relative position bias, compact: out[h, r] = weight[bucket[r], h] for every relative
// position r = key − query + (Lq − 1), r < Lq + Lk − 1. The buckets (Hugging Face's
// _relative_position_bucket, float32 log arithmetic) come from the host as u32; attention reads
// bias(h, i, j) = out[h, j − i + Lq − 1], so the [H, Lq, Lk] bias never exists.
// Defines: WEIGHT_F16, WEIGHT_BF16 (bool): the stored form of relative_attention_bias.weight
// [buckets, H], f32 when both are false (read as u32 words and decoded here).
struct Params {
  heads: u32, rel: u32, pad0: u32, pad1: u32,
}

@group(0) @binding(0) var<storage, read> weight: array<u32>;
@group(0) @binding(1) var<storage, read> buckets: array<u32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@group(0) @binding(3) var<uniform> p: Params;

fn weight_at(i: u32) -> f32 {
#if ${WEIGHT_F16}
  return unpack2x16float(weight[i / 2u])[i % 2u];
#elif ${WEIGHT_BF16}
  let w = weight[i / 2u];
  return bitcast<f32>(select(w << 16u, w & 0xffff0000u, (i % 2u) == 1u));
#else
  return bitcast<f32>(weight[i]);
#endif
}

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let id = gid.x + gid.y * nwg.x * 256u;
  if (id >= p.heads * p.rel) {
    return;
  }
  let h = id / p.rel;
  let r = id % p.rel;
  out[id] = weight_at(buckets[r] * p.heads + h);
}
