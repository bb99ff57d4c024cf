import { WebGpuUnavailableError } from './errors.ts';
import { PCI_VENDORS } from './pci.ts';

/** Names of the numeric limits an adapter reports (WebIDL getters live on the prototype). */
export function limitNames(limits: GPUSupportedLimits): string[] {
  const names = new Set<string>();
  for (let proto: object | null = limits; proto && proto !== Object.prototype; proto = Object.getPrototypeOf(proto)) {
    for (const key of Object.getOwnPropertyNames(proto)) names.add(key);
  }
  // eslint-disable-next-line guard-for-in
  for (const key in limits) names.add(key);
  return [...names].filter((key) => typeof (limits as unknown as Record<string, unknown>)[key] === 'number').sort();
}

export function maxLimits(adapter: GPUAdapter): Record<string, number> {
  const limits = adapter.limits as unknown as Record<string, number>;
  return Object.fromEntries(limitNames(adapter.limits).map((key) => [key, limits[key]!]));
}

/**
 * Every device asks for its adapter's maximum limits (large weight buffers need
 * maxBufferSize and maxStorageBufferBindingSize far above the defaults) and every feature
 * the adapter has (shader-f16, subgroups, timestamp queries, subgroup matrices).
 */
export async function requestMaxDevice(adapter: GPUAdapter, label: string): Promise<GPUDevice> {
  const requiredFeatures = [...adapter.features] as GPUFeatureName[];
  try {
    return await adapter.requestDevice({ label, requiredFeatures, requiredLimits: maxLimits(adapter) });
  } catch (cause) {
    throw new WebGpuUnavailableError(`${label}: the adapter refused a device with its own maximum limits and features`, {
      cause,
      hint: 'update the GPU driver or the browser; if it persists, report the adapter and this message',
    });
  }
}

/** "nvidia" from Dawn; Deno's wgpu gives the PCI vendor id in decimal ("4318"). */
export function vendorName(vendor: string): string {
  if (/^\d+$/.test(vendor)) return PCI_VENDORS[Number(vendor)] ?? `0x${Number(vendor).toString(16).padStart(4, '0')}`;
  if (/^0x[0-9a-f]+$/i.test(vendor)) return PCI_VENDORS[Number.parseInt(vendor, 16)] ?? vendor.toLowerCase();
  return vendor.toLowerCase();
}

/** True for CPU implementations (SwiftShader, lavapipe, WARP): numbered after real GPUs. */
export function isSoftwareAdapter(info: GPUAdapterInfo): boolean {
  const fallback = (info as { isFallbackAdapter?: boolean }).isFallbackAdapter === true;
  return fallback || /swiftshader|llvmpipe|lavapipe|warp|basic render/i.test(`${info.architecture} ${info.description} ${info.device}`);
}
