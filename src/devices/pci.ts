import { importNodeBuiltin } from './runtime.ts';

/** A display-class PCI device, as the platform reports it. */
export interface PciGpu {
  /** Normalised "dddd:bb:ss.f", lower-case hex: sorting these strings is PCI bus order. */
  readonly busId: string;
  readonly name: string | null;
  readonly vendorId: number | null;
  readonly memoryBytes: number | null;
  readonly memorySource: 'nvidia-smi' | 'sysfs' | null;
}

/** Known PCI vendor ids, to match an adapter's vendor string against sysfs entries. */
export const PCI_VENDORS: Readonly<Record<number, string>> = Object.freeze({
  0x10de: 'nvidia',
  0x1002: 'amd',
  0x8086: 'intel',
  0x106b: 'apple',
  0x5143: 'qualcomm',
  0x13b5: 'arm',
  0x1ae0: 'google',
  0x1af4: 'virtio',
});

const BUS_ID = /^(?:([0-9a-f]{1,8}):)?([0-9a-f]{1,2}):([0-9a-f]{1,2})\.([0-7])$/i;

/** "00000000:3B:00.0" (nvidia-smi) or "0000:3b:00.0" (sysfs) → "0000:3b:00.0"; null if not a bus id. */
export function normalizeBusId(text: string): string | null {
  const m = BUS_ID.exec(text.trim());
  if (!m) return null;
  const hex = (s: string | undefined, width: number) => (s ?? '0').toLowerCase().slice(-width).padStart(width, '0');
  return `${hex(m[1], 4)}:${hex(m[2], 2)}:${hex(m[3], 2)}.${m[4]}`;
}

/** The DRI_PRIME value that makes Mesa's device-select layer put this GPU first. */
export function driPrimeTag(busId: string): string {
  return `pci-${busId.replace(/[:.]/g, '_')}`;
}

/** Parses `nvidia-smi --query-gpu=pci.bus_id,name,memory.total --format=csv,noheader,nounits`. */
export function parseNvidiaSmi(csv: string): PciGpu[] {
  const gpus: PciGpu[] = [];
  for (const line of csv.split(/\r?\n/)) {
    const fields = line.split(',').map((f) => f.trim());
    if (fields.length < 3) continue;
    const busId = normalizeBusId(fields[0]!);
    const mib = Number(fields[fields.length - 1]);
    if (!busId) continue;
    const name = fields.slice(1, -1).join(',');
    const memoryBytes = Number.isFinite(mib) && mib > 0 ? Math.round(mib * 1024 * 1024) : null;
    gpus.push({ busId, name, vendorId: 0x10de, memoryBytes, memorySource: memoryBytes === null ? null : 'nvidia-smi' });
  }
  return sortByBus(gpus);
}

export function sortByBus<T extends { busId: string }>(gpus: T[]): T[] {
  return gpus.sort((a, b) => (a.busId < b.busId ? -1 : a.busId > b.busId ? 1 : 0));
}

/** nvidia-smi's CSV answer to a --query-gpu, or null where there is no nvidia-smi. */
async function queryNvidiaSmi(fields: string): Promise<string | null> {
  const { execFile } = await importNodeBuiltin<typeof import('node:child_process')>('child_process');
  return new Promise((resolve) => {
    execFile('nvidia-smi', [`--query-gpu=${fields}`, '--format=csv,noheader,nounits'],
      { timeout: 10_000, windowsHide: true }, (error, stdout) => resolve(error ? null : String(stdout)));
  });
}

async function nvidiaSmi(): Promise<PciGpu[]> {
  const csv = await queryNvidiaSmi('pci.bus_id,name,memory.total');
  return csv === null ? [] : parseNvidiaSmi(csv);
}

/** MiB in use on each NVIDIA GPU, by normalised bus id; null where nvidia-smi is missing. */
export async function nvidiaMemoryUsedMiB(): Promise<Map<string, number> | null> {
  const csv = await queryNvidiaSmi('pci.bus_id,memory.used');
  if (csv === null) return null;
  const used = new Map<string, number>();
  for (const line of csv.split(/\r?\n/)) {
    const [bus, mib] = line.split(',').map((f) => f.trim());
    const busId = bus ? normalizeBusId(bus) : null;
    if (busId && mib !== undefined && Number.isFinite(Number(mib))) used.set(busId, Number(mib));
  }
  return used;
}

/** Display controllers (PCI class 0x03xxxx) from Linux sysfs, with amdgpu's VRAM size where it is exposed. */
async function sysfsGpus(): Promise<PciGpu[]> {
  const fs = await importNodeBuiltin<typeof import('node:fs/promises')>('fs/promises');
  const root = '/sys/bus/pci/devices';
  const read = (path: string) => fs.readFile(path, 'utf8').then((s) => s.trim(), () => null);
  let names: string[];
  try {
    names = await fs.readdir(root);
  } catch {
    return [];
  }
  const gpus: PciGpu[] = [];
  for (const entry of names) {
    const cls = await read(`${root}/${entry}/class`);
    const busId = normalizeBusId(entry);
    if (!busId || !cls || !cls.toLowerCase().startsWith('0x03')) continue;
    const vendor = await read(`${root}/${entry}/vendor`);
    const vram = await read(`${root}/${entry}/mem_info_vram_total`);
    const memoryBytes = vram !== null && /^\d+$/.test(vram) ? Number(vram) : null;
    gpus.push({ busId, name: null, vendorId: vendor ? Number.parseInt(vendor, 16) : null, memoryBytes, memorySource: memoryBytes === null ? null : 'sysfs' });
  }
  return sortByBus(gpus);
}

/**
 * Every GPU the platform lists, in PCI bus order: nvidia-smi's entries (names and memory)
 * merged over sysfs's (every vendor). Empty where neither exists (browsers, macOS, Windows).
 */
export async function queryPciGpus(): Promise<PciGpu[]> {
  const [smi, sys] = await Promise.all([nvidiaSmi().catch(() => []), sysfsGpus().catch(() => [])]);
  const byBus = new Map<string, PciGpu>();
  for (const gpu of sys) byBus.set(gpu.busId, gpu);
  for (const gpu of smi) byBus.set(gpu.busId, gpu);
  return sortByBus([...byBus.values()]);
}
