import { formatBytes, parseByteSize } from '../allocation/bytes.ts';
import { plan, type ExecutionMode, type Plan, type PlanDevice } from '../allocation/planner.ts';
import { parseDonors } from '../allocation/grammar.ts';
import { parseMemoryOverrides } from '../devices/capacity.ts';
import { openDevices } from '../devices/open.ts';
import { UsageError } from '../errors.ts';
import { openWeights } from '../formats/open-weights.ts';
import { blockMapOf } from '../models/registry.ts';
import { importNodeBuiltin } from '../devices/runtime.ts';
import { formatTable } from './table.ts';

export interface PlanCommandOptions {
  readonly model: string;
  readonly alloc: string;
  readonly compute?: string;
  readonly memory?: string;
  readonly reserve?: string;
  readonly mode?: string;
  readonly virtualVram?: string;
  readonly donors?: string;
  readonly family?: string;
  readonly variant?: string;
  readonly embeddingsOnCpu?: boolean;
  /** Plan with the --memory declarations and the host only, without opening any GPU. */
  readonly offline?: boolean;
  readonly json?: boolean;
}

const MODES = new Set(['stream', 'pipeline', 'auto']);

/**
 * The devices a plan may use: those this machine opens (with their capacities), plus any
 * that --memory declares but the machine lacks, so multi-GPU plans can be made anywhere.
 */
async function planDevices(options: PlanCommandOptions): Promise<PlanDevice[]> {
  const declared = parseMemoryOverrides(options.memory);
  const devices = new Map<string, PlanDevice>();
  if (options.offline) {
    const os = await importNodeBuiltin<typeof import('node:os')>('os');
    devices.set('cpu', { name: 'cpu', capacity: declared.get('cpu') ?? os.totalmem() });
  } else {
    const set = await openDevices({ memory: options.memory });
    try {
      for (const d of set.devices) devices.set(d.name, { name: d.name, capacity: d.capacity.bytes, used: d.ledger.used });
    } finally {
      await set.close();
    }
  }
  for (const [name, capacity] of declared) if (!devices.has(name)) devices.set(name, { name, capacity });
  return [...devices.values()];
}

export function planJson(p: Plan): string {
  return JSON.stringify({
    allocation: p.allocation.text,
    mode: p.mode,
    compute: p.compute,
    totalBytes: p.totalBytes,
    blocks: p.blocks.map((b) => ({ name: b.name, bytes: b.bytes, device: b.device, exec: b.exec, execDevice: b.execDevice, storage: b.storage, pinned: b.pinned, reason: b.reason })),
    devices: Object.fromEntries(p.devices.map((d) => [d.name, { bytes: d.bytes, capacity: d.capacity, reserve: d.reserve, available: d.available, share: d.share, excess: d.excess, absorbsRemainder: d.absorbsRemainder }])),
    warnings: p.warnings,
  }, null, 2);
}

export function renderPlan(p: Plan, model: string): string {
  const blocks = formatTable(['block', 'bytes', 'device', 'exec', 'on', 'storage', 'why'],
    p.blocks.map((b) => [b.name, formatBytes(b.bytes), b.device, b.exec, b.execDevice, b.storage, b.reason]));
  const devices = formatTable(['device', 'stores', 'share', 'capacity', 'reserve', 'free', 'over share'],
    p.devices.map((d) => [d.name, formatBytes(d.bytes), d.share === null ? 'the rest' : formatBytes(d.share), formatBytes(d.capacity),
      formatBytes(d.reserve), formatBytes(d.available), d.excess ? formatBytes(d.excess) : '-']));
  const head = `${model}: ${p.blocks.length} blocks, ${formatBytes(p.totalBytes)}; allocation "${p.allocation.text}" (${p.allocation.mode} mode), ${p.mode} execution, compute ${p.compute}`;
  return [head, '', blocks, '', devices, ...p.warnings.map((w) => `warning: ${w}`)].join('\n');
}

export async function planCommand(options: PlanCommandOptions): Promise<string> {
  if (options.mode !== undefined && !MODES.has(options.mode)) throw new UsageError(`--mode must be stream, pipeline or auto (got "${options.mode}")`);
  const weights = await openWeights(options.model, { variant: options.variant });
  try {
    const devices = await planDevices(options);
    const names = devices.map((d) => d.name);
    const config = weights.config ?? {};
    const hidden = [config.hidden_size, config.d_model, config.n_embd, config.hidden_dim].find((v) => typeof v === 'number') as number | undefined;
    const result = plan(blockMapOf(weights, options.family), {
      allocation: options.alloc,
      devices,
      compute: options.compute,
      reserve: options.reserve === undefined ? undefined : parseByteSize(options.reserve),
      mode: options.mode as ExecutionMode | undefined,
      virtualVram: options.virtualVram === undefined ? undefined : parseByteSize(options.virtualVram),
      donors: options.donors === undefined ? undefined : parseDonors(options.donors, { devices: names }),
      embeddingsOn: options.embeddingsOnCpu ? 'cpu' : 'compute',
      hiddenSize: hidden,
    });
    return options.json ? planJson(result) : renderPlan(result, options.model);
  } finally {
    await weights.close();
  }
}
