// The demo's engine runs in a worker (WebGPU works there, and the page stays responsive while
// weights load and kernels compile); the page talks to it through comlink. It holds one
// device set for the page's life, the weights of the files the user picked, and at most one
// loaded model. Every answer is plain data (structured-clonable).
import * as Comlink from 'comlink';
import { blockMapOf, CpuKernels, loadModel, MultiGpuError, openDevices, plan, type DeviceSet, type ExecutionMode, type LoadedModel, type Plan } from '../src/index.ts';
import { blobFolder, type FileProvider } from '../src/formats/folder.ts';
import { chooseWeightsFile, openFolder } from '../src/formats/open-weights.ts';
import type { WeightSet } from '../src/formats/weights.ts';
import { definitionOf } from '../src/models/definitions.ts';
import type { BlockMap } from '../src/models/blocks.ts';
import type { HostTensor } from '../src/models/program.ts';
import { tokenizerFromFolder, type TextTokenizer } from '../src/text/tokenizer.ts';

export interface DeviceInfo {
  readonly name: string;
  /** GPUs: the adapter and backend; cpu: cores, SIMD, threads. */
  readonly detail: string;
  readonly capacity: number;
  readonly capacitySource: string;
  readonly used: number;
}

export interface DevicesInfo {
  readonly devices: DeviceInfo[];
  readonly warnings: string[];
  /** The worker's own view: threads need SharedArrayBuffer, which needs cross-origin isolation. */
  readonly crossOriginIsolated: boolean;
  readonly cpuThreads: boolean;
  readonly cores: number;
  /** Threads the cpu device's kernels run on (the worker's own included), and why only one when so. */
  readonly kernelThreads: number;
  readonly kernelNote: string | null;
}

export interface ModelInfo {
  readonly name: string;
  readonly family: string;
  readonly format: string;
  /** The weights file chosen in the folder. */
  readonly weightsFile: string;
  /** Other weights files the folder holds (variants: model.f16.safetensors, ...). */
  readonly variants: string[];
  readonly blocks: Array<{ name: string; kind: string; bytes: number }>;
  readonly totalBytes: number;
  readonly tensors: number;
  /** 'generate' (causal LMs), 'encode' (text encoders), or null: the page does not run this family. */
  readonly task: 'generate' | 'encode' | null;
  readonly maxPositions: number | null;
  readonly tokenizer: boolean;
  /** Why the tokenizer.json that was picked could not be used. */
  readonly tokenizerNote: string | null;
}

export interface PlanView {
  readonly allocation: string;
  readonly mode: string;
  readonly compute: string;
  readonly totalBytes: number;
  readonly blocks: Array<{ name: string; kind: string; bytes: number; device: string; exec: string; execDevice: string; storage: string; reason: string }>;
  readonly devices: Array<{ name: string; bytes: number; capacity: number; reserve: number; used: number; available: number; share: number | null; absorbsRemainder: boolean }>;
  readonly warnings: string[];
}

export type PlanAnswer = { ok: true; plan: PlanView } | { ok: false; code: string; message: string; position: number | null };

export interface MemoryRow {
  readonly name: string;
  readonly used: number;
  readonly capacity: number;
  /** What the loaded model holds there (weights, staging, pooled activations). */
  readonly model: number;
  /** cpu only: the kernels' WebAssembly memories (weights stored on cpu, activations), which its ledger does not count. */
  readonly wasm?: { readonly used: number; readonly committed: number };
}

export interface GenerateAnswer {
  readonly prompt: number[];
  readonly tokens: number[];
  /** With a tokenizer: the prompt's text and the continuation's, decoded as a stream would print them. */
  readonly promptText: string | null;
  readonly text: string | null;
  readonly prefillMs: number;
  readonly decodeMs: number;
  readonly tokensPerSecond: number;
  readonly decodeTokensPerSecond: number | null;
  readonly memory: MemoryRow[];
}

export interface EncodeAnswer {
  readonly prompt: number[];
  readonly ms: number;
  readonly outputs: Array<{ name: string; shape: number[]; first: number[] }>;
  readonly memory: MemoryRow[];
}

const TEXT_ENCODERS = new Set(['clip-text', 't5-encoder']);

let devices: DeviceSet | null = null;
// The cpu device's kernels (WebAssembly on worker threads), shared by every model this page loads.
let kernels: CpuKernels | null = null;
let weights: WeightSet | null = null;
let blockMap: BlockMap | null = null;
let tokenizer: TextTokenizer | null = null;
/** Rows of the token embedding (config.json's vocab_size): ids at or above it are refused here. */
let vocab: number | null = null;
let model: LoadedModel | null = null;
let loadedWith: { allocation: string; mode: string } | null = null;
const violations: string[] = [];

// A CSP violation inside the worker (its own scope) is reported to the page through this list.
self.addEventListener('securitypolicyviolation', (e) => {
  const v = e as SecurityPolicyViolationEvent;
  violations.push(`${v.effectiveDirective}: ${v.blockedURI || 'inline'}`);
});

/** Errors cross comlink as message and name only: fold the code and hint into the message. */
function plainError(error: unknown): Error {
  if (error instanceof MultiGpuError) return new Error(`${error.code}: ${error.message}`);
  return error instanceof Error ? error : new Error(String(error));
}

async function guard<T>(body: () => Promise<T>): Promise<T> {
  try {
    return await body();
  } catch (error) {
    throw plainError(error);
  }
}

function need<T>(value: T | null, what: string): T {
  if (value === null) throw new Error(what);
  return value;
}

function memory(): MemoryRow[] {
  const set = need(devices, 'devices are not open');
  const held = model?.heldBytes() ?? {};
  return set.devices.map((d) => {
    const row = { name: d.name, used: d.ledger.used, capacity: d.capacity.bytes, model: held[d.name] ?? 0 };
    if (d.name !== 'cpu' || !kernels) return row;
    const info = kernels.memoryInfo();
    return { ...row, wasm: { used: info.reduce((a, m) => a + m.usedBytes, 0), committed: info.reduce((a, m) => a + m.committedBytes, 0) } };
  });
}

function planView(p: Plan): PlanView {
  return {
    allocation: p.allocation.text, mode: p.mode, compute: p.compute, totalBytes: p.totalBytes,
    blocks: p.blocks.map((b) => ({ name: b.name, kind: b.kind, bytes: b.bytes, device: b.device, exec: b.exec, execDevice: b.execDevice, storage: b.storage, reason: b.reason })),
    devices: p.devices.map((d) => ({ name: d.name, bytes: d.bytes, capacity: d.capacity, reserve: d.reserve, used: d.used, available: d.available, share: d.share, absorbsRemainder: d.absorbsRemainder })),
    warnings: [...p.warnings],
  };
}

function parseIds(text: string): number[] {
  const parts = text.split(/[\s,]+/).filter(Boolean);
  const ids = parts.map(Number);
  const bad = parts.findIndex((p, i) => !/^\d+$/.test(p) || !Number.isSafeInteger(ids[i]));
  if (parts.length === 0) throw new Error('the prompt is empty: give token ids such as "1, 2, 3"');
  if (bad >= 0) throw new Error(`"${parts[bad]}" is not a token id: give non-negative integers separated by commas or spaces`);
  return ids;
}

async function promptIds(prompt: string, as: 'ids' | 'text'): Promise<number[]> {
  let ids: number[];
  if (as === 'ids') {
    ids = parseIds(prompt);
  } else {
    if (!tokenizer) throw new Error('text prompts need a tokenizer.json among the picked files; give token ids instead');
    ids = tokenizer.encode(prompt);
    if (ids.length === 0) throw new Error('the prompt encodes to no tokens');
  }
  const outside = vocab === null ? undefined : ids.find((id) => id >= vocab!);
  if (outside !== undefined) throw new Error(`token id ${outside} is outside the model's vocabulary (${vocab} tokens)`);
  return ids;
}

async function dropModel(): Promise<void> {
  const m = model;
  model = null;
  loadedWith = null;
  await m?.unload();
}

function makePlan(allocation: string, mode: ExecutionMode): Plan {
  const set = need(devices, 'devices are not open');
  const config = weights?.config ?? {};
  const hidden = [config.hidden_size, config.d_model, config.n_embd].find((v) => typeof v === 'number') as number | undefined;
  return plan(need(blockMap, 'pick a model first'), {
    allocation, mode, hiddenSize: hidden,
    devices: set.devices.map((d) => ({ name: d.name, capacity: d.capacity.bytes, used: d.ledger.used - (model?.heldBytes()[d.name] ?? 0) })),
  });
}

const engine = {
  /** Opens the devices (again, with declared capacities such as "gpu:0=8gb,cpu=16gb"). */
  async openDevices(memory?: string): Promise<DevicesInfo> {
    return guard(async () => {
      await dropModel();
      await devices?.close();
      await kernels?.close();
      devices = null;
      kernels = null;
      devices = await openDevices({ memory: memory?.trim() ? memory : undefined });
      kernels = await CpuKernels.create();
      const { gpus, cpu, warnings } = devices.describe();
      const list: DeviceInfo[] = [
        ...gpus.map((g) => ({ name: g.name, detail: `${g.adapter || g.vendor || 'adapter'} (${g.backend}${g.fallback ? ', fallback' : ''})`, capacity: g.capacity.bytes, capacitySource: g.capacity.source, used: 0 })),
        { name: 'cpu', detail: `${cpu.cores} cores, WebAssembly SIMD ${cpu.wasmSimd ? 'on' : 'off'}, threads ${cpu.wasmThreads ? 'on' : 'off'}`, capacity: cpu.capacity.bytes, capacitySource: cpu.capacity.source, used: 0 },
      ];
      return {
        devices: list, warnings, crossOriginIsolated: self.crossOriginIsolated, cpuThreads: cpu.wasmThreads, cores: cpu.cores,
        kernelThreads: kernels.threads, kernelNote: kernels.note,
      };
    });
  },

  /** Reads the picked files' headers (and config.json, tokenizer.json): nothing else is read yet. */
  async openModel(folder: string, files: File[], variant?: string): Promise<ModelInfo> {
    return guard(async () => {
      await dropModel();
      await weights?.close();
      weights = null;
      blockMap = null;
      tokenizer = null;
      vocab = null;
      const name = folder;
      const byName = new Map(files.map((f) => [f.name, f]));
      const provider: FileProvider = blobFolder(name, byName);
      const names = [...byName.keys()];
      const weightsFile = chooseWeightsFile(names, variant || undefined);
      weights = await openFolder(provider, { variant: variant || undefined });
      blockMap = blockMapOf(weights);
      vocab = typeof weights.config?.vocab_size === 'number' ? weights.config.vocab_size : null;
      const definition = await definitionOf(blockMap.family);
      const config = definition.configure(weights, blockMap);
      const task = definition.causalLM ? 'generate' : TEXT_ENCODERS.has(blockMap.family) ? 'encode' : null;
      let tokenizerNote: string | null = null;
      try {
        tokenizer = await tokenizerFromFolder(provider);
      } catch (error) {
        tokenizerNote = `tokenizer.json cannot be used (${(error as Error).message.split('\n')[0]}): token ids only`;
      }
      const variants = names.filter((f) => /\.(safetensors|gguf)$/.test(f) && /^(model|diffusion_pytorch_model)[.-]/.test(f) && f !== weightsFile && !/-of-\d+\.safetensors$/.test(f));
      return {
        name, family: blockMap.family, format: weights.format, weightsFile: weightsFile ?? '', variants,
        blocks: blockMap.blocks.map((b) => ({ name: b.name, kind: b.kind, bytes: b.storedBytes })),
        totalBytes: blockMap.blocks.reduce((a, b) => a + b.storedBytes, 0), tensors: weights.tensors.size,
        task, maxPositions: definition.causalLM ? definition.causalLM.maxPositions(config) : null,
        tokenizer: tokenizer !== null, tokenizerNote,
      };
    });
  },

  /** The placement this allocation gives (the same planner the CLI's `plan` uses); errors as data. */
  async plan(allocation: string, mode: ExecutionMode): Promise<PlanAnswer> {
    try {
      return { ok: true, plan: planView(makePlan(allocation, mode)) };
    } catch (error) {
      const e = error as { code?: string; message?: string; position?: unknown };
      return { ok: false, code: e.code ?? 'E_PLAN', message: String(e.message ?? error), position: typeof e.position === 'number' ? e.position : null };
    }
  },

  /** Loads the model where the plan puts it (unloading the one loaded before). */
  async load(allocation: string, mode: ExecutionMode): Promise<{ plan: PlanView; ms: number; memory: MemoryRow[] }> {
    return guard(async () => {
      await dropModel();
      const t0 = performance.now();
      model = await loadModel(need(devices, 'devices are not open'), need(weights, 'pick a model first'), { allocation, mode, cpuKernels: async () => need(kernels, 'devices are not open') });
      loadedWith = { allocation, mode };
      return { plan: planView(model.plan), ms: performance.now() - t0, memory: memory() };
    });
  },

  loaded(): { allocation: string; mode: string } | null {
    return loadedWith;
  },

  async generate(prompt: string, as: 'ids' | 'text', steps: number): Promise<GenerateAnswer> {
    return guard(async () => {
      const m = need(model, 'load the model first');
      const ids = await promptIds(prompt, as);
      const t0 = performance.now();
      const g = await m.generate(ids, steps);
      const total = performance.now() - t0;
      const stream = tokenizer?.decodeStream(ids);
      for (const t of g.tokens) stream?.push(t);
      stream?.end();
      return {
        prompt: ids, tokens: g.tokens, promptText: stream?.prompt ?? null, text: stream?.text ?? null,
        prefillMs: g.ms.prefill, decodeMs: g.ms.decode,
        tokensPerSecond: g.tokens.length / (total / 1000),
        decodeTokensPerSecond: g.tokens.length > 1 && g.ms.decode > 0 ? (g.tokens.length - 1) / (g.ms.decode / 1000) : null,
        memory: memory(),
      };
    });
  },

  async encode(prompt: string, as: 'ids' | 'text'): Promise<EncodeAnswer> {
    return guard(async () => {
      const m = need(model, 'load the model first');
      const ids = await promptIds(prompt, as);
      const r = await m.forward(new Map<string, HostTensor>([['input_ids', { data: Int32Array.from(ids), shape: [1, ids.length] }]]));
      const outputs = [...r.outputs].map(([name, t]) => ({ name, shape: [...t.shape], first: [...t.data.subarray(0, 6)] }));
      return { prompt: ids, ms: r.stats.ms, outputs, memory: memory() };
    });
  },

  /** The ids a prompt gives (shown as the user types). */
  async tokenize(prompt: string, as: 'ids' | 'text'): Promise<{ ids: number[] } | { error: string }> {
    try {
      return { ids: await promptIds(prompt, as) };
    } catch (error) {
      return { error: (error as Error).message.split('\n')[0]! };
    }
  },

  async unload(): Promise<MemoryRow[]> {
    return guard(async () => {
      await dropModel();
      return memory();
    });
  },

  memory(): MemoryRow[] {
    return memory();
  },

  violations(): string[] {
    return [...violations];
  },
};

export type Engine = typeof engine;
Comlink.expose(engine);
