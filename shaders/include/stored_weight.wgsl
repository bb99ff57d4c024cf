// Included by kernels that read a weight in its stored form (// @include stored_weight): the
// kernel binds it as `wt: array<u32>` and sets W_F16 / W_BF16 (both false: f32 bits). f16 and
// bf16 hold two elements a word, element i in word i >> 1, the high half when i is odd.
fn load_w(i: u32) -> f32 {
#if ${W_F16}
  let pair = unpack2x16float(wt[i >> 1u]);
  return select(pair.x, pair.y, (i & 1u) == 1u);
#elif ${W_BF16}
  let word = wt[i >> 1u];
  return bitcast<f32>(select(word << 16u, word & 0xffff0000u, (i & 1u) == 1u));
#else
  return bitcast<f32>(wt[i]);
#endif
}
