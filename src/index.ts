/**
 * MultiGPU-Web: one API for Node, Deno and the browser.
 */
export { MultiGpuError, UsageError } from './errors.ts';
export * from './devices/index.ts';
export { parseByteSize, formatBytes, InvalidByteSizeError } from './allocation/bytes.ts';
export { selfTest, type SelfTestResult } from './kernels/self-test.ts';
export { computePipeline, ShaderCompileError } from './kernels/pipelines.ts';
export { kernelSource, preprocessWgsl, ShaderDefineError, type ShaderName, type ShaderDefines } from './kernels/shaders.ts';
