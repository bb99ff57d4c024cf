import { requestMaxDevice } from './adapter.ts';
import { openDawnAdapter, type DawnInstanceAdapter, type DawnModule } from './dawn.ts';
import { driPrimeTag, nvidiaMemoryUsedMiB, type PciGpu } from './pci.ts';

/**
 * Opening each of several identical GPUs (same adapter name) under Dawn.
 *
 * Mesa's device-select layer is meant to put the GPU that DRI_PRIME names first, but the
 * layer that Debian 12 ships (Mesa 22.3) matches the tag inverted: it picks the last GPU
 * that does NOT carry it (measured on a 2×H200 machine: DRI_PRIME=pci-0000_00_06_0 opened
 * 00:07.0 and vice versa). So a tag is only a way to reach different GPUs, never proof of
 * which one was reached: each instance is identified by a memory probe (allocate, see whose
 * memory.used grows in nvidia-smi) and kept only if it is a GPU still wanted.
 */

export interface TwinOpened extends DawnInstanceAdapter {
  readonly pci: PciGpu;
  readonly device: GPUDevice;
}

const MIB = 1024 * 1024;
const PROBE_BYTES = 256 * MIB;

/** Which of `twins` the device lives on, by where a 256 MiB allocation shows up; null if unclear. */
export async function probeBusId(device: GPUDevice, twins: readonly PciGpu[]): Promise<string | null> {
  const before = await nvidiaMemoryUsedMiB();
  if (!before) return null;
  const size = Math.min(PROBE_BYTES, device.limits.maxBufferSize);
  const buffer = device.createBuffer({ label: 'identity probe', size, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST });
  try {
    device.queue.writeBuffer(buffer, 0, new Uint32Array(1)); // makes the allocation resident
    await device.queue.onSubmittedWorkDone();
    const after = await nvidiaMemoryUsedMiB();
    if (!after) return null;
    return pickGrowth(twins.map((t) => t.busId), before, after, size / MIB / 2);
  } finally {
    buffer.destroy();
  }
}

/** The bus id whose MiB grew the most, if it grew by at least `minMiB`. */
export function pickGrowth(busIds: readonly string[], before: ReadonlyMap<string, number>, after: ReadonlyMap<string, number>,
  minMiB: number): string | null {
  let best: string | null = null;
  let bestGrowth = minMiB;
  for (const busId of busIds) {
    const growth = (after.get(busId) ?? 0) - (before.get(busId) ?? 0);
    if (growth >= bestGrowth) {
      best = busId;
      bestGrowth = growth;
    }
  }
  return best;
}

/**
 * DRI_PRIME values worth trying: each twin's tag, then "1".."n-1" (older layers: "another
 * GPU than the default"), then none (the default GPU).
 */
export function driPrimeCandidates(twins: readonly PciGpu[]): Array<string | null> {
  return [...twins.map((t) => driPrimeTag(t.busId)), ...twins.slice(1).map((_, i) => String(i + 1)), null];
}

export async function openTwins(dawn: DawnModule, flags: readonly string[], name: string, backend: string,
  wanted: readonly PciGpu[], twins: readonly PciGpu[], warnings: string[]): Promise<TwinOpened[]> {
  const found = new Map<string, TwinOpened>();
  const label = (tag: string | null) => `${name} [DRI_PRIME=${tag ?? 'unset'}]`;
  if ((await nvidiaMemoryUsedMiB()) === null) {
    // No way to check: trust the tags, and say so.
    warnings.push(`cannot verify which of the identical "${name}" GPUs each instance opened (no nvidia-smi): trusting DRI_PRIME`);
    const opened: TwinOpened[] = [];
    for (const pci of wanted) {
      const tag = driPrimeTag(pci.busId);
      const { instance, adapter } = await openDawnAdapter(dawn, flags, name, backend, tag);
      opened.push({ instance, adapter, pci, device: await requestMaxDevice(adapter, label(tag)) });
    }
    return opened;
  }
  for (const tag of driPrimeCandidates(twins)) {
    if (wanted.every((w) => found.has(w.busId))) break;
    const { instance, adapter } = await openDawnAdapter(dawn, flags, name, backend, tag);
    const device = await requestMaxDevice(adapter, label(tag));
    const busId = await probeBusId(device, twins);
    const pci = wanted.find((w) => w.busId === busId);
    if (pci && !found.has(pci.busId)) found.set(pci.busId, { instance, adapter, pci, device });
    else device.destroy();
  }
  const missing = wanted.filter((w) => !found.has(w.busId));
  if (missing.length > 0) {
    warnings.push(`could not open the "${name}" GPU(s) at ${missing.map((m) => m.busId).join(', ')}: ` +
      'no DRI_PRIME value made the Vulkan device-select layer expose them (update Mesa\'s device-select layer)');
  }
  return wanted.flatMap((w) => found.get(w.busId) ?? []);
}
