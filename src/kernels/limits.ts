import type { GpuDevice } from '../devices/gpu-device.ts';

/**
 * The device limits kernels plan around. Overridable per device so the tests on SwiftShader
 * exercise the paths real models need on real GPUs: tensors split over several bindings,
 * 2-D dispatch grids.
 */
export interface KernelLimits {
  readonly maxStorageBufferBindingSize: number;
  readonly maxComputeWorkgroupsPerDimension: number;
  readonly minStorageBufferOffsetAlignment: number;
  readonly maxComputeWorkgroupStorageSize: number;
  readonly maxComputeInvocationsPerWorkgroup: number;
}

const overrides = new WeakMap<GpuDevice, Partial<KernelLimits>>();

export function kernelLimits(gpu: GpuDevice): KernelLimits {
  const l = gpu.limits;
  return {
    maxStorageBufferBindingSize: l.maxStorageBufferBindingSize,
    maxComputeWorkgroupsPerDimension: l.maxComputeWorkgroupsPerDimension,
    minStorageBufferOffsetAlignment: l.minStorageBufferOffsetAlignment,
    maxComputeWorkgroupStorageSize: l.maxComputeWorkgroupStorageSize,
    maxComputeInvocationsPerWorkgroup: l.maxComputeInvocationsPerWorkgroup,
    ...overrides.get(gpu),
  };
}

/** Lowers limits for this device (tests); pass {} to restore the adapter's own. */
export function overrideKernelLimits(gpu: GpuDevice, limits: Partial<KernelLimits>): void {
  const l = gpu.limits;
  for (const [key, value] of Object.entries(limits)) {
    const real = (l as unknown as Record<string, number>)[key];
    if (value !== undefined && real !== undefined && value > real) {
      throw new RangeError(`kernel limit ${key}=${value} is above the device's own ${real}`);
    }
  }
  overrides.set(gpu, limits);
}

/**
 * Splits `count` items of `itemBytes` each into runs whose bytes fit one binding and whose
 * offsets respect the alignment: how ops bind tensors larger than one binding allows.
 */
export function bindingChunks(count: number, itemBytes: number, limits: KernelLimits): Array<{ first: number; count: number }> {
  const maxItems = Math.floor(limits.maxStorageBufferBindingSize / itemBytes);
  if (maxItems < 1) throw new RangeError(`one item of ${itemBytes} bytes is larger than a binding (${limits.maxStorageBufferBindingSize})`);
  // Chunk starts must sit on the offset alignment: round the chunk length down to a multiple of it.
  const alignItems = limits.minStorageBufferOffsetAlignment / gcd(limits.minStorageBufferOffsetAlignment, itemBytes);
  const per = count <= maxItems ? count : Math.max(alignItems, Math.floor(maxItems / alignItems) * alignItems);
  const chunks: Array<{ first: number; count: number }> = [];
  for (let first = 0; first < count; first += per) chunks.push({ first, count: Math.min(per, count - first) });
  return chunks.length ? chunks : [{ first: 0, count: 0 }];
}

function gcd(a: number, b: number): number {
  return b === 0 ? a : gcd(b, a % b);
}
