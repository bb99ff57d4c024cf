import { WebGpuUnavailableError } from './errors.ts';
import { normalizeBusId, type PciGpu } from './pci.ts';
import { importNodeBuiltin } from './runtime.ts';

/** The shape of npm `webgpu` (dawn.node). */
export interface DawnModule {
  create(flags: string[]): GPU;
  globals: Record<string, unknown>;
}
export type DawnLoader = () => Promise<DawnModule>;

/** A bare import the bundler can't see: Dawn is a native addon that only Node and Deno load. */
export const loadDawnFromNodeModules: DawnLoader = () => {
  const specifier = 'webgpu';
  return import(/* @vite-ignore */ specifier) as Promise<DawnModule>;
};

/**
 * shader-f16 and subgroup matrices (tensor cores) are only exposed on NVIDIA's Vulkan driver
 * behind these toggles; without them the f16 kernels could never be chosen there.
 */
export const DEFAULT_DAWN_FLAGS: readonly string[] = Object.freeze([
  'enable-dawn-features=allow_unsafe_apis,vulkan_enable_f16_on_nvidia',
]);

/** Debian's chromium ships SwiftShader's Vulkan driver: a working WebGPU on GPU-less machines. */
export const SWIFTSHADER_ICDS: readonly string[] = Object.freeze(['/usr/lib/chromium/vk_swiftshader_icd.json']);

export interface DawnListing {
  readonly backend: string;
  readonly name: string;
}

/** What dawn.node prints for `adapter=<unknown>`: " * backend: 'vulkan', name: 'NVIDIA H100 80GB HBM3'". */
export function parseAdapterListing(text: string): DawnListing[] {
  return [...text.matchAll(/\*\s*backend:\s*'([^']*)',\s*name:\s*'([^']*)'/g)].map((m) => ({ backend: m[1]!, name: m[2]! }));
}

const LIST_SENTINEL = 'adapter=multigpu-web: list adapters';

/** Every adapter Dawn can open, one line per physical device per backend. */
export async function listDawnAdapters(dawn: DawnModule, flags: readonly string[]): Promise<DawnListing[]> {
  try {
    const gpu = dawn.create([...flags, LIST_SENTINEL]);
    await gpu.requestAdapter();
  } catch (error) {
    return parseAdapterListing(String((error as Error)?.message ?? error));
  }
  return [];
}

/** Backends in the order we want them; the platform's native one first. */
export function backendPreference(platform: string): string[] {
  const native = platform === 'darwin' ? 'metal' : platform === 'win32' ? 'd3d12' : 'vulkan';
  return [native, ...['vulkan', 'd3d12', 'metal', 'd3d11', 'opengl', 'opengles'].filter((b) => b !== native)];
}

/** One adapter name under the one backend we will open it with, and how many devices carry the name. */
export interface AdapterGroup {
  readonly name: string;
  readonly backend: string;
  readonly count: number;
}

/** The same physical GPU is listed once per backend: keep each name under its best backend. */
export function groupAdapters(listings: readonly DawnListing[], platform: string): AdapterGroup[] {
  const order = backendPreference(platform);
  const rank = (backend: string) => {
    const i = order.indexOf(backend);
    return i < 0 ? order.length : i;
  };
  const groups = new Map<string, AdapterGroup>();
  for (const { backend, name } of listings) {
    if (backend === 'null') continue;
    const current = groups.get(name);
    if (!current || rank(backend) < rank(current.backend)) {
      groups.set(name, { name, backend, count: listings.filter((l) => l.name === name && l.backend === backend).length });
    }
  }
  return [...groups.values()];
}

/**
 * One physical GPU to open in a Dawn instance of its own. `twins` lists the identical GPUs
 * (same name) it must be told apart from; empty when the name alone singles it out.
 */
export interface DawnTarget {
  readonly name: string;
  readonly backend: string;
  readonly pci: PciGpu | null;
  readonly twins: readonly PciGpu[];
}

const sameName = (a: string, b: string) => a.trim().toLowerCase() === b.trim().toLowerCase();

function pciNamed(pci: readonly PciGpu[], name: string): PciGpu[] {
  return pci.filter((p) => p.name !== null && sameName(p.name, name));
}

/**
 * One target per physical GPU. Identical GPUs share a name, so Dawn's `adapter=NAME` alone
 * would open the first one every time: where the platform lists their PCI bus ids
 * (nvidia-smi), each becomes a target of its own, to be told apart when opened (twins.ts).
 */
export function planDawnTargets(groups: readonly AdapterGroup[], pci: readonly PciGpu[], warnings: string[]): DawnTarget[] {
  const targets: DawnTarget[] = [];
  for (const group of groups) {
    const matches = pciNamed(pci, group.name);
    if (matches.length === 0) {
      if (group.count > 1) {
        warnings.push(`${group.count} adapters are named "${group.name}" but the platform gives no PCI bus ids for them; ` +
          'opening one (install nvidia-smi, or name them with --adapters "pci:<bus id>;...")');
      }
      targets.push({ name: group.name, backend: group.backend, pci: null, twins: [] });
      continue;
    }
    // Mesa's device-select layer (FORCE_DEFAULT_DEVICE) shows Dawn one of the twins only,
    // so Dawn's count may be lower than the platform's; the platform's is the truth.
    for (const p of matches) {
      targets.push({ name: group.name, backend: group.backend, pci: p, twins: matches.length > 1 ? matches : [] });
    }
  }
  return targets;
}

/**
 * `adapters` option: explicit targets, each in an instance of its own, in the order given.
 * A name may repeat (two instances of one adapter: how multi-GPU runs are tested on one
 * software GPU); "pci:0000:3b:00.0" picks one of several identical GPUs.
 */
export function explicitDawnTargets(selectors: readonly string[], groups: readonly AdapterGroup[], pci: readonly PciGpu[]): DawnTarget[] {
  const available = () => groups.map((g) => `"${g.name}"`).join(', ') || 'none';
  return selectors.map((selector) => {
    const trimmed = selector.trim();
    if (/^pci:/i.test(trimmed)) {
      const busId = normalizeBusId(trimmed.slice(4));
      const p = busId ? pci.find((g) => g.busId === busId) : undefined;
      const group = p?.name ? groups.find((g) => sameName(g.name, p.name!)) : undefined;
      if (!p || !group) {
        throw new WebGpuUnavailableError(`adapter selector "${selector}": no GPU with that PCI bus id that Dawn can open`, {
          hint: `PCI GPUs here: ${pci.map((g) => `${g.busId} (${g.name ?? 'unnamed'})`).join(', ') || 'none'}; Dawn adapters: ${available()}`,
        });
      }
      const twins = pciNamed(pci, group.name);
      return { name: group.name, backend: group.backend, pci: p, twins: twins.length > 1 ? twins : [] };
    }
    const group = groups.find((g) => sameName(g.name, trimmed));
    if (!group) {
      throw new WebGpuUnavailableError(`adapter selector "${selector}": Dawn has no adapter of that name`, {
        hint: `available: ${available()}`,
      });
    }
    const matches = pciNamed(pci, group.name);
    return { name: group.name, backend: group.backend, pci: matches.length === 1 ? matches[0]! : null, twins: [] };
  });
}

type Env = Record<string, string | undefined>;
const env = (): Env => (globalThis as { process?: { env: Env } }).process?.env ?? {};

/** Runs `body` with environment variables set, restoring them afterwards. */
async function withEnv<T>(vars: Record<string, string | null>, body: () => Promise<T>): Promise<T> {
  const e = env();
  const saved = Object.fromEntries(Object.keys(vars).map((k) => [k, e[k]]));
  for (const [k, v] of Object.entries(vars)) if (v !== null) e[k] = v;
  try {
    return await body();
  } finally {
    for (const [k, v] of Object.entries(saved)) {
      if (v === undefined) delete e[k];
      else e[k] = v;
    }
  }
}

export interface DawnInstanceAdapter {
  readonly instance: GPU;
  readonly adapter: GPUAdapter;
}

/** A new Dawn instance and its adapter of that name; `driPrime` steers Mesa's device-select layer. */
export async function openDawnAdapter(dawn: DawnModule, flags: readonly string[], name: string, backend: string,
  driPrime: string | null = null): Promise<DawnInstanceAdapter> {
  // The device-select layer reads DRI_PRIME when the Vulkan instance enumerates devices,
  // which Dawn does lazily: keep it set until the adapter is in hand.
  return withEnv({ DRI_PRIME: driPrime }, async () => {
    const instance = dawn.create([...flags, `backend=${backend}`, `adapter=${name}`]);
    const adapter = await instance.requestAdapter({ powerPreference: 'high-performance' });
    if (!adapter) {
      throw new WebGpuUnavailableError(`Dawn listed adapter "${name}" (${backend}) but returned none when asked for it`);
    }
    return { instance, adapter };
  });
}

/**
 * Lists Dawn's adapters; on Linux, when none is usable and no Vulkan driver was chosen
 * explicitly, retries with SwiftShader so GPU-less machines still get a (software) GPU.
 */
export async function listWithSoftwareFallback(dawn: DawnModule, flags: readonly string[], notes: string[]): Promise<DawnListing[]> {
  const first = await listDawnAdapters(dawn, flags);
  const e = env();
  if (first.some((l) => l.backend !== 'null') || e.VK_ICD_FILENAMES || e.VK_DRIVER_FILES) return first;
  const fs = await importNodeBuiltin<typeof import('node:fs')>('fs');
  const icd = SWIFTSHADER_ICDS.find((path) => fs.existsSync(path));
  if (!icd) return first;
  e.VK_ICD_FILENAMES = icd;
  notes.push(`no hardware Vulkan adapter: using SwiftShader (VK_ICD_FILENAMES=${icd})`);
  return listDawnAdapters(dawn, flags);
}

/** Dawn's constants (GPUBufferUsage, GPUMapMode, ...) where the host has none of its own. */
export function installDawnGlobals(dawn: DawnModule): void {
  const g = globalThis as Record<string, unknown>;
  for (const [key, value] of Object.entries(dawn.globals)) if (!(key in g)) g[key] = value;
}
