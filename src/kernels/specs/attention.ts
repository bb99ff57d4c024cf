import type { OpSpec } from './types.ts';

export const ATTENTION_OPS: readonly OpSpec[] = [
  {
    name: 'attention',
    summary: 'flash attention (online softmax, no score matrix): q/out [B, Lq, H, D], k/v [B, Lk, Hkv, D] or views; GQA, causal, additive mask, key padding, T5 relative bias, KV cache length, cross-attention, any scale',
    shaders: ['attention', 'attention_sgmat', 'attention_decode'],
    paths: ['f32', 'f16', 'subgroup-matrix'],
    variants: [
      'subgroup row reductions', 'workgroup-memory reductions (no subgroups)', 'head dim > 128 (output slices)',
      'split bindings: ranges and key chunks carrying state', '2-D dispatch', 'f16 (Deno on lavapipe)',
      'subgroup-matrix: direct loads with 32- and 64-key tiles, staged loads (checked against PyTorch and the CPU reference on H100 in bench/attention.ts)', 'subgroup-matrix → f16 fallback',
      'decode kernel (Lq = 1: a workgroup per batch and head; key chunks of 1024 with an online softmax)',
    ],
    reference: 'reference/attention.ts#attentionReference',
  },
  {
    name: 'softmax',
    summary: 'row-wise softmax of scale·x over the last dim, numerically stable; in place or not',
    shaders: ['softmax'],
    paths: ['f32', 'f16'],
    variants: ['subgroup reductions', 'workgroup-memory reductions', 'in place', 'split bindings', '2-D dispatch', 'f16 (Deno on lavapipe)'],
    reference: 'reference/softmax.ts#softmaxReference',
  },
  {
    name: 'rope',
    summary: 'rotary embeddings from host-side f64 cos/sin tables: rotate-half (Llama, Qwen2; offsets, per-token positions, partial dims, Llama 3 scaling) and interleaved multi-axis (FLUX ids)',
    shaders: ['rope'],
    paths: ['f32', 'f16'],
    variants: ['rotate-half', 'interleaved (FLUX)', 'in place', 'out of place', 'positions tensor', 'split bindings', '2-D dispatch', 'f16 (Deno on lavapipe)'],
    reference: 'reference/rope.ts#ropeReference',
  },
  {
    name: 't5_relative_bias',
    summary: 'T5 relative position bias, compact [H, Lq + Lk − 1] for attention\'s relativeBias; Hugging Face buckets (host), bidirectional or not',
    shaders: ['t5_bias'],
    weightDtypes: ['f32', 'f16', 'bf16'],
    paths: ['f32'],
    variants: ['f32, f16 and bf16 weights'],
    reference: 'reference/t5-bias.ts#t5RelativeBiasReference',
  },
  {
    name: 'kv_cache_write',
    summary: 'appends new key or value rows (or a fused-QKV view) to a [B, capacity, Hkv, D] cache at a position',
    shaders: ['kv_cache'],
    paths: ['f32', 'f16'],
    variants: ['views', 'split bindings', 'f16 (Deno on lavapipe)'],
    reference: 'reference/kv-cache.ts#kvCacheWriteReference',
  },
];
