// Included by kernels that read a bias in its stored form (// @include stored_bias): the
// kernel binds it as `bias: array<u32>` and sets B_F16 / B_BF16 (both false: f32 bits). f16 and
// bf16 hold two elements a word, element i in word i >> 1, the high half when i is odd.
fn load_b(i: u32) -> f32 {
#if ${B_F16}
  let pair = unpack2x16float(bias[i >> 1u]);
  return select(pair.x, pair.y, (i & 1u) == 1u);
#elif ${B_BF16}
  let word = bias[i >> 1u];
  return bitcast<f32>(select(word << 16u, word & 0xffff0000u, (i & 1u) == 1u));
#else
  return bitcast<f32>(bias[i]);
#endif
}
