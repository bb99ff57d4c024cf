import { MultiGpuError, UsageError } from '../errors.ts';
import { canonicalDeviceName, parseDeviceName } from '../devices/names.ts';
import type { Block, BlockMap } from '../models/blocks.ts';
import { formatBytes } from './bytes.ts';
import { DEFAULT_COST_MODEL, estimate, type CostModel } from './cost-model.ts';
import { parseAllocation, type ParsedAllocation } from './grammar.ts';

export type ExecutionMode = 'stream' | 'pipeline' | 'auto';

/** How a block runs: on the compute device where it is stored, streamed to it, or where it is stored. */
export type BlockExec = 'resident' | 'stream' | 'pipeline';

/** Where its weights live: a device buffer, a host-visible (MAP_WRITE|COPY_SRC) GPU buffer, WebAssembly memory. */
export type StorageForm = 'device-buffer' | 'host-visible' | 'wasm-memory';

/** A device the planner may use: opened here, or declared with --memory for planning only. */
export interface PlanDevice {
  readonly name: string;
  readonly capacity: number;
  /** Bytes the runtime already holds there (the ledger). */
  readonly used?: number;
}

export interface PlanOptions {
  readonly allocation: string;
  readonly devices: readonly PlanDevice[];
  /** Where stream mode runs every block; default gpu:0, or cpu when there is no GPU. */
  readonly compute?: string;
  /** Per-GPU bytes the plan never fills; default min(1 GiB, 10% of capacity). */
  readonly reserve?: number;
  readonly mode?: ExecutionMode;
  /** Simple mode (empty allocation): bytes of the model to keep off the compute device... */
  readonly virtualVram?: number;
  /** ...on these devices, in order (default cpu). */
  readonly donors?: readonly string[];
  /** Keep embedding tables on cpu (rows gathered there) instead of the compute device. */
  readonly embeddingsOn?: 'compute' | 'cpu';
  readonly costModel?: CostModel;
  /** Hidden size for the activations that cross devices (auto mode); from config.json when known. */
  readonly hiddenSize?: number;
  /** A block's bytes in the dtype it will have on a device; default: as stored. */
  readonly bytesOf?: (block: Block) => number;
}

export interface BlockPlacement {
  readonly name: string;
  readonly kind: Block['kind'];
  readonly bytes: number;
  /** Where its weights are stored. */
  readonly device: string;
  readonly exec: BlockExec;
  /** Where it runs. */
  readonly execDevice: string;
  readonly storage: StorageForm;
  /** Why it is pinned, when it is. */
  readonly pinned: string | null;
  /** Why it runs the way it does. */
  readonly reason: string;
}

export interface DevicePlan {
  readonly name: string;
  /** Bytes of the model stored here. */
  readonly bytes: number;
  readonly capacity: number;
  readonly reserve: number;
  /** Bytes already in use (the ledger). */
  readonly used: number;
  /** capacity − reserve − used. */
  readonly available: number;
  /** Its share of the model from the allocation string (null: it takes the remainder). */
  readonly share: number | null;
  /** Bytes above its share: pinned blocks, or the remainder it absorbed. */
  readonly excess: number;
  readonly absorbsRemainder: boolean;
}

export interface Plan {
  readonly allocation: ParsedAllocation;
  readonly mode: ExecutionMode;
  readonly compute: string;
  readonly totalBytes: number;
  /** In model order. */
  readonly blocks: readonly BlockPlacement[];
  /** In the order the allocation lists them, the compute device and cpu added where used. */
  readonly devices: readonly DevicePlan[];
  readonly warnings: readonly string[];
}

/** The allocation cannot hold the model: says which devices are short, and by how much. */
export class PlanCapacityError extends MultiGpuError {
  readonly shortfalls: ReadonlyArray<{ device: string; bytes: number; missing: number }>;
  constructor(allocation: string, shortfalls: ReadonlyArray<{ device: string; bytes: number; available: number; missing: number }>) {
    const lines = shortfalls.map((s) => `${s.device} would hold ${formatBytes(s.bytes)} but has ${formatBytes(s.available)} free: ${formatBytes(s.missing)} (${s.missing} bytes) short`);
    super('E_PLAN_CAPACITY', `allocation "${allocation}" cannot hold the model: ${lines.join('; ')}`, {
      hint: 'lower the share of the short device, end the string with "cpu,*" so the host takes the rest, or declare the real capacity with --memory',
    });
    this.shortfalls = shortfalls;
  }
}

const GIB = 1024 ** 3;
const PIN_FRACTION = 1e-4; // blocks under 0.01% of the model stay on the compute device

export function defaultReserve(device: string, capacity: number, reserve?: number): number {
  if (device === 'cpu') return 0;
  return reserve ?? Math.min(GIB, Math.floor(capacity * 0.1));
}

function pinReason(block: Block, bytes: number, total: number): string | null {
  if (block.kind === 'embedding') return 'embedding';
  if (block.kind === 'norm') return 'final norm';
  if (block.kind === 'head') return 'output head';
  if (bytes < total * PIN_FRACTION) return 'under 0.01% of the model';
  return null;
}

interface Share {
  readonly device: string;
  /** Bytes it may take in model order; Infinity never occurs (wildcards get what is left). */
  readonly share: number;
}

/** The shares of SPEC §2, in the order written, and who absorbs what rounding leaves over. */
function sharesOf(parsed: ParsedAllocation, total: number, capacityOf: (d: string) => number, availableOf: (d: string) => number,
  options: PlanOptions, compute: string, warnings: string[]): { shares: Share[]; absorber: string } {
  if (parsed.mode === 'simple') {
    const virtualVram = Math.min(options.virtualVram ?? 0, total);
    const donors = options.donors?.length ? options.donors : ['cpu'];
    const shares: Share[] = [{ device: compute, share: total - virtualVram }];
    for (const donor of donors) if (donor !== compute) shares.push({ device: donor, share: Math.max(0, availableOf(donor)) });
    return { shares, absorber: shares[shares.length - 1]!.device };
  }
  if (options.virtualVram !== undefined) {
    throw new UsageError('virtual VRAM (simple mode) and an allocation string were both given', {
      hint: 'use one: an allocation string such as "gpu:0,4gb;cpu,*", or an empty string with --virtual-vram and --donors',
    });
  }
  const entries = parsed.entries;
  const written = (device: string) => entries.find((e) => e.device === device);
  const amountBytes = (e: (typeof entries)[number]): number => {
    switch (e.amount.kind) {
      case 'bytes': return e.amount.bytes;
      case 'fraction': return Math.floor(e.amount.value * capacityOf(e.device));
      case 'ratio': return 0; // handled below, it needs the sum
      case 'wildcard': return 0;
    }
  };
  let shares: Share[];
  if (parsed.mode === 'ratio') {
    const percents = entries.filter((e) => e.amount.kind === 'ratio').reduce((a, e) => a + (e.amount as { percent: number }).percent, 0);
    // With a wildcard: shares as written, the wildcard gets 100% minus the rest. Without: normalised.
    const base = parsed.wildcard ? 100 : percents;
    shares = entries.map((e) => ({
      device: e.device,
      share: Math.floor((total * (e.amount.kind === 'ratio' ? e.amount.percent : Math.max(0, 100 - percents))) / base),
    }));
  } else {
    const named = entries.filter((e) => e.amount.kind !== 'wildcard').reduce((a, e) => a + amountBytes(e), 0);
    shares = entries.map((e) => ({ device: e.device, share: e.amount.kind === 'wildcard' ? Math.max(0, total - named) : amountBytes(e) }));
  }
  if (parsed.wildcard) return { shares, absorber: parsed.wildcard };
  if (parsed.mode === 'bytes') {
    if (!written('cpu')) {
      shares.push({ device: 'cpu', share: 0 });
      warnings.push('no wildcard in a bytes allocation: cpu takes whatever the listed devices leave (as in DisTorch2)');
    } else {
      warnings.push('no wildcard in a bytes allocation: cpu takes whatever the listed shares leave (as in DisTorch2)');
    }
    return { shares, absorber: 'cpu' };
  }
  const last = shares[shares.length - 1]!.device;
  warnings.push(`no wildcard: the last device listed (${last}) takes what rounding to whole blocks leaves over`);
  return { shares, absorber: last };
}

/**
 * Places a model's blocks on devices as SPEC §2–§3 say: pinned blocks on the compute device,
 * the rest in contiguous runs in model order, devices in the order the string lists them,
 * each filled up to its share, the remainder absorbed by the wildcard (or the rule's
 * stand-in). Deterministic; never splits a block; checks every device's free bytes.
 */
export function plan(blockMap: BlockMap, options: PlanOptions): Plan {
  const devices = new Map(options.devices.map((d) => [canonicalDeviceName(parseDeviceName(d.name)), d]));
  const deviceNames = [...devices.keys()];
  const parsed = parseAllocation(options.allocation, { devices: deviceNames });
  const warnings = [...parsed.warnings];
  const compute = options.compute !== undefined
    ? canonicalDeviceName(parseDeviceName(options.compute))
    : devices.has('gpu:0') ? 'gpu:0' : 'cpu';
  if (!devices.has(compute)) {
    throw new UsageError(`compute device ${compute} is not present on this machine (devices: ${deviceNames.join(', ')})`, {
      hint: 'pick one from `multigpu devices`, or declare it for planning with --memory',
    });
  }
  for (const donor of options.donors ?? []) {
    if (!devices.has(donor)) throw new UsageError(`donor ${donor} is not present on this machine (devices: ${deviceNames.join(', ')})`);
  }
  const mode = options.mode ?? 'auto';
  const bytesOf = options.bytesOf ?? ((b: Block) => b.storedBytes);
  const blocks = blockMap.blocks;
  const sizes = blocks.map(bytesOf);
  const total = sizes.reduce((a, b) => a + b, 0);
  const capacityOf = (d: string) => devices.get(d)?.capacity ?? 0;
  const reserveOf = (d: string) => defaultReserve(d, capacityOf(d), options.reserve);
  const availableOf = (d: string) => capacityOf(d) - reserveOf(d) - (devices.get(d)?.used ?? 0);

  const { shares, absorber } = sharesOf(parsed, total, capacityOf, availableOf, options, compute, warnings);
  const shareOf = new Map(shares.map((s) => [s.device, s.share]));

  // Pinned blocks first: they go where they must, and count against that device's share.
  const placedOn: Array<string | null> = blocks.map(() => null);
  const pins: Array<string | null> = blocks.map((b, i) => pinReason(b, sizes[i]!, total));
  const stored = new Map<string, number>();
  const add = (device: string, bytes: number) => stored.set(device, (stored.get(device) ?? 0) + bytes);
  blocks.forEach((block, i) => {
    if (!pins[i]) return;
    const onCpu = options.embeddingsOn === 'cpu' && block.kind === 'embedding' && devices.has('cpu');
    placedOn[i] = onCpu ? 'cpu' : compute;
    if (onCpu) pins[i] = 'embedding kept on cpu';
    add(placedOn[i]!, sizes[i]!);
  });

  // Contiguous runs in model order, each device up to its share.
  let next = 0;
  const unpinned = blocks.map((_, i) => i).filter((i) => placedOn[i] === null);
  for (const { device } of shares) {
    const room = () => (shareOf.get(device) ?? 0) - (stored.get(device) ?? 0);
    while (next < unpinned.length && sizes[unpinned[next]!]! <= room()) {
      placedOn[unpinned[next]!] = device;
      add(device, sizes[unpinned[next]!]!);
      next++;
    }
  }
  if (next < unpinned.length) {
    const lastListed = shares[shares.length - 1]!.device;
    if (absorber !== lastListed) {
      warnings.push(`${absorber} takes the remainder, so its blocks are not one contiguous run (it is not listed last)`);
    }
    for (; next < unpinned.length; next++) {
      placedOn[unpinned[next]!] = absorber;
      add(absorber, sizes[unpinned[next]!]!);
    }
  }

  // How each block runs, and so what form its weights are stored in.
  const model = options.costModel ?? DEFAULT_COST_MODEL;
  const activationBytes = (options.hiddenSize ?? 4096) * model.tokensPerPass * 4;
  const placements: BlockPlacement[] = blocks.map((block, i) => {
    const device = placedOn[i]!;
    const bytes = sizes[i]!;
    const base = { name: block.name, kind: block.kind, bytes, device, pinned: pins[i]! };
    const onDevice = (d: string): StorageForm => (d === 'cpu' ? 'wasm-memory' : 'device-buffer');
    if (device === compute) {
      return { ...base, exec: 'resident', execDevice: compute, storage: onDevice(compute),
        reason: pins[i] ? `pinned to the compute device (${pins[i]})` : 'stored on the compute device' };
    }
    if (pins[i] === 'embedding kept on cpu') {
      return { ...base, exec: 'pipeline', execDevice: 'cpu', storage: 'wasm-memory', reason: 'embedding kept on cpu: rows are gathered there' };
    }
    const streamed = { ...base, exec: 'stream' as const, execDevice: compute, storage: (device === 'cpu' && compute !== 'cpu' ? 'host-visible' : 'device-buffer') as StorageForm };
    const piped = { ...base, exec: 'pipeline' as const, execDevice: device, storage: onDevice(device) };
    if (mode === 'stream') return { ...streamed, reason: `stream mode: copied to ${compute} just in time` };
    if (mode === 'pipeline') return { ...piped, reason: `pipeline mode: runs on ${device}, activations move` };
    const cost = estimate(model, { storedOn: device, compute, bytes, parameters: block.parameters, activationBytes });
    return cost.choice === 'stream' ? { ...streamed, reason: cost.reason } : { ...piped, reason: cost.reason };
  });

  // Per-device totals, in the order written, then whatever else holds blocks.
  const order = [...new Set([...shares.map((s) => s.device), compute, ...placements.map((p) => p.device)])].filter((d) => devices.has(d));
  const devicePlans: DevicePlan[] = order.map((name) => {
    const bytes = stored.get(name) ?? 0;
    const written = parsed.entries.find((e) => e.device === name)?.amount.kind;
    const takesWhatIsLeft = name === absorber && (written === 'wildcard' || (parsed.mode !== 'simple' && written === undefined));
    const share = takesWhatIsLeft ? null : shareOf.get(name) ?? 0;
    return {
      name, bytes, capacity: capacityOf(name), reserve: reserveOf(name), used: devices.get(name)?.used ?? 0,
      available: availableOf(name), share, excess: share === null ? 0 : Math.max(0, bytes - share), absorbsRemainder: name === absorber,
    };
  });
  for (const d of devicePlans) {
    if (d.excess > 0 && d.name === compute) warnings.push(`pinned blocks put ${formatBytes(d.excess)} more on ${d.name} than its share`);
    else if (d.excess > 0) warnings.push(`${d.name} holds ${formatBytes(d.excess)} above its share: it absorbs the remainder`);
  }
  if (parsed.mode !== 'simple' && !parsed.entries.some((e) => e.device === compute)) {
    warnings.push(`compute device ${compute} is not in the allocation: it holds the pinned blocks only`);
  }
  const streamedBytes = placements.filter((p) => p.exec === 'stream').map((p) => p.bytes);
  if (streamedBytes.length > 0 && compute !== 'cpu') {
    const staging = 2 * Math.max(...streamedBytes);
    if (staging > reserveOf(compute)) {
      warnings.push(`streaming needs ${formatBytes(staging)} of staging on ${compute} (two of its largest streamed block), more than its ${formatBytes(reserveOf(compute))} reserve: raise --reserve`);
    }
  }
  const shortfalls = devicePlans.filter((d) => d.bytes > d.available)
    .map((d) => ({ device: d.name, bytes: d.bytes, available: Math.max(0, d.available), missing: d.bytes - Math.max(0, d.available) }));
  if (shortfalls.length > 0) throw new PlanCapacityError(parsed.text, shortfalls);
  return { allocation: parsed, mode, compute, totalBytes: total, blocks: placements, devices: devicePlans, warnings };
}
