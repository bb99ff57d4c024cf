/**
 * MultiGPU-Web: one API for Node, Deno and the browser.
 */
// Kept in the emitted index.d.ts: the public types use WebGPU's (GPUDevice, GPUBuffer) and Symbol.asyncDispose.
/// <reference types="@webgpu/types" preserve="true" />
/// <reference lib="esnext.disposable" preserve="true" />
export { MultiGpuError, UsageError } from './errors.ts';
export * from './devices/index.ts';
export { parseByteSize, formatBytes, InvalidByteSizeError } from './allocation/bytes.ts';
export { selfTest, type SelfTestResult } from './kernels/self-test.ts';
export { computePipeline, ShaderCompileError } from './kernels/pipelines.ts';
export { KernelRecorder, type Binding } from './kernels/recorder.ts';
export { GpuTensor, uploadTensor, emptyTensor, downloadF32, downloadBytes, GPU_DTYPE_LAYOUT, type GpuDtype } from './kernels/tensor.ts';
export { kernelLimits, overrideKernelLimits, bindingChunks, type KernelLimits } from './kernels/limits.ts';
export { bestPath, pathSupport, type KernelPath } from './kernels/paths.ts';
export { OPS, opSpec, opsMarkdown } from './kernels/registry.ts';
export * as ops from './kernels/ops/index.ts';
export { kernelSource, preprocessWgsl, ShaderDefineError, type ShaderName, type ShaderDefines } from './kernels/shaders.ts';
export * from './allocation/errors.ts';
export { parseAllocation, parseDonors, type ParsedAllocation, type AllocationEntry, type AllocationAmount } from './allocation/grammar.ts';
export { plan, PlanCapacityError, defaultReserve, type Plan, type PlanOptions, type PlanDevice, type BlockPlacement, type DevicePlan, type ExecutionMode, type BlockExec, type StorageForm } from './allocation/planner.ts';
export { DEFAULT_COST_MODEL, type CostModel } from './allocation/cost-model.ts';
export { WeightSet, type WeightTensor } from './formats/weights.ts';
export { openWeights, openFolder, type OpenWeightsOptions } from './formats/open-weights.ts';
export { SafetensorsFile, openSafetensors } from './formats/safetensors.ts';
export { encodeSafetensors, writeSafetensorsFile, type TensorToWrite } from './formats/safetensors-writer.ts';
export { GgufFile, openGguf } from './formats/gguf/index.ts';
export { splitComfyCheckpoint, isComfyCheckpoint, type CheckpointComponent } from './formats/comfyui.ts';
export { blobFolder, nodeFolder, type FileProvider } from './formats/folder.ts';
export { bytesSource, fileSource, blobSource, httpSource, type ByteSource } from './formats/source.ts';
export { WeightsFormatError, WeightsNotFoundError } from './formats/errors.ts';
export { defaultAllocator, CountingAllocator, type ByteAllocator } from './formats/allocator.ts';
export { blockMapOf, MODEL_FAMILIES } from './models/registry.ts';
export { UnknownModelError, UnmappedTensorsError, type Block, type BlockMap, type ModelFamily } from './models/blocks.ts';
export * from './cpu/index.ts';
export { loadTokenizer, tokenizerFromFolder, TokenizerError, type TextTokenizer, type DecodeStream, type DecodeOptions } from './text/tokenizer.ts';
export { loadModel, LoadedModel, ModelInputError, type LoadOptions, type ForwardResult, type GenerateResult, type DecodeHostCost } from './runtime/model.ts';
export { ModelGraphError, type RunStats } from './runtime/scheduler.ts';
export { RuntimeShapeError } from './runtime/shapes.ts';
export type { Backend, Tensor, Weight, RopeSpec, AttentionOptions as BackendAttentionOptions, KvCacheHandle } from './runtime/backend.ts';
export type { ModelDefinition, Step, StepContext, HostTensor, CanonicalTensor, EntryDefinition } from './models/program.ts';
export { definitionOf } from './models/definitions.ts';
export { ModelManager, ManagerCapacityError, ModelUnusableError, UnknownManagedModelError, allocationWithout, type ManagerOptions, type ManagedLoadOptions, type ManagedModelInfo } from './manager/index.ts';
