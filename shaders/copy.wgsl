// Byte-exact copy: dst bytes [dst_begin, dst_end) of the dst binding get the src bytes at
// (dst byte + delta) of the src binding. WebGPU's copyBufferToBuffer moves whole 4-byte words
// only; this kernel copies any byte range (an f16 tensor of odd length, a slice starting
// mid-word). Each invocation owns one destination word: it funnels the two source words that
// cover it and keeps the destination bytes outside the range (read, merge, write), so no two
// invocations ever write the same word.
// Defines: WORKGROUP_SIZE (u32).

struct Params {
  words: u32,
  first_word: u32,
  dst_begin: u32,
  dst_end: u32,
  delta: i32,
}

@group(0) @binding(0) var<storage, read> src: array<u32>;
@group(0) @binding(1) var<storage, read_write> dst: array<u32>;
@group(0) @binding(2) var<uniform> params: Params;

fn src_word(i: i32) -> u32 {
  if (i < 0 || u32(i) >= arrayLength(&src)) {
    return 0u;
  }
  return src[u32(i)];
}

@compute @workgroup_size(${WORKGROUP_SIZE})
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) groups: vec3u) {
  let k = gid.x + gid.y * groups.x * ${WORKGROUP_SIZE}u;
  if (k >= params.words) {
    return;
  }
  let w = params.first_word + k;
  let byte0 = 4u * w;
  let s = i32(byte0) + params.delta;
  let sw = s >> 2u;
  let sh = u32(s & 3) * 8u;
  let lo = src_word(sw);
  let hi = src_word(sw + 1);
  // A shift by 32 is a shift by 0 in WGSL: the aligned case takes lo alone.
  let v = select((lo >> sh) | (hi << (32u - sh)), lo, sh == 0u);
  var mask = 0u;
  for (var j = 0u; j < 4u; j++) {
    let p = byte0 + j;
    if (p >= params.dst_begin && p < params.dst_end) {
      mask |= 0xffu << (8u * j);
    }
  }
  if (mask == 0xffffffffu) {
    dst[w] = v;
  } else {
    dst[w] = (dst[w] & ~mask) | (v & mask);
  }
}
