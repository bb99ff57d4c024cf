import { parseByteSize } from '../allocation/bytes.ts';
import { canonicalDeviceName, parseDeviceName } from './names.ts';
import type { PciGpu } from './pci.ts';
import { importNodeBuiltin } from './runtime.ts';
import type { Capacity, Runtime } from './types.ts';

/**
 * Used only when neither the user nor the platform says how much a device holds
 * (WebGPU cannot tell). 4 GiB is what the smallest GPUs people run these models on have;
 * pass `--memory gpu:N=<size>` to use more.
 */
export const DEFAULT_CAPACITY: Readonly<{ gpu: number; cpu: number }> = Object.freeze({
  gpu: 4 * 1024 ** 3,
  cpu: 4 * 1024 ** 3,
});

/** User-declared capacities, keyed by canonical device name ("gpu:0", "cpu"). */
export type MemoryOverrides = ReadonlyMap<string, number>;

/**
 * Normalises `{ 'cuda:0': '24gb', cpu: 68719476736 }` (the library option) or
 * "gpu:0=24gb,cpu=64gb" (the CLI flag) into canonical names and bytes.
 */
export function parseMemoryOverrides(input: Record<string, number | string> | string | undefined): MemoryOverrides {
  const out = new Map<string, number>();
  if (input === undefined) return out;
  const pairs: Array<[string, number | string]> = typeof input === 'string'
    ? input.split(',').filter((p) => p.trim() !== '').map((p) => {
        const eq = p.indexOf('=');
        if (eq < 0) return [p, ''];
        return [p.slice(0, eq), p.slice(eq + 1)];
      })
    : Object.entries(input);
  for (const [name, size] of pairs) {
    const device = canonicalDeviceName(parseDeviceName(name));
    out.set(device, typeof size === 'number' ? size : parseByteSize(size));
  }
  return out;
}

export function gpuCapacity(name: string, overrides: MemoryOverrides, pci: PciGpu | null): Capacity {
  const user = overrides.get(name);
  if (user !== undefined) return { bytes: user, source: 'user' };
  if (pci?.memoryBytes != null && pci.memorySource) return { bytes: pci.memoryBytes, source: pci.memorySource };
  return { bytes: DEFAULT_CAPACITY.gpu, source: 'default' };
}

export async function cpuCapacity(runtime: Runtime, overrides: MemoryOverrides): Promise<Capacity> {
  const user = overrides.get('cpu');
  if (user !== undefined) return { bytes: user, source: 'user' };
  if (runtime !== 'browser') {
    const os = await importNodeBuiltin<typeof import('node:os')>('os');
    return { bytes: os.totalmem(), source: 'os' };
  }
  const gib = (globalThis.navigator as { deviceMemory?: number } | undefined)?.deviceMemory;
  if (typeof gib === 'number' && gib > 0) return { bytes: gib * 1024 ** 3, source: 'navigator.deviceMemory' };
  return { bytes: DEFAULT_CAPACITY.cpu, source: 'default' };
}
