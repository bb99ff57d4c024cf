import type { OpSpec } from './types.ts';

export const MATMUL_OPS: readonly OpSpec[] = [
  {
    name: 'linear',
    summary: 'nn.Linear: out = x·wᵀ·scale + bias, weights read and dequantized in their stored form; GEMV for M ≤ 4 (decode), register tiles or tensor cores above',
    shaders: ['gemv', 'matmul', 'matmul-sgmat', 'matmul-sgmat-packed', 'matmul-sgmat-pack'],
    weightDtypes: ['f32', 'f16', 'bf16', 'f8_e4m3', 'f8_e5m2', 'q8_0', 'q4_0', 'q4_1', 'q5_0', 'q5_1', 'q4_k', 'q5_k', 'q6_k'],
    paths: ['f32', 'f16', 'subgroup-matrix'],
    variants: [
      'GEMV: subgroupAdd or workgroup-memory reduction; 1/2/4/8 rows × 64/128/256 threads; 16-byte chunks, scalar (odd K), GGUF blocks',
      'tiled: 128x128, 128x128-k16, 64x64, 32x32; K % 4 ≠ 0',
      'subgroup-matrix: 128x128, 64x64, 128x256 (shared, any weights); 128x256, 128x128, 64x64 (direct, f16 x and weights)',
      'subgroup-matrix packed (weights from packForSubgroupMatrix: f16/bf16/f32 packed once into 16×16 f16 blocks; x packed by a pre-pass; any M, N, K): 128x128-w4-u2 (default), 128x128-w4, 128x128-w4-np, 128x128-w4-g16, 128x256, 128x256-u2, 128x256-np, 256x128, 256x128-u2, 128x128, 128x128-u4, 64x256-w4, 64x128-w4',
      'weights split over bindings (lowered maxStorageBufferBindingSize)',
      '2-D grids (lowered maxComputeWorkgroupsPerDimension)',
      'f16 (Deno on lavapipe); subgroup-matrix (checked on an H100 by bench/matmul.ts before it times anything)',
    ],
    reference: 'reference/matmul.ts#linearReference',
  },
];
