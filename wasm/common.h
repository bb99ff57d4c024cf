// Shared definitions of the CPU device's WebAssembly kernels (wasm32, SIMD128, atomics).
// Freestanding: no libc. Every kernel is called by every thread of the pool with the same
// job pointer; threads take work items from an atomic counter in the job, so the split is
// dynamic and any thread count (1 included) gives the same result bit for bit (each output
// element is computed by exactly one thread in a fixed order).
#pragma once
#include <stddef.h>
#include <stdint.h>
#include <wasm_simd128.h>

#define EXPORT(name) __attribute__((export_name(#name), visibility("default")))
#define INLINE static inline __attribute__((always_inline))
#define NOINLINE static __attribute__((noinline))

typedef float f32;
typedef v128_t v128;

// Weight storage types (src/cpu/dtypes.ts mirrors these numbers).
enum {
  W_F32 = 0, W_F16 = 1, W_BF16 = 2, W_F8E4M3 = 3, W_F8E5M2 = 4,
  W_Q8_0 = 10, W_Q4_0 = 11, W_Q4_1 = 12, W_Q5_0 = 13, W_Q5_1 = 14,
  W_Q4_K = 15, W_Q5_K = 16, W_Q6_K = 17,
};

// Plain types are stored as panels of 8 rows: element (n, k) at ((n / 8) * K + k) * 8 + n % 8.
#define NR 8

INLINE int take(int32_t *counter) { return __atomic_fetch_add(counter, 1, __ATOMIC_RELAXED); }

INLINE f32 hsum(v128 v) {
  v = wasm_f32x4_add(v, wasm_i32x4_shuffle(v, v, 2, 3, 0, 1));
  v = wasm_f32x4_add(v, wasm_i32x4_shuffle(v, v, 1, 0, 3, 2));
  return wasm_f32x4_extract_lane(v, 0);
}

INLINE uint32_t rd16(const uint8_t *p) { return (uint32_t)p[0] | ((uint32_t)p[1] << 8); }
INLINE uint32_t rd32(const uint8_t *p) { return rd16(p) | (rd16(p + 2) << 16); }

INLINE f32 bits_f32(uint32_t u) { return __builtin_bit_cast(f32, u); }

/** IEEE half bits → float, exact (normals, subnormals, infinities, NaN). */
INLINE f32 f16_to_f32(uint32_t h) {
  uint32_t e = h & 0x7c00u;
  uint32_t m = (h & 0x7fffu) << 13;
  f32 v = bits_f32(m) * bits_f32(0x77800000u);  // × 2^112: rebias, subnormals included
  uint32_t u = __builtin_bit_cast(uint32_t, v);
  if (e == 0x7c00u) u |= 0x7f800000u;
  return bits_f32(u | ((h & 0x8000u) << 16));
}

/** Four halves (in the low 16 bits of each lane) → four floats, exact. */
INLINE v128 f16x4_to_f32(v128 h) {
  v128 m = wasm_i32x4_shl(wasm_v128_and(h, wasm_i32x4_splat(0x7fff)), 13);
  v128 v = wasm_f32x4_mul(m, wasm_i32x4_splat(0x77800000));
  v128 inf = wasm_i32x4_eq(wasm_v128_and(h, wasm_i32x4_splat(0x7c00)), wasm_i32x4_splat(0x7c00));
  v = wasm_v128_or(v, wasm_v128_and(inf, wasm_i32x4_splat(0x7f800000)));
  return wasm_v128_or(v, wasm_i32x4_shl(wasm_v128_and(h, wasm_i32x4_splat(0x8000)), 16));
}

/** fp8 e4m3fn bytes (low 8 bits of each lane) → floats, exact; 0x7f/0xff are NaN. */
INLINE v128 e4m3x4_to_f32(v128 b) {
  v128 mag = wasm_v128_and(b, wasm_i32x4_splat(0x7f));
  v128 v = wasm_f32x4_mul(wasm_i32x4_shl(mag, 20), wasm_i32x4_splat(0x7b800000));  // × 2^120
  v128 nan = wasm_i32x4_eq(mag, wasm_i32x4_splat(0x7f));
  v = wasm_v128_or(v, wasm_v128_and(nan, wasm_i32x4_splat(0x7fc00000)));
  return wasm_v128_or(v, wasm_i32x4_shl(wasm_v128_and(b, wasm_i32x4_splat(0x80)), 24));
}
