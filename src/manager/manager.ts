import type { ExecutionMode } from '../allocation/planner.ts';
import { PlanCapacityError } from '../allocation/planner.ts';
import { CpuKernels } from '../cpu/kernels.ts';
import { CpuMemoryFullError } from '../cpu/memory.ts';
import type { DeviceLostEvent, DeviceSet } from '../devices/device-set.ts';
import { CapacityExceededError, GpuOutOfMemoryError } from '../devices/errors.ts';
import type { GpuDevice } from '../devices/gpu-device.ts';
import type { WeightSet } from '../formats/weights.ts';
import { dropAttentionBuffers } from '../kernels/ops/attention-common.ts';
import { releaseSgmatScratch } from '../kernels/ops/matmul.ts';
import { dropPipelines } from '../kernels/pipelines.ts';
import type { HostTensor } from '../models/program.ts';
import { loadModel, type ForwardResult, type GenerateResult, type LoadedModel } from '../runtime/model.ts';
import { ManagerCapacityError, ModelUnusableError, UnknownManagedModelError } from './errors.ts';
import { allocationWithout } from './replan.ts';

export interface ManagerOptions {
  /** Print the seed's unload lines (also on with MULTIGPU_LOG=1); a function receives them instead. */
  readonly log?: boolean | ((line: string) => void);
}

export interface ManagedLoadOptions {
  readonly allocation?: string;
  readonly compute?: string;
  readonly mode?: ExecutionMode;
  readonly family?: string;
  /** false: unloadAll() unloads it. Default true. */
  readonly keepLoaded?: boolean;
}

/** What the manager knows of one model. */
interface Entry {
  readonly name: string;
  readonly weights: WeightSet;
  options: ManagedLoadOptions;
  model: LoadedModel | null;
  /** Runs in progress: never evicted while above 0. */
  active: number;
  lastUsed: number;
  /** Why it can't run as loaded (a device it used was lost); the next run re-plans. */
  unusable: string | null;
}

export interface ManagedModelInfo {
  readonly name: string;
  readonly keepLoaded: boolean;
  readonly loaded: boolean;
  readonly active: number;
  readonly unusable: string | null;
  /** Devices it stores weights on or runs on. */
  readonly devices: readonly string[];
}

const env = (globalThis as { process?: { env?: Record<string, string | undefined> } }).process?.env;

/**
 * Several models loaded together on one device set (SPEC §4): selective unload, eviction of
 * least-recently-used idle models under memory pressure, and re-planning after a lost GPU.
 */
export class ModelManager {
  readonly devices: DeviceSet;
  readonly #entries = new Map<string, Entry>();
  readonly #log: ((line: string) => void) | null;
  #kernels: Promise<CpuKernels> | null = null;
  readonly #lost = new Set<string>();
  readonly #unsubscribe: () => void;
  #clock = 0;

  constructor(devices: DeviceSet, options: ManagerOptions = {}) {
    this.devices = devices;
    const log = options.log ?? (env?.MULTIGPU_LOG === '1');
    this.#log = typeof log === 'function' ? log : log ? (line) => console.log(line) : null;
    this.#unsubscribe = devices.onDeviceLost((e) => this.#onLost(e));
  }

  #cpu = (): Promise<CpuKernels> => (this.#kernels ??= CpuKernels.create());

  /** What is allocated now: bytes and live buffers per device ledger, and the cpu kernels' WebAssembly memories. */
  async memory(): Promise<{ ledgers: Record<string, { bytes: number; buffers: number }>; wasmMemories: number }> {
    const ledgers = Object.fromEntries(this.devices.devices.map((d) => [d.name, { bytes: d.ledger.used, buffers: d.ledger.count }]));
    const wasmMemories = this.#kernels ? (await this.#kernels).memoryInfo().length : 0;
    return { ledgers, wasmMemories };
  }

  /** Models by name, in load order. */
  list(): ManagedModelInfo[] {
    return [...this.#entries.values()].map((e) => ({
      name: e.name, keepLoaded: e.options.keepLoaded ?? true, loaded: e.model !== null, active: e.active, unusable: e.unusable,
      devices: e.model ? devicesOf(e.model) : [],
    }));
  }

  model(name: string): LoadedModel {
    const e = this.#entry(name);
    if (!e.model) throw new ModelUnusableError(name, 'it is not loaded');
    return e.model;
  }

  #entry(name: string): Entry {
    const e = this.#entries.get(name);
    if (!e) throw new UnknownManagedModelError(name, [...this.#entries.keys()]);
    return e;
  }

  /** Loads (or reloads) a model under `name`; under memory pressure, idle models that are not kept go first. */
  async load(name: string, weights: WeightSet, options: ManagedLoadOptions = {}): Promise<LoadedModel> {
    const old = this.#entries.get(name);
    if (old?.active) throw new ModelUnusableError(name, 'a run is using it; load it again when the run ends');
    if (old?.model) await this.#unload(old);
    const entry: Entry = { name, weights, options, model: null, active: 0, lastUsed: ++this.#clock, unusable: null };
    this.#entries.set(name, entry);
    entry.active++; // a model being loaded is in use: never its own eviction candidate
    try {
      entry.model = await this.#withEviction(name, () => this.#place(entry));
    } catch (error) {
      this.#entries.delete(name);
      throw error;
    } finally {
      entry.active--;
    }
    return entry.model;
  }

  #place(entry: Entry): Promise<LoadedModel> {
    const lost = this.#lost;
    const o = entry.options;
    const gpus = this.devices.gpus.filter((g) => !lost.has(g.name));
    const compute = o.compute && !lost.has(o.compute) ? o.compute : (gpus[0]?.name ?? 'cpu');
    const allocation = o.allocation === undefined ? undefined : allocationWithout(o.allocation, lost);
    return loadModel(this.devices, entry.weights, {
      allocation, compute, mode: o.mode, family: o.family, cpuKernels: this.#cpu, excludeDevices: [...lost],
    });
  }

  /** Runs `body`; when a device is short of memory, frees the least recently used idle, unkept model there and tries again. */
  async #withEviction<T>(forModel: string, body: () => Promise<T>): Promise<T> {
    let trimmedOnce = false;
    for (;;) {
      try {
        return await body();
      } catch (error) {
        const short = shortDevices(error);
        if (!short) throw error;
        // Pooled buffers of every model go before any model does (once: a run refills its own pool).
        const trimmed = trimmedOnce ? 0 : [...this.#entries.values()].reduce((n, e) => n + (e.model?.trim() ?? 0), 0);
        trimmedOnce = true;
        if (trimmed > 0) {
          this.#line(`[MEMORY_PRESSURE] freed ${trimmed} bytes of pooled activation and staging buffers for ${forModel}`);
          continue;
        }
        const victim = this.#victim(short, forModel);
        if (!victim) throw new ManagerCapacityError(forModel, error as Error, this.list().filter((m) => m.loaded && m.name !== forModel));
        this.#line(`[MEMORY_PRESSURE] freeing ${victim.name} (least recently used, idle, not kept) for ${forModel} on ${short.join(', ')}`);
        await this.#unload(victim);
        this.#entries.delete(victim.name);
      }
    }
  }

  #victim(devices: readonly string[], except: string): Entry | null {
    const candidates = [...this.#entries.values()].filter((e) =>
      e.name !== except && e.model && e.active === 0 && !(e.options.keepLoaded ?? true) && devicesOf(e.model).some((d) => devices.includes(d)));
    candidates.sort((a, b) => a.lastUsed - b.lastUsed);
    return candidates[0] ?? null;
  }

  async #ready(name: string): Promise<Entry> {
    const e = this.#entry(name);
    if (e.unusable || !e.model) {
      // A device it used was lost: plan again on the devices that remain.
      if (e.model) await this.#unload(e, true);
      e.active++;
      try {
        e.model = await this.#withEviction(name, () => this.#place(e));
        e.unusable = null;
      } finally {
        e.active--;
      }
    }
    return e;
  }

  /** Runs one entry point of a model; it is in use (never evicted) until the run ends. */
  forward(name: string, inputs: ReadonlyMap<string, HostTensor> | Readonly<Record<string, HostTensor>>, entry = 'forward'): Promise<ForwardResult> {
    return this.#run(name, (m) => m.forward(inputs, entry));
  }

  generate(name: string, prompt: readonly number[], tokens: number): Promise<GenerateResult> {
    return this.#run(name, (m) => m.generate(prompt, tokens));
  }

  async #run<T>(name: string, body: (m: LoadedModel) => Promise<T>): Promise<T> {
    const e = await this.#ready(name);
    e.active++;
    e.lastUsed = ++this.#clock;
    try {
      return await this.#withEviction(name, () => body(e.model!));
    } catch (error) {
      // A device lost in the middle of the run: whatever the failing call threw, say so; the next run re-plans.
      if (e.unusable) throw new ModelUnusableError(name, `${e.unusable} during the run; run it again to re-plan it onto the devices left`, error);
      throw error;
    } finally {
      e.active--;
    }
  }

  #line(text: string): void {
    this.#log?.(text);
  }

  async #unload(e: Entry, keepEntry = false): Promise<void> {
    const m = e.model;
    e.model = null;
    if (m) await m.unload();
    if (!keepEntry) await e.weights.close().catch(() => {});
  }

  /** Unloads the models whose keepLoaded is false; the others stay loaded and usable, exactly as before. */
  async unloadAll(): Promise<void> {
    const all = [...this.#entries.values()].filter((e) => e.model);
    const kept = all.filter((e) => (e.options.keepLoaded ?? true) || e.active > 0);
    const drop = all.filter((e) => !kept.includes(e));
    this.#line(`[CATEGORIZE_SUMMARY] kept_models: ${kept.length}, models_to_unload: ${drop.length}, total: ${all.length}`);
    if (drop.length > 0) this.#line(`[SELECTIVE_UNLOAD] Proceeding with selective unload: retaining ${kept.length}, unloading ${drop.length}`);
    for (const e of drop) {
      await this.#unload(e);
      this.#entries.delete(e.name);
    }
    kept.forEach((e, i) => this.#line(`[REMAINING_MODEL] ${i}: ${e.name}`));
  }

  /** Unloads everything and drops every cache (pipelines, staging areas, pooled buffers): the state of a fresh start. */
  async freeAll(): Promise<void> {
    const busy = [...this.#entries.values()].filter((e) => e.active > 0);
    if (busy.length > 0) throw new ModelUnusableError(busy[0]!.name, 'freeAll was called while a run is using it; await the run first');
    const all = [...this.#entries.values()];
    this.#line(`[CATEGORIZE_SUMMARY] kept_models: 0, models_to_unload: ${all.length}, total: ${all.length}`);
    for (const e of all) await this.#unload(e);
    this.#entries.clear();
    for (const gpu of this.devices.gpus) await dropGpuCaches(gpu);
    const k = this.#kernels;
    this.#kernels = null;
    if (k) await (await k).close();
  }

  /** freeAll, and stop listening to the device set. */
  async close(): Promise<void> {
    await this.freeAll();
    this.#unsubscribe();
  }

  #onLost(event: DeviceLostEvent): void {
    const device = event.device.name;
    this.#lost.add(device);
    for (const e of this.#entries.values()) {
      if (e.model && devicesOf(e.model).includes(device)) {
        e.unusable = `${device} was lost (${event.reason})`;
        this.#line(`[DEVICE_LOST] ${device}: ${e.name} is unusable until its next run re-plans it`);
      }
    }
  }
}

/** Every device a model stores weights on, runs on, or computes on. */
export function devicesOf(m: LoadedModel): string[] {
  const set = new Set<string>([m.plan.compute]);
  for (const b of m.plan.blocks) {
    set.add(b.device);
    set.add(b.execDevice);
  }
  return [...set];
}

/** The devices an error says are short of memory, or null for other errors. */
function shortDevices(error: unknown): string[] | null {
  if (error instanceof PlanCapacityError) return error.shortfalls.map((s) => s.device);
  if (error instanceof CapacityExceededError || error instanceof GpuOutOfMemoryError) return [error.device];
  if (error instanceof CpuMemoryFullError) return ['cpu'];
  return null;
}

async function dropGpuCaches(gpu: GpuDevice): Promise<void> {
  dropPipelines(gpu);
  await dropAttentionBuffers(gpu);
  releaseSgmatScratch(gpu);
}
