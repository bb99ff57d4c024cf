/** The CPU device's WebAssembly kernels (SIMD, worker threads). */
export {
  CpuKernels, CpuWeight, CpuKernelError, CpuMemoryFullError, threadsUnavailableReason,
  type CpuKernelsOptions, type LinearCallOptions, type CpuMemoryInfo, type CpuActivation, type CpuBinaryOp, type CpuModulation,
  type CpuAttentionOptions, type CpuRopeOptions, type CpuConv2dGeometry, type CpuSlice, type CpuT5Buckets, type CpuTimestepOptions,
  t5RelativeBiasTable,
} from './kernels.ts';
export { CPU_WEIGHT_DTYPES, CPU_WEIGHT_LAYOUT, isCpuWeightDtype, storedWeightBytes, residentWeightBytes, type CpuWeightDtype } from './dtypes.ts';
