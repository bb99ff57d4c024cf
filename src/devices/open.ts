import { isSoftwareAdapter, requestMaxDevice, vendorName } from './adapter.ts';
import { gpuCapacity, parseMemoryOverrides, type MemoryOverrides } from './capacity.ts';
import { openCpuDevice } from './cpu-device.ts';
import {
  DEFAULT_DAWN_FLAGS,
  explicitDawnTargets,
  groupAdapters,
  installDawnGlobals,
  listWithSoftwareFallback,
  loadDawnFromNodeModules,
  openDawnAdapter,
  planDawnTargets,
  type DawnLoader,
  type DawnModule,
  type DawnTarget,
} from './dawn.ts';
import { DeviceSet } from './device-set.ts';
import { WebGpuUnavailableError } from './errors.ts';
import { GpuDevice } from './gpu-device.ts';
import { listNavigatorAdapters, navigatorAdapterName } from './navigator.ts';
import { PCI_VENDORS, queryPciGpus, type PciGpu } from './pci.ts';
import { detectRuntime } from './runtime.ts';
import { openTwins } from './twins.ts';
import type { GpuApi, Runtime } from './types.ts';

export interface OpenDevicesOptions {
  /**
   * Which WebGPU implementation opens the GPUs. `auto`: Dawn under Node; under Deno, Dawn
   * when npm `webgpu` loads, else Deno's own navigator.gpu; navigator.gpu in browsers.
   */
  readonly api?: 'auto' | GpuApi;
  /** Dawn only: open exactly these adapters, by name or "pci:<bus id>", each in its own instance. */
  readonly adapters?: readonly string[];
  /** Capacities the user declares: `{ 'gpu:0': '24gb', cpu: '64gb' }` or "gpu:0=24gb,cpu=64gb". */
  readonly memory?: Record<string, number | string> | string;
  /** How to load npm `webgpu` (the Deno entry passes `import('npm:webgpu')`). */
  readonly dawn?: DawnLoader;
  /** Flags for Dawn's create(); replaces DEFAULT_DAWN_FLAGS. */
  readonly dawnFlags?: readonly string[];
  /** A navigator.gpu-like object to use instead of the global one. */
  readonly gpu?: GPU;
  /** Open no GPU at all: the cpu device alone. */
  readonly cpuOnly?: boolean;
}

interface OpenedAdapter {
  readonly adapter: GPUAdapter;
  readonly name: string;
  readonly backend: string;
  readonly pci: PciGpu | null;
  readonly instance: GPU | null;
  /** Already requested (identifying a twin needs a device); null: request it when numbering. */
  readonly device: GPUDevice | null;
}

interface Discovery {
  readonly api: GpuApi | null;
  readonly adapters: OpenedAdapter[];
  readonly warnings: string[];
  readonly notes: string[];
}

async function loadDawn(loader: DawnLoader): Promise<DawnModule> {
  try {
    return await loader();
  } catch (cause) {
    throw new WebGpuUnavailableError('cannot load Dawn (npm package "webgpu")', {
      cause,
      hint: 'run `npm install` in the project; on Linux, Dawn also needs the Vulkan loader: apt-get install libvulkan1',
    });
  }
}

async function discoverDawn(dawn: DawnModule, options: OpenDevicesOptions, platform: string): Promise<Discovery> {
  const warnings: string[] = [];
  const notes: string[] = [];
  installDawnGlobals(dawn);
  const flags = options.dawnFlags ?? DEFAULT_DAWN_FLAGS;
  const [listings, pci] = await Promise.all([listWithSoftwareFallback(dawn, flags, notes), queryPciGpus()]);
  const groups = groupAdapters(listings, platform);
  const targets = options.adapters
    ? explicitDawnTargets(options.adapters, groups, pci)
    : planDawnTargets(groups, pci, warnings);
  const adapters = await openDawnTargets(dawn, flags, targets, warnings);
  return { api: 'dawn', adapters: attachByVendor(adapters, pci), warnings, notes };
}

/** One at a time: each may set DRI_PRIME in the process environment while it opens. */
async function openDawnTargets(dawn: DawnModule, flags: readonly string[], targets: readonly DawnTarget[],
  warnings: string[]): Promise<OpenedAdapter[]> {
  const opened: OpenedAdapter[] = [];
  const twinsDone = new Set<string>();
  for (const target of targets) {
    if (target.twins.length === 0) {
      const { instance, adapter } = await openDawnAdapter(dawn, flags, target.name, target.backend);
      opened.push({ adapter, instance, name: target.name, backend: target.backend, pci: target.pci, device: null });
      continue;
    }
    // All wanted twins of a name are opened together: each attempt may reach any of them.
    if (twinsDone.has(target.name)) continue;
    twinsDone.add(target.name);
    const wanted = targets.filter((t) => t.name === target.name && t.pci).map((t) => t.pci!);
    for (const twin of await openTwins(dawn, flags, target.name, target.backend, wanted, target.twins, warnings)) {
      opened.push({ ...twin, name: target.name, backend: target.backend });
    }
  }
  return opened;
}

/**
 * sysfs knows bus ids and vendor ids but no names: a GPU that no name matched still gets
 * its bus id (for ordering and VRAM size) when it is the only one of its vendor on both sides.
 */
function attachByVendor(adapters: OpenedAdapter[], pci: readonly PciGpu[]): OpenedAdapter[] {
  const claimed = new Set(adapters.flatMap((a) => (a.pci ? [a.pci.busId] : [])));
  const free = pci.filter((p) => !claimed.has(p.busId) && p.vendorId !== null);
  const unmatched = adapters.filter((a) => !a.pci && !isSoftwareAdapter(a.adapter.info));
  return adapters.map((a) => {
    if (!unmatched.includes(a)) return a;
    const vendor = vendorName(a.adapter.info.vendor);
    const sameVendor = (v: number | null) => v !== null && PCI_VENDORS[v] === vendor;
    const candidates = free.filter((p) => sameVendor(p.vendorId));
    const rivals = unmatched.filter((u) => vendorName(u.adapter.info.vendor) === vendor);
    return candidates.length === 1 && rivals.length === 1 ? { ...a, pci: candidates[0]! } : a;
  });
}

async function discoverNavigator(gpu: GPU | undefined, runtime: Runtime): Promise<Discovery> {
  if (!gpu) {
    throw new WebGpuUnavailableError('navigator.gpu is not available', {
      hint: runtime === 'browser'
        ? 'WebGPU needs a secure context (https or localhost) and a browser with WebGPU enabled'
        : 'this runtime has no navigator.gpu; use Dawn (npm "webgpu") instead',
    });
  }
  const backend = runtime === 'deno' ? 'wgpu' : 'browser';
  const adapters = (await listNavigatorAdapters(gpu)).map((adapter) => ({
    adapter, name: navigatorAdapterName(adapter.info), backend, pci: null, instance: null, device: null,
  }));
  return { api: 'navigator', adapters, warnings: [], notes: [] };
}

async function discover(options: OpenDevicesOptions, runtime: Runtime): Promise<Discovery> {
  const api = options.api ?? 'auto';
  const navigatorGpu = options.gpu ?? (globalThis.navigator as { gpu?: GPU } | undefined)?.gpu;
  const platform = (globalThis as { process?: { platform?: string } }).process?.platform ?? 'linux';
  if (api === 'navigator' || (api === 'auto' && runtime === 'browser')) return discoverNavigator(navigatorGpu, runtime);
  const loader = options.dawn ?? loadDawnFromNodeModules;
  if (api === 'dawn' || runtime === 'node') return discoverDawn(await loadDawn(loader), options, platform);
  // Deno, auto: Dawn has subgroups and f16 where Deno's wgpu has not; its own GPU otherwise.
  let dawn: DawnModule;
  try {
    dawn = await loader();
  } catch {
    const found = await discoverNavigator(navigatorGpu, runtime);
    found.notes.push('npm "webgpu" (Dawn) did not load: using Deno\'s own navigator.gpu');
    return found;
  }
  return discoverDawn(dawn, options, platform);
}

/** GPU numbering: by PCI bus order where known, then discovery order; software adapters last. */
function numberingOrder(adapters: readonly OpenedAdapter[]): OpenedAdapter[] {
  const key = (a: OpenedAdapter) => [isSoftwareAdapter(a.adapter.info) ? 1 : 0, a.pci ? 0 : 1, a.pci?.busId ?? ''] as const;
  return adapters
    .map((a, i) => ({ a, i, k: key(a) }))
    .sort((x, y) => x.k[0] - y.k[0] || x.k[1] - y.k[1] || (x.k[2] < y.k[2] ? -1 : x.k[2] > y.k[2] ? 1 : 0) || x.i - y.i)
    .map((x) => x.a);
}

async function openGpu(opened: OpenedAdapter, index: number, api: GpuApi, overrides: MemoryOverrides): Promise<GpuDevice> {
  const name = `gpu:${index}`;
  const device = opened.device ?? await requestMaxDevice(opened.adapter, `${name} (${opened.name})`);
  const info = opened.adapter.info;
  return new GpuDevice({
    index,
    adapterName: opened.name,
    vendor: vendorName(info.vendor),
    architecture: info.architecture,
    backend: opened.backend,
    api,
    pciBusId: opened.pci?.busId ?? null,
    fallback: isSoftwareAdapter(info),
    capacity: gpuCapacity(name, overrides, opened.pci),
    device,
    adapterInfo: info,
  });
}

/**
 * Opens every GPU this runtime can reach, plus the cpu device. Close the result when done:
 * open Dawn instances keep Node alive.
 */
export async function openDevices(options: OpenDevicesOptions = {}): Promise<DeviceSet> {
  const runtime = detectRuntime();
  const overrides = parseMemoryOverrides(options.memory);
  const found: Discovery = options.cpuOnly
    ? { api: null, adapters: [], warnings: [], notes: [] }
    : await discover(options, runtime);
  const ordered = numberingOrder(found.adapters);
  const gpus: GpuDevice[] = [];
  try {
    for (const [index, opened] of ordered.entries()) gpus.push(await openGpu(opened, index, found.api!, overrides));
  } catch (error) {
    for (const gpu of gpus) gpu.device.destroy();
    for (const opened of ordered) opened.device?.destroy();
    throw error;
  }
  const cpu = await openCpuDevice(runtime, overrides);
  const warnings = [...found.warnings];
  if (!options.cpuOnly && gpus.length === 0) warnings.push('no WebGPU adapter found: only the cpu device is available');
  for (const name of overrides.keys()) {
    if (name !== 'cpu' && !gpus.some((g) => g.name === name)) warnings.push(`--memory names ${name}, which is not open here`);
  }
  const instances = ordered.flatMap((a) => (a.instance ? [a.instance] : []));
  return new DeviceSet({ runtime, gpus, cpu, instances, warnings, notes: found.notes });
}
