import type { OpSpec } from './types.ts';

// Every non-matmul, non-attention op: elementwise, norms, activations, layout, conv, embeddings.
// Reductions (the norms) run subgroupAdd where the device compiles it (`subgroups` feature and
// WGSL's subgroup_id), else a tree in workgroup memory; the tests force both. Every kernel
// rebuilds its linear index from a 2-D grid past maxComputeWorkgroupsPerDimension.
const NORM_VARIANTS = ['subgroups', 'workgroup-memory reduction', '2-D grid', 'weights f32/f16/bf16', 'f16 (Deno on lavapipe)'];
const ELEMENTWISE_VARIANTS = ['2-D grid', 'f16 (Deno on lavapipe)'];
const WEIGHTS = ['f32', 'f16', 'bf16'] as const;

export const ELEMENTWISE_OPS: readonly OpSpec[] = [
  {
    name: 'add', summary: 'out = a + b, element-wise; broadcasting goes through binary', shaders: ['add', 'binary'], paths: ['f32', 'f16'],
    variants: ['broadcast', 'f16 (Deno on lavapipe)'], reference: 'reference/add.ts#addReference',
  },
  {
    name: 'binary', summary: 'out = a (+ − × ÷) b with NumPy broadcasting up to 4 merged dims; b may be a bias stored as f16/bf16',
    shaders: ['binary'], weightDtypes: WEIGHTS, paths: ['f32', 'f16'], variants: ['flat', 'broadcast (rows, NCHW channels, batch rows)', 'b f32/f16/bf16', '2-D grid', 'f16 (Deno on lavapipe)'],
    reference: 'reference/binary.ts#binaryReference',
  },
  {
    name: 'scale', summary: 'out = x·s + b, scalars', shaders: ['scale'], paths: ['f32', 'f16'], variants: ELEMENTWISE_VARIANTS,
    reference: 'reference/scale.ts#scaleReference',
  },
  {
    name: 'embedding', summary: 'token ids (i32) → rows of a table kept in its stored form; tables past one binding split over bindings',
    shaders: ['embedding'], weightDtypes: WEIGHTS, paths: ['f32', 'f16'], variants: ['table f32/f16/bf16', 'split bindings', 'out-of-range ids → 0', '2-D grid', 'f16 (Deno on lavapipe)'],
    reference: 'reference/embedding.ts#embeddingReference',
  },
  {
    name: 'rms_norm', summary: 'RMSNorm over the last dim (Llama, T5: no mean, weight only)', shaders: ['rms_norm'], weightDtypes: WEIGHTS,
    paths: ['f32', 'f16'], variants: NORM_VARIANTS, reference: 'reference/rms-norm.ts#rmsNormReference',
  },
  {
    name: 'layer_norm', summary: 'LayerNorm over the last dim, weight and bias optional, AdaLN modulation fusable',
    shaders: ['layer_norm'], weightDtypes: WEIGHTS, paths: ['f32', 'f16'], variants: [...NORM_VARIANTS, 'no affine', 'fused AdaLN'],
    reference: 'reference/layer-norm.ts#layerNormReference',
  },
  {
    name: 'group_norm', summary: 'GroupNorm on NCHW (32 groups in the SD VAE/UNet), SiLU fusable', shaders: ['group_norm_stats', 'group_norm'], weightDtypes: WEIGHTS,
    paths: ['f32', 'f16'], variants: [...NORM_VARIANTS, 'fused SiLU'], reference: 'reference/group-norm.ts#groupNormReference',
  },
  {
    name: 'gelu', summary: 'GELU with erf (own erfc fit: |erf error| ≤ 3.6e-7, GELU relative ≤ 4.5e-7 in f32 arithmetic)', shaders: ['activation'],
    paths: ['f32', 'f16'], variants: ELEMENTWISE_VARIANTS, reference: 'reference/activation.ts#gelu64',
  },
  {
    name: 'gelu_tanh', summary: 'GELU, tanh approximation (gelu_new), as 1/(1+exp(−2u)) with x clamped: finite at any |x|', shaders: ['activation'],
    paths: ['f32', 'f16'], variants: ELEMENTWISE_VARIANTS, reference: 'reference/activation.ts#geluTanh64',
  },
  {
    name: 'quick_gelu', summary: 'x·sigmoid(1.702x) (CLIP)', shaders: ['activation'], paths: ['f32', 'f16'], variants: ELEMENTWISE_VARIANTS,
    reference: 'reference/activation.ts#quickGelu64',
  },
  {
    name: 'silu', summary: 'x·sigmoid(x)', shaders: ['activation'], paths: ['f32', 'f16'], variants: ELEMENTWISE_VARIANTS,
    reference: 'reference/activation.ts#silu64',
  },
  {
    name: 'gated_mlp', summary: 'act(gate)·up: SwiGLU (Llama), gated-gelu (T5), GEGLU (diffusers: halves of one projection)',
    shaders: ['activation'], paths: ['f32', 'f16'], variants: ['separate gate/up', 'fused halves, gate first/second', '2-D grid', 'f16 (Deno on lavapipe)'],
    reference: 'reference/activation.ts#gatedMlpReference',
  },
  {
    name: 'concat', summary: 'concatenation along any dim (bits: 4-byte dtypes, f16)', shaders: ['concat'], paths: ['f32', 'f16'],
    variants: ELEMENTWISE_VARIANTS, reference: 'reference/concat.ts#concatReference',
  },
  {
    name: 'transpose', summary: 'permutes up to 4 merged dims ([B,L,H,D]↔[B,H,L,D], NCHW↔NHWC); batched 2-D transposes tiled',
    shaders: ['transpose'], paths: ['f32', 'f16'], variants: ['gather', 'tiled 2-D', '2-D grid', 'f16 (Deno on lavapipe)'],
    reference: 'reference/transpose.ts#permuteReference',
  },
  {
    name: 'copy', summary: 'byte-exact copy of any range (odd-length f16, mid-word offsets), split over bindings when large',
    shaders: ['copy'], paths: ['f32', 'f16'], variants: ['odd byte offsets and lengths', 'split bindings', '2-D grid'],
    reference: 'reference/copy.ts#copyBytesReference',
  },
  {
    name: 'conv2d', summary: 'NCHW convolution: 3×3 pad 1, 1×1, stride 2 with asymmetric pad (VAE downsampler), bias optional',
    shaders: ['conv2d', 'conv2d_tiled'], weightDtypes: WEIGHTS, paths: ['f32', 'f16'], variants: ['3×3', '1×1', 'stride 2 pad (0,1,0,1)', 'dilation', 'weights f32/f16/bf16', '2-D grid', 'f16 (Deno on lavapipe)', 'implicit GEMM (64 × 64 tile) for ≥ 48 output channels'],
    reference: 'reference/conv2d.ts#conv2dReference',
  },
  {
    name: 'upsample_nearest', summary: 'nearest upsampling by integer factors (Upsample2D ×2)', shaders: ['upsample'], paths: ['f32', 'f16'],
    variants: ELEMENTWISE_VARIANTS, reference: 'reference/upsample.ts#upsampleNearestReference',
  },
  {
    name: 'timestep_embedding', summary: 'sinusoidal timestep embedding (diffusers), table from host f64 trig, placed by the kernel',
    shaders: ['timestep'], paths: ['f32', 'f16'], variants: ['flip_sin_to_cos', 'downscale_freq_shift', 'FLUX ×1000', 'CUDA or CPU exponent rounding', 'odd dim', 'several dispatches', 'f16 (Deno on lavapipe)'],
    reference: 'reference/timestep.ts#timestepEmbeddingReference',
  },
  {
    name: 'adaln', summary: 'AdaLN modulation x·(1+scale)+shift and gated residual x+gate·y, per-batch vectors from one projection',
    shaders: ['adaln'], paths: ['f32', 'f16'], variants: ['modulate', 'gated residual', '2-D grid', 'f16 (Deno on lavapipe)'],
    reference: 'reference/adaln.ts#adaLNModulateReference',
  },
];
