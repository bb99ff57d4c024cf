/**
 * The WGSL op library: every function records onto a KernelRecorder; nothing runs until
 * `rec.submit()`. See docs/ops.md for each op's weight dtypes, paths and variants.
 */
export { add } from './add.ts';
export { binary, mul, sub, div, broadcastPlan, type BinaryOp, type BroadcastPlan } from './binary.ts';
export { scale } from './scale.ts';
export { embedding } from './embedding.ts';
export { rmsNorm, type RmsNormOptions } from './rms-norm.ts';
export { layerNorm, type LayerNormOptions } from './layer-norm.ts';
export { groupNorm, type GroupNormOptions } from './group-norm.ts';
export { activation, gatedMlp, gatedMlpFused, swiglu, geglu, ACTIVATIONS, type ActivationKind } from './activation.ts';
export { concat, sliceAlong } from './concat.ts';
export { permute, transpose, permutePlan } from './transpose.ts';
export { copy, copyBytes } from './copy.ts';
export { conv2d, conv2dOutputShape, type Conv2dOptions, type Conv2dPadding } from './conv2d.ts';
export { upsampleNearest } from './upsample.ts';
export { timestepEmbedding, timestepTable, type TimestepEmbeddingOptions } from './timestep.ts';
export { adaLNModulate, gatedResidual, type VectorSlice, type ModulationOptions } from './adaln.ts';
export {
  linear, linearUsesGemv, linearKernel, linearPath, subgroupMatrixReady, LinearShapeError, MATMUL_TILES, SGMAT_TILES, GEMV_MAX_M, LINEAR_WEIGHT_DTYPES,
  type LinearOptions, type LinearInfo, type LinearWeightDtype, type MatmulTile, type SgmatTile,
} from './matmul.ts';
export { attention, attentionShape, attentionFlops, subgroupMatrixUnfit, type AttentionOptions, type AttentionRun, type AttentionKernel, type AttentionShape } from './attention.ts';
export { dropAttentionBuffers, type TensorView, type ViewInput } from './attention-common.ts';
export { softmax, type SoftmaxOptions } from './softmax.ts';
export {
  rope, ropeTable, ropeTableValues, fluxRopeTable, fluxRopeTableValues, ropeInvFreq, llama3InvFreq,
  type RopeTable, type RopeTableOptions, type RopeOptions,
} from './rope.ts';
export { t5RelativeBias, t5Bucket, t5BucketTable, type T5BiasOptions } from './t5-bias.ts';
export { kvCacheWrite, KvCache } from './kv-cache.ts';
export { packForSubgroupMatrix, releaseSgmatScratch, SGMAT_PACKED_TILES, type SgmatPackedWeight } from './matmul.ts';
