import type { CostModel } from '../allocation/cost-model.ts';
import { plan as makePlan, type ExecutionMode, type Plan, type PlanDevice } from '../allocation/planner.ts';
import { CpuKernels } from '../cpu/kernels.ts';
import type { DeviceSet } from '../devices/device-set.ts';
import type { GpuDevice } from '../devices/gpu-device.ts';
import { MultiGpuError, UsageError } from '../errors.ts';
import type { WeightSet } from '../formats/weights.ts';
import type { BlockMap } from '../models/blocks.ts';
import { definitionOf } from '../models/definitions.ts';
import type { HostTensor, ModelDefinition } from '../models/program.ts';
import { blockMapOf } from '../models/registry.ts';
import { CpuBackend, CpuParam } from './cpu-backend.ts';
import { GpuBackend, GpuWeight } from './gpu-backend.ts';
import { canonicalIndex, cpuParamBytes, placeWeights, releasePlaced, type PlacedBlock } from './placement.ts';
import { measuredCostModel } from './measure.ts';
import { emptyRunStats, KvSession, Scheduler, type DeviceBackend, type RunStats } from './scheduler.ts';
import { StagingArea } from './staging.ts';

export interface LoadOptions {
  /** The allocation string (SPEC §2); default: everything on the compute device. */
  readonly allocation?: string;
  readonly compute?: string;
  readonly mode?: ExecutionMode;
  /** Family id when detection from tensor names is not wanted. */
  readonly family?: string;
  readonly reserve?: number;
  readonly embeddingsOn?: 'compute' | 'cpu';
  /** Auto mode: the cost model (default: measured on these devices once, see measure.ts). */
  readonly costModel?: CostModel;
  /** Auto mode: tokens (or latent positions) one pass computes, which weighs compute against copies. Default 512. */
  readonly tokensPerPass?: number;
  /** The cpu device's kernels, shared between models (the manager's); default: the model's own, closed on unload. */
  readonly cpuKernels?: () => Promise<CpuKernels>;
  /** Devices the plan must not use (lost GPUs). */
  readonly excludeDevices?: readonly string[];
  /**
   * Stream mode: bytes of host-visible memory streamed blocks may take (default: as much as the
   * driver gives); past it they stay in host memory and stream through a ring of mapped buffers.
   */
  readonly hostVisibleBudget?: number;
  /**
   * Stream mode: streamed blocks whose copies are queued ahead of the running step (default
   * PREFETCH = 2). Each costs one block of staging on the compute device.
   */
  readonly prefetch?: number;
}

/** The inputs a model was given do not match what it takes. */
export class ModelInputError extends MultiGpuError {
  constructor(message: string, hint: string) {
    super('E_MODEL_INPUT', message, { hint });
  }
}

export interface ForwardResult {
  readonly outputs: Map<string, HostTensor>;
  readonly stats: RunStats & { readonly stagedBytes: number; readonly ms: number };
}

export interface GenerateResult {
  readonly tokens: number[];
  /** Logits of the last position at each step ([vocab] each): the first from the prompt. */
  readonly stepLogits: Float32Array[];
  readonly ms: { readonly prefill: number; readonly decode: number };
  /** Weight bytes streamed to the compute device: in the prefill pass, and in all decode passes together. */
  readonly streamedBytes: { readonly prefill: number; readonly decode: number };
  /** Host time of the decode passes spent recording ops and submitting them (the rest is waiting for the GPU or the cpu). */
  readonly decodeHostMs: DecodeHostCost;
}

/** The decode passes' host cost, summed over them. */
export interface DecodeHostCost {
  readonly record: number;
  readonly submit: number;
  /** Waiting for activations to move between devices (pipeline hops). */
  readonly hop: number;
  readonly dispatches: number;
  readonly submits: number;
  readonly bindGroups: number;
}

/** A model whose weights sit where its plan put them, ready to run. */
export class LoadedModel {
  readonly name: string;
  readonly plan: Plan;
  readonly blockMap: BlockMap;
  readonly definition: ModelDefinition<unknown>;
  readonly config: unknown;
  readonly #devices: DeviceSet;
  readonly #placed: Map<string, PlacedBlock>;
  readonly #cpu: () => Promise<CpuKernels>;
  readonly #closeCpu: () => Promise<void>;
  readonly #backends = new Map<string, DeviceBackend>();
  readonly #staging = new Map<string, StagingArea>();
  readonly #scheduler: Scheduler;
  #unloaded = false;

  constructor(init: {
    name: string; plan: Plan; blockMap: BlockMap; definition: ModelDefinition<unknown>; config: unknown; devices: DeviceSet;
    placed: Map<string, PlacedBlock>; cpu: () => Promise<CpuKernels>; closeCpu: () => Promise<void>; prefetch?: number;
  }) {
    this.name = init.name;
    this.plan = init.plan;
    this.blockMap = init.blockMap;
    this.definition = init.definition;
    this.config = init.config;
    this.#devices = init.devices;
    this.#placed = init.placed;
    this.#cpu = init.cpu;
    this.#closeCpu = init.closeCpu;
    this.#scheduler = new Scheduler(this.plan, this.#placed, (d) => this.#backend(d), (d) => this.#stagingOn(d), init.prefetch);
  }

  get unloaded(): boolean {
    return this.#unloaded;
  }

  /** The entry points and the inputs each takes. */
  get entries(): Record<string, { inputs: readonly string[]; optionalInputs: readonly string[] }> {
    return Object.fromEntries(Object.entries(this.definition.entries).map(([k, e]) => [k, { inputs: e.inputs, optionalInputs: e.optionalInputs ?? [] }]));
  }

  async #backend(device: string): Promise<DeviceBackend> {
    let b = this.#backends.get(device);
    if (!b) {
      b = device === 'cpu' ? new CpuBackend(await this.#cpu()) : new GpuBackend(this.#devices.get(device) as GpuDevice);
      this.#backends.set(device, b);
    }
    return b;
  }

  #stagingOn(device: string): StagingArea {
    let s = this.#staging.get(device);
    if (!s) {
      s = new StagingArea(this.#devices.get(device) as GpuDevice, this.#devices.cpu);
      this.#staging.set(device, s);
    }
    return s;
  }

  /** Bytes the last pass staged ahead for this one (decoding). */
  #stagedAhead = 0;

  #check(): void {
    if (this.#unloaded) throw new UsageError(`model ${this.name} was unloaded`, { hint: 'load it again' });
  }

  /** Runs one entry point ('forward'; the VAE's 'encode' or 'decode'). */
  async forward(inputs: ReadonlyMap<string, HostTensor> | Readonly<Record<string, HostTensor>>, entry = 'forward', session?: KvSession,
    only?: readonly string[], another = false): Promise<ForwardResult> {
    this.#check();
    const map = inputs instanceof Map ? inputs as ReadonlyMap<string, HostTensor> : new Map(Object.entries(inputs));
    const def = this.definition.entries[entry];
    if (!def) {
      throw new ModelInputError(`${this.name} (${this.definition.family}) has no entry "${entry}"`, `entries: ${Object.keys(this.definition.entries).join(', ')}`);
    }
    const missing = def.inputs.filter((n) => !map.has(n));
    if (missing.length > 0) {
      throw new ModelInputError(`${this.name} (${this.definition.family}, ${entry}) needs input(s) ${missing.join(', ')}; got ${[...map.keys()].join(', ') || 'none'}`,
        `name the tensors as the reference implementation's arguments: ${[...def.inputs, ...(def.optionalInputs ?? [])].join(', ')}`);
    }
    const start = performance.now();
    const stats = emptyRunStats();
    const staged = () => [...this.#staging.values()].reduce((s, a) => s + a.copiedBytes, 0);
    const before = staged();
    const all = def.outputs(this.config, map);
    const unknown = only?.filter((n) => !all.includes(n)) ?? [];
    if (unknown.length > 0) throw new ModelInputError(`${this.name}: no output named ${unknown.join(', ')}`, `outputs: ${all.join(', ')}`);
    const outputs = await this.#scheduler.run(def.steps(this.config, map), map, only ?? all, session, stats, another);
    // Copies queued for the next pass count there, not here.
    const ahead = stats.aheadBytes ?? 0;
    const stagedBytes = staged() - before - ahead + this.#stagedAhead;
    this.#stagedAhead = ahead;
    return { outputs, stats: { ...stats, stagedBytes, ms: performance.now() - start } };
  }

  /**
   * Greedy decoding from one prompt (causal LMs): a prefill pass fills the KV caches, then one
   * token per pass. Returns the new tokens and each step's last-position logits. `onToken` sees
   * each token as soon as it is chosen (index 0 from the prefill pass); returning false stops
   * generation after that token (an end-of-sequence token, a stop button).
   */
  async generate(prompt: readonly number[], newTokens: number,
    o: { inputName?: string; onToken?: (token: number, index: number) => boolean | void } = {}): Promise<GenerateResult> {
    this.#check();
    const lm = this.definition.causalLM;
    if (!lm) throw new ModelInputError(`${this.name} (${this.definition.family}) is not a causal LM`, 'generate runs llama and gpt2 models; use forward');
    if (prompt.length === 0) throw new ModelInputError('generate: the prompt is empty', 'give at least one token id');
    const vocab = lm.vocab(this.config);
    const bad = prompt.findIndex((t) => !Number.isInteger(t) || t < 0 || t >= vocab);
    if (bad >= 0) throw new ModelInputError(`generate: prompt token ${bad} is ${prompt[bad]}, outside the vocabulary 0..${vocab - 1}`, 'give token ids the model\'s tokenizer made');
    const capacity = prompt.length + newTokens;
    const max = lm.maxPositions(this.config);
    if (capacity > max) throw new ModelInputError(`generate: ${capacity} positions exceed the model's ${max}`, 'shorten the prompt or ask for fewer tokens');
    const session = new KvSession(capacity);
    const input = o.inputName ?? 'input_ids';
    const tokens: number[] = [];
    const stepLogits: Float32Array[] = [];
    const t0 = performance.now();
    let prefill = 0;
    const streamed = { prefill: 0, decode: 0 };
    const host = { record: 0, submit: 0, hop: 0, dispatches: 0, submits: 0, bindGroups: 0 };
    try {
      let ids = Int32Array.from(prompt);
      for (let i = 0; i < newTokens; i++) {
        // Only the logits come back to the host: the hidden states stay where they were made.
        const r = await this.forward(new Map([[input, { data: ids, shape: [1, ids.length] }]]), 'forward', session, [lm.logits], i + 1 < newTokens);
        streamed[i === 0 ? 'prefill' : 'decode'] += r.stats.stagedBytes;
        if (i > 0) {
          host.record += r.stats.recordMs;
          host.submit += r.stats.submitMs;
          host.hop += r.stats.hopMs;
          host.dispatches += r.stats.dispatches;
          host.submits += r.stats.submits;
          host.bindGroups += r.stats.bindGroups;
        }
        session.position += ids.length;
        const logits = r.outputs.get(lm.logits)!;
        const vocab = logits.shape[logits.shape.length - 1]!;
        const last = (logits.data as Float32Array).slice(logits.data.length - vocab);
        stepLogits.push(last);
        let best = 0;
        for (let v = 1; v < vocab; v++) if (last[v]! > last[best]!) best = v;
        tokens.push(best);
        ids = Int32Array.of(best);
        if (i === 0) prefill = performance.now() - t0;
        if (o.onToken?.(best, i) === false) break;
      }
    } finally {
      this.#scheduler.releasePrestaged();
      this.#stagedAhead = 0;
      session.close();
    }
    return { tokens, stepLogits, ms: { prefill, decode: performance.now() - t0 - prefill }, streamedBytes: streamed, decodeHostMs: host };
  }

  /** Frees its pooled activation and staging buffers (they come back as needed); returns the bytes freed. */
  trim(): number {
    let n = 0;
    for (const b of this.#backends.values()) if (b instanceof GpuBackend) n += b.trim();
    for (const s of this.#staging.values()) n += s.trim();
    return n;
  }

  /** Bytes this model holds on each device's ledger: weights, host-visible copies (cpu), staging areas, tables. */
  heldBytes(): Record<string, number> {
    const held: Record<string, number> = {};
    const add = (device: string, bytes: number) => (held[device] = (held[device] ?? 0) + bytes);
    const seen = new Set<unknown>();
    for (const b of this.#placed.values()) {
      for (const w of [...b.weights.values(), ...b.donor.values()]) {
        if (!(w instanceof GpuWeight) || seen.has(w.t.storage)) continue;
        seen.add(w.t.storage);
        add(w.device, w.t.storage.bytes);
      }
      for (const h of b.hostVisible.values()) add('cpu', h.buffer.bytes);
      for (const h of b.hostMemory.values()) add('cpu', h.bytes.byteLength);
      for (const w of b.weights.values()) if (w instanceof CpuParam && !seen.has(w)) {
        seen.add(w);
        add('cpu', cpuParamBytes(w));
      }
    }
    for (const [device, s] of this.#staging) {
      add(device, s.heldBytes);
      if (s.hostHeldBytes > 0) add('cpu', s.hostHeldBytes);
    }
    for (const [device, b] of this.#backends) if (b instanceof GpuBackend) add(device, b.heldBytes);
    return held;
  }

  /** Frees every weight, staging area, activation and CPU memory this model holds. */
  async unload(): Promise<void> {
    if (this.#unloaded) return;
    this.#unloaded = true;
    for (const b of this.#backends.values()) if (b instanceof GpuBackend) await b.close();
    for (const s of this.#staging.values()) s.destroy();
    await releasePlaced(this.#placed, this.#cpu);
    await this.#closeCpu();
  }
}

function planDevices(devices: DeviceSet, exclude: readonly string[] = []): PlanDevice[] {
  return devices.devices.filter((d) => !exclude.includes(d.name)).map((d) => ({ name: d.name, capacity: d.capacity.bytes, used: d.ledger.used }));
}

/** Plans a model on the devices, loads its weights where the plan puts them, and returns it ready to run. */
export async function loadModel(devices: DeviceSet, weights: WeightSet, options: LoadOptions = {}): Promise<LoadedModel> {
  const blockMap = blockMapOf(weights, options.family);
  const definition = await definitionOf(blockMap.family);
  const config = definition.configure(weights, blockMap);
  const compute = options.compute ?? (devices.gpus.length > 0 ? 'gpu:0' : 'cpu');
  let kernels: Promise<CpuKernels> | null = null;
  const cpu = options.cpuKernels ?? (() => (kernels ??= CpuKernels.create()));
  const closeCpu = async () => {
    if (kernels) await (await kernels).close();
    kernels = null;
  };
  try {
    const auto = (options.mode ?? 'auto') === 'auto' && compute !== 'cpu';
    const costModel = options.costModel ?? (auto ? await measuredCostModel(devices, compute, cpu, options.tokensPerPass) : undefined);
    const plan = makePlan(blockMap, {
      allocation: options.allocation ?? `${compute},*`,
      devices: planDevices(devices, options.excludeDevices),
      compute,
      mode: options.mode,
      reserve: options.reserve,
      embeddingsOn: options.embeddingsOn,
      costModel,
      hiddenSize: typeof weights.config?.hidden_size === 'number' ? weights.config.hidden_size : undefined,
    });
    const index = canonicalIndex(weights, definition.canonical(blockMap.scheme, weights, config));
    const placed = await placeWeights({ devices, weights, blockMap, plan, index, cpuKernels: cpu, hostVisibleBudget: options.hostVisibleBudget });
    return new LoadedModel({ name: weights.name, plan, blockMap, definition: definition as ModelDefinition<unknown>, config, devices, placed, cpu, closeCpu,
      prefetch: options.prefetch });
  } catch (error) {
    await closeCpu();
    throw error;
  }
}
