/**
 * CpuKernels: the CPU device's op runner. Weights are loaded once into WebAssembly memories
 * (in the layout the kernels read: dtypes.ts), ops run on a thread pool (pool.ts) and take
 * and return plain Float32Arrays. Weights of any total size: each memory holds at most
 * `memoryLimit` bytes (4 GiB, wasm32's ceiling), a weight that does not fit one memory is
 * split by rows over several, and a memory whose weights are all freed is dropped whole.
 */
import { detectRuntime, importNodeBuiltin } from '../devices/runtime.ts';
import { CPU_WEIGHT_LAYOUT, isCpuWeightDtype, packPanels, residentWeightBytes, storedWeightBytes, type CpuWeightDtype } from './dtypes.ts';
import { CpuMemory, CpuMemoryFullError, MAX_MEMORY_BYTES, SCRATCH_BYTES } from './memory.ts';
import { CpuKernelError, ThreadPool } from './pool.ts';
import { CPU_KERNELS_WASM } from './wasm.generated.ts';

export { CpuKernelError } from './pool.ts';
export { CpuMemoryFullError } from './memory.ts';

/** Exports every thread runs: fn(job pointer, thread id). */
const THREAD_FNS = ['linear_run', 'ops_run'] as const;

export interface CpuKernelsOptions {
  /** Threads, the calling one included (default: the host's cores; 1 without SharedArrayBuffer). */
  readonly threads?: number;
  /** Bytes per WebAssembly memory (default and maximum 4 GiB); tests lower it to exercise the multi-memory path. */
  readonly memoryLimit?: number;
  /** Bytes each weight memory keeps free for an op's activations (default min(64 MiB, limit / 8)). */
  readonly activationReserve?: number;
  /** false: the unshared single-thread build, as on a page without cross-origin isolation. */
  readonly shared?: boolean;
  /** 'auto' (default): a job of one work item runs on the calling thread alone; 'always': every job wakes every worker (tests). */
  readonly wakeWorkers?: 'auto' | 'always';
}

/** Rows [n0, n1) of a weight, resident in one memory. */
interface WeightPart {
  readonly memory: CpuMemory;
  readonly at: number;
  readonly n0: number;
  readonly n1: number;
}

/** A weight [n, k] resident in the CPU device's memories. */
export class CpuWeight {
  readonly n: number;
  readonly k: number;
  readonly dtype: CpuWeightDtype;
  /** fp8 "scaled" checkpoints: one f32 factor per tensor, applied to the op's output (1 otherwise). */
  readonly scale: number;
  readonly label: string;
  /** @internal */
  parts: WeightPart[];
  constructor(n: number, k: number, dtype: CpuWeightDtype, scale: number, label: string, parts: WeightPart[]) {
    this.n = n;
    this.k = k;
    this.dtype = dtype;
    this.scale = scale;
    this.label = label;
    this.parts = parts;
  }
  get freed(): boolean {
    return this.parts.length === 0;
  }
  /** Bytes it holds in WebAssembly memory (panels padded to 8 rows). */
  get residentBytes(): number {
    return this.parts.reduce((s, p) => s + residentWeightBytes(this.dtype, p.n1 - p.n0, this.k), 0);
  }
  /** Memory slots its rows live in (more than one when it did not fit one memory). */
  get memorySlots(): number[] {
    return this.parts.map((p) => p.memory.slot);
  }
}

export interface LinearCallOptions {
  /** f32 [n] added to every row. */
  readonly bias?: Float32Array | null;
  /** Multiplies Σ x·w (before the bias); fp8 weights' own scale multiplies into it. */
  readonly scale?: number;
}

export interface CpuMemoryInfo {
  readonly slot: number;
  readonly committedBytes: number;
  readonly usedBytes: number;
  readonly limitBytes: number;
  readonly weights: number;
}

async function hostCores(): Promise<number> {
  if (detectRuntime() !== 'browser') {
    const os = await importNodeBuiltin<typeof import('node:os')>('os');
    return typeof os.availableParallelism === 'function' ? os.availableParallelism() : os.cpus().length;
  }
  return globalThis.navigator?.hardwareConcurrency ?? 1;
}

/** Why threads are unavailable here, or null when SharedArrayBuffer and shared memories work. */
export function threadsUnavailableReason(): string | null {
  const g = globalThis as { crossOriginIsolated?: boolean };
  if (typeof SharedArrayBuffer === 'undefined' || g.crossOriginIsolated === false) {
    return 'SharedArrayBuffer is unavailable (a browser page must be cross-origin isolated: serve it with ' +
      '"Cross-Origin-Opener-Policy: same-origin" and "Cross-Origin-Embedder-Policy: require-corp"), so the CPU device runs on one thread';
  }
  try {
    new WebAssembly.Memory({ initial: 1, maximum: 1, shared: true } as WebAssembly.MemoryDescriptor);
  } catch (error) {
    return `shared WebAssembly memory is unavailable (${String(error)}), so the CPU device runs on one thread`;
  }
  return null;
}

const moduleCache = new Map<string, Promise<WebAssembly.Module>>();

function decodeBase64(text: string): Uint8Array {
  const g = globalThis as { Buffer?: { from(s: string, e: string): Uint8Array } };
  if (g.Buffer) return new Uint8Array(g.Buffer.from(text, 'base64'));
  const bin = atob(text);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

function kernelModule(variant: 'mt' | 'st'): Promise<WebAssembly.Module> {
  let m = moduleCache.get(variant);
  if (!m) {
    m = WebAssembly.compile(decodeBase64(CPU_KERNELS_WASM[variant]) as Uint8Array<ArrayBuffer>);
    moduleCache.set(variant, m);
  }
  return m;
}

const JOB = { x: 0, w: 4, out: 8, bias: 12, m: 16, n: 20, k: 24, wtype: 28, scale: 32, ldx: 36, ldo: 40, scratch: 44, scratchBytes: 48, next: 52, threads: 56 } as const;

export class CpuKernels {
  readonly threads: number;
  /** Whether ops run on several threads. */
  readonly multiThreaded: boolean;
  /** Why the device runs single-threaded when more cores exist (no cross-origin isolation), or null. */
  readonly note: string | null;
  readonly memoryLimit: number;
  private readonly module: WebAssembly.Module;
  private readonly pool: ThreadPool;
  private readonly shared: boolean;
  private readonly heapBase: number;
  private readonly activationReserve: number;
  private readonly memories: CpuMemory[] = [];
  /** Holds activations of ops without weights; never dropped before close(). */
  private work: CpuMemory | null = null;
  private nextSlot = 0;
  private queue: Promise<unknown> = Promise.resolve();
  /** Emptied memories kept for reuse (at most SPARE_MEMORIES), not counted by memoryInfo. */
  private readonly spares: CpuMemory[] = [];
  private closed = false;
  private alwaysWake = false;

  private constructor(init: {
    threads: number; note: string | null; memoryLimit: number; module: WebAssembly.Module; pool: ThreadPool; shared: boolean;
    heapBase: number; activationReserve: number;
  }) {
    this.threads = init.threads;
    this.multiThreaded = init.threads > 1;
    this.note = init.note;
    this.memoryLimit = init.memoryLimit;
    this.module = init.module;
    this.pool = init.pool;
    this.shared = init.shared;
    this.heapBase = init.heapBase;
    this.activationReserve = init.activationReserve;
  }

  static async create(options: CpuKernelsOptions = {}): Promise<CpuKernels> {
    const reason = options.shared === false ? 'the unshared single-thread build was asked for (shared: false)' : threadsUnavailableReason();
    const shared = reason === null;
    const cores = await hostCores();
    let threads = Math.max(1, Math.floor(options.threads ?? cores));
    let note: string | null = null;
    if (!shared) {
      if (threads > 1 || options.threads === undefined) note = reason;
      threads = 1;
      if (note && options.shared !== false) console.warn(`multigpu-web: ${note}`);
    }
    const memoryLimit = Math.min(MAX_MEMORY_BYTES, options.memoryLimit ?? MAX_MEMORY_BYTES);
    const module = await kernelModule(shared ? 'mt' : 'st');
    // The module's heap base: the same for every instance, read from a throwaway instance.
    const probe = new WebAssembly.Memory({ initial: 16, maximum: 16, shared } as WebAssembly.MemoryDescriptor);
    const heapBase = (new WebAssembly.Instance(module, { env: { memory: probe } }).exports.__heap_base as WebAssembly.Global).value as number;
    const pool = await ThreadPool.create(threads, module, THREAD_FNS);
    const activationReserve = options.activationReserve ?? Math.min(64 * 1024 * 1024, Math.floor(memoryLimit / 8));
    const kernels = new CpuKernels({ threads, note, memoryLimit, module, pool, shared, heapBase, activationReserve });
    kernels.alwaysWake = options.wakeWorkers === 'always';
    kernels.work = await kernels.newMemory(0);
    return kernels;
  }

  /** The memories in use (the activations' memory first). */
  memoryInfo(): CpuMemoryInfo[] {
    const count = (m: CpuMemory) => m === this.work ? 0 : m.liveAllocations;
    return this.memories.map((m) => ({ slot: m.slot, committedBytes: m.committedBytes, usedBytes: m.used, limitBytes: m.limit, weights: count(m) }));
  }

  private async newMemory(initialBytes: number): Promise<CpuMemory> {
    // A shared memory is freed only when every worker's isolate collects it, which idle workers
    // rarely do: memories a load/unload cycle left empty are kept (a few) and reused instead.
    const spare = this.spares.pop();
    if (spare) {
      this.memories.push(spare);
      return spare;
    }
    const memory = new CpuMemory(this.nextSlot++, this.heapBase, this.threads, this.memoryLimit, this.shared, initialBytes);
    const instance = new WebAssembly.Instance(this.module, { env: { memory: memory.memory } });
    (instance.exports.__stack_pointer as WebAssembly.Global).value = memory.stackTops[0]!;
    memory.instance = instance;
    await this.pool.broadcast((tid) => ({ type: 'memory', slot: memory.slot, memory: memory.memory, stackTop: memory.stackTops[tid]! }));
    this.memories.push(memory);
    return memory;
  }

  private async dropMemory(memory: CpuMemory): Promise<void> {
    const i = this.memories.indexOf(memory);
    if (i >= 0) this.memories.splice(i, 1);
    if (this.spares.length < SPARE_MEMORIES && memory.liveAllocations === 0) {
      this.spares.push(memory);
      return;
    }
    memory.instance = null;
    await this.pool.broadcast(() => ({ type: 'drop', slot: memory.slot }));
  }

  /** Runs `task` after every earlier op (ops share the pool and the memories' job records). */
  private serial<T>(task: () => T | Promise<T>): Promise<T> {
    if (this.closed) return Promise.reject(new CpuKernelError('CpuKernels is closed'));
    const next = this.queue.then(task, task);
    this.queue = next.catch(() => undefined);
    return next;
  }

  /**
   * Loads a weight [n, k] from its stored bytes (row-major; GGUF blocks along k), or from f32
   * values for dtype 'f32'. Placed whole in the first memory with room, else in a new memory;
   * split by rows when one memory cannot hold it.
   */
  loadWeight(data: Uint8Array | Float32Array, shape: readonly [number, number], dtype: CpuWeightDtype = 'f32',
    options: { scale?: number; label?: string } = {}): Promise<CpuWeight> {
    return this.serial(() => this.load(data, shape, dtype, options));
  }

  private async load(data: Uint8Array | Float32Array, shape: readonly [number, number], dtype: CpuWeightDtype,
    options: { scale?: number; label?: string }): Promise<CpuWeight> {
    if (!isCpuWeightDtype(dtype)) throw new RangeError(`unknown CPU weight dtype ${String(dtype)}`);
    const [n, k] = shape;
    if (!Number.isSafeInteger(n) || !Number.isSafeInteger(k) || n <= 0 || k <= 0) throw new RangeError(`weight shape ${JSON.stringify(shape)}`);
    const bytes = data instanceof Float32Array ? new Uint8Array(data.buffer, data.byteOffset, data.byteLength) : data;
    if (data instanceof Float32Array && dtype !== 'f32') throw new RangeError(`Float32Array weights load as f32, not ${dtype}`);
    const expected = storedWeightBytes(dtype, n, k);
    if (bytes.byteLength !== expected) throw new RangeError(`${dtype} [${n}, ${k}] needs ${expected} bytes, got ${bytes.byteLength}`);
    const layout = CPU_WEIGHT_LAYOUT[dtype];
    const rowGroup = layout.panels ? 8 : 1;
    const groupBytes = residentWeightBytes(dtype, rowGroup, k);
    const label = options.label ?? `weight[${n}x${k} ${dtype}]`;
    const parts: WeightPart[] = [];
    try {
      for (let n0 = 0; n0 < n;) {
        const left = residentWeightBytes(dtype, n - n0, k);
        let memory = this.memories.find((m) => m !== this.work && m.available - this.activationReserve >= left);
        let rows = n - n0;
        if (!memory) {
          const fresh = await this.newMemory(0);
          const room = fresh.available - this.activationReserve;
          const groups = Math.floor(room / groupBytes);
          if (groups < 1) {
            await this.dropMemory(fresh);
            throw new CpuMemoryFullError(`${label}: ${rowGroup} row(s) of ${groupBytes} bytes do not fit a CPU memory of ${this.memoryLimit} bytes with a ${this.activationReserve}-byte activation reserve`);
          }
          rows = Math.min(rows, groups * rowGroup);
          memory = fresh;
        }
        const size = residentWeightBytes(dtype, rows, k);
        const at = memory.alloc(size);
        if (at === null) throw new CpuMemoryFullError(`${label}: CPU memory ${memory.slot} refused ${size} bytes`);
        parts.push({ memory, at, n0, n1: n0 + rows });
        const dst = memory.bytes(at, size);
        if (layout.panels) packPanels(dtype, bytes, k, n0, n0 + rows, dst);
        else dst.set(bytes.subarray(storedWeightBytes(dtype, n0, k), storedWeightBytes(dtype, n0 + rows, k)));
        n0 += rows;
      }
    } catch (error) {
      await this.releaseParts(parts);
      throw error;
    }
    return new CpuWeight(n, k, dtype, options.scale ?? 1, label, parts);
  }

  private async releaseParts(parts: readonly WeightPart[]): Promise<void> {
    for (const p of parts) {
      p.memory.release(p.at);
      if (p.memory !== this.work && p.memory.liveAllocations === 0) await this.dropMemory(p.memory);
    }
  }

  /** Frees a weight; memories left without weights are dropped (a memory never shrinks). */
  freeWeight(weight: CpuWeight): Promise<void> {
    return this.serial(async () => {
      const parts = weight.parts;
      weight.parts = [];
      await this.releaseParts(parts);
    });
  }

  /** out[m, n] = scale · x[m, k] · wᵀ + bias: the `linear` op. */
  linear(x: Float32Array, m: number, weight: CpuWeight, options: LinearCallOptions = {}): Promise<Float32Array> {
    return this.serial(() => this.linearNow(x, m, weight, options));
  }

  private async linearNow(x: Float32Array, m: number, w: CpuWeight, options: LinearCallOptions): Promise<Float32Array> {
    if (w.freed) throw new CpuKernelError(`${w.label} was freed`);
    const { n, k } = w;
    if (!Number.isSafeInteger(m) || m <= 0 || x.length !== m * k) throw new RangeError(`linear: x has ${x.length} values, not ${m}×${k}`);
    const bias = options.bias ?? null;
    if (bias && bias.length !== n) throw new RangeError(`linear: bias has ${bias.length} values, not ${n}`);
    const scale = (options.scale ?? 1) * w.scale;
    const out = new Float32Array(m * n);
    for (const part of w.parts) {
      const mem = part.memory;
      const pn = part.n1 - part.n0;
      const allocs: number[] = [];
      const alloc = (bytes: number): number => {
        const at = mem.alloc(bytes);
        if (at === null) throw new CpuMemoryFullError(`linear on ${w.label}: CPU memory ${mem.slot} has no room for ${bytes} bytes of activations (raise activationReserve)`);
        allocs.push(at);
        return at;
      };
      try {
        const xp = alloc(m * k * 4);
        const op = alloc(m * pn * 4);
        const bp = bias ? alloc(Math.ceil(pn / 8) * 32) : 0;
        mem.f32(xp, m * k).set(x);
        if (bias) {
          const b = mem.f32(bp, Math.ceil(pn / 8) * 8);
          b.fill(0);
          b.set(bias.subarray(part.n0, part.n1));
        }
        await this.linearAt(part, w, xp, m, op, pn, bp, scale);
        const res = mem.f32(op, m * pn);
        if (pn === n) out.set(res);
        else for (let i = 0; i < m; i++) out.set(res.subarray(i * pn, (i + 1) * pn), i * n + part.n0);
      } finally {
        for (const a of allocs) mem.release(a);
      }
    }
    return out;
  }

  /** Runs linear_run on one part of a weight, every operand already in its memory (addresses, ldo in floats). */
  private async linearAt(part: WeightPart, w: CpuWeight, x: number, m: number, out: number, ldo: number, bias: number, scale: number): Promise<void> {
    const mem = part.memory;
    const pn = part.n1 - part.n0;
    const job = mem.i32(mem.job, 16);
    job.fill(0);
    job[JOB.x / 4] = x;
    job[JOB.w / 4] = part.at;
    job[JOB.out / 4] = out;
    job[JOB.bias / 4] = bias;
    job[JOB.m / 4] = m;
    job[JOB.n / 4] = pn;
    job[JOB.k / 4] = w.k;
    job[JOB.wtype / 4] = CPU_WEIGHT_LAYOUT[w.dtype].code;
    mem.f32(mem.job + JOB.scale, 1)[0] = scale;
    job[JOB.ldx / 4] = w.k;
    job[JOB.ldo / 4] = ldo;
    job[JOB.scratch / 4] = mem.scratch;
    job[JOB.scratchBytes / 4] = SCRATCH_BYTES;
    job[JOB.threads / 4] = this.threads;
    await this.pool.run('linear_run', mem.slot, mem.instance!, mem.job, this.alwaysWake ? Infinity : linearItems(w.dtype, m, pn, this.threads));
  }

  // ---- the other ops -----------------------------------------------------------------------

  /**
   * Runs ops_run on `memory` (default: the activations' memory): inputs are copied in,
   * `params` written to the job (numbers: i32; { f }: f32; Float32Array: copied in, its
   * address written; null: address 0), outputs copied back out.
   */
  private async runOp(op: number, items: number, params: ReadonlyArray<number | { f: number } | Float32Array | null | 'out'>,
    outLength: number, memory: CpuMemory = this.work!): Promise<Float32Array> {
    const allocs: number[] = [];
    const alloc = (bytes: number): number => {
      const at = memory.alloc(bytes);
      if (at === null) throw new CpuMemoryFullError(`CPU memory ${memory.slot}: no room for ${bytes} bytes of activations`);
      allocs.push(at);
      return at;
    };
    try {
      const words = new Int32Array(64);
      const floats = new Float32Array(words.buffer);
      let outAt = 0;
      params.forEach((p, i) => {
        if (p === null) words[8 + i] = 0;
        else if (p === 'out') words[8 + i] = outAt = alloc(Math.max(4, outLength * 4));
        else if (p instanceof Float32Array) {
          const at = alloc(Math.max(4, p.byteLength));
          memory.f32(at, p.length).set(p);
          words[8 + i] = at;
        } else if (typeof p === 'number') words[8 + i] = p;
        else floats[8 + i] = p.f;
      });
      words[0] = op;
      words[1] = 0;
      words[2] = items;
      words[3] = memory.scratch;
      words[4] = SCRATCH_BYTES;
      memory.i32(memory.job, 64).set(words);
      if (items > 0) await this.pool.run('ops_run', memory.slot, memory.instance!, memory.job, this.alwaysWake ? Infinity : items);
      return memory.f32(outAt, outLength).slice();
    } finally {
      for (const a of allocs) memory.release(a);
    }
  }

  /** x / sqrt(mean(x²) + eps) · weight, per row of `cols`. */
  async rmsNorm(x: Float32Array, cols: number, weight: Float32Array | null, eps = 1e-6): Promise<Float32Array> {
    checkRows('rmsNorm', x, cols, weight);
    return this.serial(() => this.runOp(1, x.length / cols, [x, weight, 'out', cols, { f: eps }], x.length));
  }

  /** (x − mean) / sqrt(var + eps) · weight + bias per row, then · (1 + scale) + shift per batch (AdaLN) when given. */
  async layerNorm(x: Float32Array, cols: number, weight: Float32Array | null, bias: Float32Array | null, eps = 1e-5,
    modulation?: CpuModulation): Promise<Float32Array> {
    checkRows('layerNorm', x, cols, weight);
    if (bias && bias.length !== cols) throw new RangeError(`layerNorm: bias has ${bias.length} values, not ${cols}`);
    const m = modulation;
    return this.serial(() => this.runOp(2, x.length / cols, [
      x, weight, bias, 'out', cols, { f: eps },
      m ? m.shift.data.subarray(m.shift.offset) : null, m ? m.scale.data.subarray(m.scale.offset) : null,
      m?.shift.stride ?? 0, m?.scale.stride ?? 0, m?.rowsPerBatch ?? 1,
    ], x.length));
  }

  /** GroupNorm on [N, C, spatial] (then SiLU when `silu`). */
  async groupNorm(x: Float32Array, batch: number, channels: number, groups: number, weight: Float32Array | null, bias: Float32Array | null,
    eps = 1e-5, silu = false): Promise<Float32Array> {
    if (channels % groups !== 0 || x.length % (batch * channels) !== 0) throw new RangeError(`groupNorm: ${x.length} values, ${batch}×${channels} channels in ${groups} groups`);
    const spatial = x.length / (batch * channels);
    return this.serial(() => this.runOp(3, batch * groups, [x, weight, bias, 'out', channels, groups, spatial, { f: eps }, silu ? 1 : 0], x.length));
  }

  /** Row-wise softmax of scale · x. */
  async softmax(x: Float32Array, rows: number, n: number, scale = 1): Promise<Float32Array> {
    if (x.length !== rows * n) throw new RangeError(`softmax: ${x.length} values are not ${rows} rows of ${n}`);
    return this.serial(() => this.runOp(4, rows, [x, 'out', n, { f: scale }], x.length));
  }

  /** gelu (erf), gelu_tanh, quick_gelu or silu, element-wise. */
  async activation(kind: CpuActivation, x: Float32Array): Promise<Float32Array> {
    return this.serial(() => this.runOp(5, Math.ceil(x.length / 4096), [ACTIVATIONS[kind], x, 'out', x.length], x.length));
  }

  /** act(gate) · up, element-wise (gate and up of the same shape). */
  async gatedActivation(kind: CpuActivation, gate: Float32Array, up: Float32Array): Promise<Float32Array> {
    if (gate.length !== up.length) throw new RangeError(`gatedActivation: gate ${gate.length} ≠ up ${up.length}`);
    const total = gate.length;
    const cols = 4096;
    return this.serial(() => this.runOp(6, Math.ceil(total / cols), [ACTIVATIONS[kind], gate, cols, up, cols, 'out', cols, total], total));
  }

  /** The fused form: x [rows, 2·cols]; `gate` says which half goes through the activation. */
  async gatedActivationFused(kind: CpuActivation, x: Float32Array, cols: number, gate: 'first' | 'second'): Promise<Float32Array> {
    if (x.length % (2 * cols) !== 0) throw new RangeError(`gatedActivationFused: ${x.length} values are not rows of 2×${cols}`);
    const rows = x.length / (2 * cols);
    return this.serial(async () => {
      const memory = this.work!;
      const at = memory.alloc(x.byteLength);
      if (at === null) throw new CpuMemoryFullError('gatedActivationFused: no room for x');
      try {
        memory.f32(at, x.length).set(x);
        const g = gate === 'first' ? at : at + cols * 4;
        const u = gate === 'first' ? at + cols * 4 : at;
        return await this.runOp(6, rows, [ACTIVATIONS[kind], g, 2 * cols, u, 2 * cols, 'out', cols, 0], rows * cols);
      } finally {
        memory.release(at);
      }
    });
  }

  /** a OP b with NumPy broadcasting (rank ≤ 6). */
  async binary(op: CpuBinaryOp, a: Float32Array, aShape: readonly number[], b: Float32Array, bShape: readonly number[]): Promise<Float32Array> {
    const rank = Math.max(aShape.length, bShape.length, 1);
    if (rank > 6) throw new RangeError('binary: rank above 6');
    const pad = (s: readonly number[]) => [...Array(rank - s.length).fill(1), ...s] as number[];
    const as = pad(aShape), bs = pad(bShape);
    const out = as.map((d, i) => {
      const e = bs[i]!;
      if (d !== e && d !== 1 && e !== 1) throw new RangeError(`binary: shapes ${JSON.stringify(aShape)} and ${JSON.stringify(bShape)} do not broadcast`);
      return Math.max(d, e);
    });
    const strides = (s: number[]) => {
      const st = new Array<number>(rank).fill(0);
      let acc = 1;
      for (let i = rank - 1; i >= 0; i--) {
        st[i] = s[i] === 1 && out[i] !== 1 ? 0 : acc;
        acc *= s[i]!;
      }
      return st;
    };
    if (a.length !== as.reduce((p, d) => p * d, 1) || b.length !== bs.reduce((p, d) => p * d, 1)) throw new RangeError('binary: data length ≠ shape');
    const total = out.reduce((p, d) => p * d, 1);
    const dims = [...out, ...Array(6 - rank).fill(1)];
    const sa = [...strides(as), ...Array(6 - rank).fill(0)], sb = [...strides(bs), ...Array(6 - rank).fill(0)];
    const rows = total / out[rank - 1]!;
    return this.serial(() => this.runOp(7, total ? rows : 0, [BINARY[op], a, b, 'out', rank, ...dims, ...sa, ...sb], total));
  }

  /** x·s + b, element-wise. */
  async scale(x: Float32Array, s: number, b = 0): Promise<Float32Array> {
    return this.serial(() => this.runOp(8, Math.ceil(x.length / 4096), [x, 'out', x.length, { f: s }, { f: b }], x.length));
  }

  /**
   * Scaled-dot-product attention: q [B, Lq, H, D], k and v [B, Lk, Hkv, D] → [B, Lq, H, D];
   * causal (bottom-right by default), an additive mask broadcast to [B, H, Lq, Lk], key padding
   * [B, Lk] (0 masks), T5 relative bias [H, Lq + Lk − 1]; a row with every key masked is 0.
   */
  async attention(q: Float32Array, k: Float32Array, v: Float32Array, o: CpuAttentionOptions): Promise<Float32Array> {
    const { batch: B, lq: Lq, lk: Lk, heads: H, headDim: D } = o;
    const Hkv = o.kvHeads ?? H;
    if (H % Hkv !== 0) throw new RangeError(`attention: heads ${H} is not a multiple of kvHeads ${Hkv}`);
    if (q.length !== B * Lq * H * D || k.length !== B * Lk * Hkv * D || v.length !== k.length) throw new RangeError('attention: q, k or v does not match the shape');
    if (Lk > SCRATCH_BYTES / 4) throw new RangeError(`attention: ${Lk} keys exceed the CPU kernel's ${SCRATCH_BYTES / 4}`);
    const strides = o.mask ? maskStrides(o.mask.shape, [B, H, Lq, Lk]) : [0, 0, 0, 0];
    const pad = o.keyPadding ? Float32Array.from(o.keyPadding as ArrayLike<number>) : null;
    return this.serial(() => this.runOp(9, B * H * Lq, [
      q, k, v, 'out', B, Lq, Lk, H, Hkv, D, { f: o.scale ?? 1 / Math.sqrt(D) }, o.causal ? 1 : 0, o.causalOffset ?? Lk - Lq,
      o.mask?.data ?? null, ...strides, pad, o.relativeBias ?? null,
    ], B * Lq * H * D));
  }

  /**
   * Rotary embedding of x [B, L, H, D] over the first rotaryDim dims ('half': pairs (i, i + rot/2);
   * 'interleaved': (2i, 2i + 1)); angle(b, l, i) gives pair i's angle, cos/sin taken in f64.
   */
  async rope(x: Float32Array, o: CpuRopeOptions): Promise<Float32Array> {
    const { batch: B, seq: L, heads: H, headDim: D } = o;
    const rot = o.rotaryDim ?? D;
    if (x.length !== B * L * H * D || rot % 2 !== 0 || rot > D) throw new RangeError('rope: x or rotaryDim does not match the shape');
    const half = rot / 2;
    const cos = new Float32Array(B * L * half), sin = new Float32Array(B * L * half);
    for (let b = 0; b < B; b++) for (let l = 0; l < L; l++) for (let i = 0; i < half; i++) {
      const a = o.angle(b, l, i);
      cos[(b * L + l) * half + i] = Math.cos(a);
      sin[(b * L + l) * half + i] = Math.sin(a);
    }
    return this.ropeCosSin(x, o, cos, sin);
  }

  /** rope with the angles' cos and sin given per token ([B·L, rotaryDim/2] each): a model's host table. */
  async ropeCosSin(x: Float32Array, o: Omit<CpuRopeOptions, 'angle'>, cos: Float32Array, sin: Float32Array): Promise<Float32Array> {
    const { batch: B, seq: L, heads: H, headDim: D } = o;
    const rot = o.rotaryDim ?? D;
    if (x.length !== B * L * H * D || rot % 2 !== 0 || rot > D) throw new RangeError('rope: x or rotaryDim does not match the shape');
    if (cos.length !== B * L * (rot / 2) || sin.length !== cos.length) throw new RangeError('rope: cos and sin are not [B·L, rotaryDim/2]');
    return this.serial(() => this.runOp(12, B * L, [x, 'out', cos, sin, B, L, H, D, rot, o.mode === 'interleaved' ? 1 : 0, 1], x.length));
  }

  /**
   * NCHW conv2d with a weight loaded as [Cout, Cin·kh·kw] (any weight dtype): im2col of a chunk
   * of output pixels (at most `im2colBytes`, 32 MiB by default, so large images never need the
   * whole patch matrix), the linear kernel, then back to NCHW; runs in the weight's memory.
   */
  async conv2d(x: Float32Array, xShape: readonly [number, number, number, number], weight: CpuWeight, kernel: readonly [number, number],
    g: CpuConv2dGeometry, bias: Float32Array | null = null, im2colBytes = 32 * 1024 * 1024): Promise<{ data: Float32Array; shape: [number, number, number, number] }> {
    const [n, cin, h, w] = xShape;
    const [kh, kw] = kernel;
    const [sh, sw] = g.stride;
    const [dh, dw] = g.dilation ?? [1, 1];
    if (x.length !== n * cin * h * w) throw new RangeError('conv2d: x does not match its shape');
    if (weight.k !== cin * kh * kw) throw new RangeError(`conv2d: the weight has K = ${weight.k}, not Cin·kh·kw = ${cin * kh * kw}`);
    if (weight.parts.length !== 1) throw new RangeError('conv2d: the weight must sit in one memory');
    if (bias && bias.length !== weight.n) throw new RangeError(`conv2d: bias has ${bias.length} values, not ${weight.n}`);
    const hout = Math.floor((h + g.pad.top + g.pad.bottom - dh * (kh - 1) - 1) / sh) + 1;
    const wout = Math.floor((w + g.pad.left + g.pad.right - dw * (kw - 1) - 1) / sw) + 1;
    if (hout < 1 || wout < 1) throw new RangeError('conv2d: the kernel does not fit the padded input');
    const hw = hout * wout;
    const cout = weight.n;
    const K = weight.k;
    const chunk = Math.max(1, Math.min(hw, Math.floor(im2colBytes / (K * 4))));
    return this.serial(async () => {
      if (weight.freed) throw new CpuKernelError(`${weight.label} was freed`);
      const part = weight.parts[0]!;
      const memory = part.memory;
      const allocs: number[] = [];
      const alloc = (bytes: number): number => {
        const at = memory.alloc(Math.max(4, bytes));
        if (at === null) throw new CpuMemoryFullError(`conv2d on ${weight.label}: CPU memory ${memory.slot} has no room for ${bytes} bytes of activations`);
        allocs.push(at);
        return at;
      };
      try {
        const xp = alloc(x.byteLength);
        memory.f32(xp, x.length).set(x);
        const cols = alloc(chunk * K * 4);
        const y = alloc(chunk * cout * 4);
        const outp = alloc(n * cout * hw * 4);
        const bp = bias ? alloc(Math.ceil(cout / 8) * 32) : 0;
        if (bias) {
          const b = memory.f32(bp, Math.ceil(cout / 8) * 8);
          b.fill(0);
          b.set(bias);
        }
        for (let b = 0; b < n; b++) {
          for (let p0 = 0; p0 < hw; p0 += chunk) {
            const count = Math.min(chunk, hw - p0);
            const first = b * hw + p0;
            await this.runOpAt(memory, 10, count, [xp, cols, n, cin, h, w, kh, kw, sh, sw, g.pad.top, g.pad.left, dh, dw, hout, wout, first]);
            await this.linearAt(part, weight, cols, count, y, cout, bp, weight.scale);
            // [count, Cout] → out[b, co, p0 + i]: rows of the transpose are output channels, strided by H·W.
            await this.runOpAt(memory, 11, Math.ceil(count / 8), [y, outp + (b * cout * hw + p0) * 4, count, cout, hw]);
          }
        }
        return { data: memory.f32(outp, n * cout * hw).slice(), shape: [n, cout, hout, wout] as [number, number, number, number] };
      } finally {
        for (const at of allocs) memory.release(at);
      }
    });
  }

  /** ops_run with every operand already in `memory` (params are i32 words). */
  private async runOpAt(memory: CpuMemory, op: number, items: number, params: readonly number[]): Promise<void> {
    const words = new Int32Array(64);
    params.forEach((v, i) => {
      words[8 + i] = v;
    });
    words[0] = op;
    words[2] = items;
    words[3] = memory.scratch;
    words[4] = SCRATCH_BYTES;
    memory.i32(memory.job, 64).set(words);
    if (items > 0) await this.pool.run('ops_run', memory.slot, memory.instance!, memory.job, this.alwaysWake ? Infinity : items);
  }

  /** x.permute(perm) of a row-major x of `shape` (rank ≤ 6). */
  async permute(x: Float32Array, shape: readonly number[], perm: readonly number[]): Promise<Float32Array> {
    const rank = shape.length;
    if (rank < 1 || rank > 6 || perm.length !== rank || [...perm].sort().some((p, i) => p !== i)) throw new RangeError(`permute: perm ${JSON.stringify(perm)} of rank ${rank}`);
    if (x.length !== shape.reduce((a, b) => a * b, 1)) throw new RangeError('permute: x does not match its shape');
    const strides = new Array<number>(rank).fill(1);
    for (let k = rank - 2; k >= 0; k--) strides[k] = strides[k + 1]! * shape[k + 1]!;
    const outDims = perm.map((p) => shape[p]!);
    const inStrides = perm.map((p) => strides[p]!);
    const rows = x.length === 0 ? 0 : x.length / outDims[rank - 1]!;
    return this.serial(() => this.runOp(13, rows, [x, 'out', rank, ...outDims, ...Array(6 - rank).fill(1), ...inStrides, ...Array(6 - rank).fill(0)], x.length));
  }

  /** Concatenation along `axis` (negative counts from the end) of row-major tensors. */
  async concat(inputs: ReadonlyArray<{ data: Float32Array; shape: readonly number[] }>, axis: number): Promise<Float32Array> {
    const first = inputs[0];
    if (!first) throw new RangeError('concat: no inputs');
    const rank = first.shape.length;
    const ax = axis < 0 ? axis + rank : axis;
    if (ax < 0 || ax >= rank) throw new RangeError(`concat: axis ${axis} of rank ${rank}`);
    const outer = first.shape.slice(0, ax).reduce((a, b) => a * b, 1);
    for (const t of inputs) {
      if (t.shape.length !== rank || t.shape.some((d, i) => i !== ax && d !== first.shape[i]) || t.data.length !== t.shape.reduce((a, b) => a * b, 1)) {
        throw new RangeError(`concat: shape ${JSON.stringify(t.shape)} does not match ${JSON.stringify(first.shape)} off axis ${ax}`);
      }
    }
    const total = inputs.reduce((s, t) => s + t.data.length, 0);
    const outRow = total / Math.max(1, outer);
    return this.serial(async () => {
      const memory = this.work!;
      const out = memory.alloc(Math.max(4, total * 4));
      if (out === null) throw new CpuMemoryFullError('concat: no room for the output');
      try {
        let col = 0;
        for (const t of inputs) {
          const row = t.data.length / Math.max(1, outer);
          if (row > 0) await this.runOp(14, outer, [t.data, out + col * 4, row, row, outRow], 0);
          col += row;
        }
        return memory.f32(out, total).slice();
      } finally {
        memory.release(out);
      }
    });
  }

  /** values [B, n, W] written into a copy of cache [B, capacity, W] at row `position`. */
  async kvCacheWrite(cache: Float32Array, values: Float32Array, batch: number, capacity: number, n: number, width: number, position: number): Promise<Float32Array> {
    if (position < 0 || position + n > capacity) throw new RangeError(`kv cache: rows ${position}..${position + n} past capacity ${capacity}`);
    if (cache.length !== batch * capacity * width || values.length !== batch * n * width) throw new RangeError('kvCacheWrite: cache or values does not match the shape');
    return this.serial(async () => {
      const memory = this.work!;
      const at = memory.alloc(Math.max(4, cache.byteLength));
      if (at === null) throw new CpuMemoryFullError('kvCacheWrite: no room for the cache');
      try {
        memory.f32(at, cache.length).set(cache);
        // one row of n·W floats per batch, to batch b's rows from `position`
        await this.runOp(14, batch, [values, at + position * width * 4, n * width, n * width, capacity * width], 0);
        return memory.f32(at, cache.length).slice();
      } finally {
        memory.release(at);
      }
    });
  }

  /** dst with bytes [dstOffset, dstOffset + byteLength) replaced from src at srcOffset (a host copy). */
  async copyBytes(src: Uint8Array, srcOffset: number, dst: Uint8Array, dstOffset: number, byteLength: number): Promise<Uint8Array> {
    if (srcOffset + byteLength > src.length || dstOffset + byteLength > dst.length) throw new RangeError('copyBytes: range past the end');
    const out = dst.slice();
    out.set(src.subarray(srcOffset, srcOffset + byteLength), dstOffset);
    return out;
  }

  /** Nearest upsampling of [planes, h, w] by integer factors. */
  async upsampleNearest(x: Float32Array, planes: number, h: number, w: number, fy: number, fx: number): Promise<Float32Array> {
    if (x.length !== planes * h * w || fy < 1 || fx < 1) throw new RangeError('upsampleNearest: x or factors do not match');
    return this.serial(() => this.runOp(15, planes * h * fy, [x, 'out', h, w, fy, fx], planes * h * fy * w * fx));
  }

  /** x · (1 + scale[batch]) + shift[batch] on x [rows, cols] (AdaLN's modulation). */
  async adaLNModulate(x: Float32Array, cols: number, rowsPerBatch: number, shift: CpuSlice, scale: CpuSlice): Promise<Float32Array> {
    checkRows('adaLNModulate', x, cols, null);
    return this.serial(() => this.runOp(16, x.length / cols, [
      x, 'out', cols, rowsPerBatch, shift.data.subarray(shift.offset), shift.stride, scale.data.subarray(scale.offset), scale.stride,
    ], x.length));
  }

  /** x + gate[batch] · y (AdaLN's gated residual). */
  async gatedResidual(x: Float32Array, y: Float32Array, cols: number, rowsPerBatch: number, gate: CpuSlice): Promise<Float32Array> {
    checkRows('gatedResidual', x, cols, null);
    if (y.length !== x.length) throw new RangeError('gatedResidual: y does not match x');
    return this.serial(() => this.runOp(17, x.length / cols, [x, y, 'out', cols, rowsPerBatch, gate.data.subarray(gate.offset), gate.stride], x.length));
  }

  /** Rows of a resident table [vocab, dim] (any weight dtype, decoded as the kernels do); ids outside [0, vocab) give zero rows. */
  async embedding(ids: ArrayLike<number>, table: CpuWeight): Promise<Float32Array> {
    const count = ids.length;
    const dim = table.k;
    return this.serial(async () => {
      if (table.freed) throw new CpuKernelError(`${table.label} was freed`);
      const out = new Float32Array(count * dim);
      for (const part of table.parts) {
        const local = new Int32Array(count);
        for (let t = 0; t < count; t++) {
          const id = Number(ids[t]);
          local[t] = id >= part.n0 && id < part.n1 ? id - part.n0 : -1;
        }
        const idsF = new Float32Array(local.buffer);
        const got = await this.runOp(18, count, [idsF, part.at, CPU_WEIGHT_LAYOUT[table.dtype].code, part.n1 - part.n0, dim, 'out'], count * dim, part.memory);
        for (let t = 0; t < count; t++) if (local[t]! >= 0) out.set(got.subarray(t * dim, (t + 1) * dim), t * dim);
      }
      return out;
    });
  }

  /**
   * T5's position_bias [H, Lq, Lk] from relative_attention_bias.weight [numBuckets, H]: buckets
   * as Hugging Face computes them (f32 log arithmetic), gathered on the host (small, O(H·Lq·Lk)).
   * For attention, pass t5RelativeBiasTable's [H, Lq + Lk − 1] as relativeBias instead.
   */
  async t5RelativeBias(weight: Float32Array, heads: number, lq: number, lk: number, o: CpuT5Buckets): Promise<Float32Array> {
    const table = t5RelativeBiasTable(weight, heads, lq, lk, o);
    const out = new Float32Array(heads * lq * lk);
    for (let h = 0; h < heads; h++) {
      for (let i = 0; i < lq; i++) out.set(table.subarray(h * (lq + lk - 1) + lq - 1 - i, h * (lq + lk - 1) + lq - 1 - i + lk), (h * lq + i) * lk);
    }
    return out;
  }

  /**
   * diffusers' get_timestep_embedding ([T, dim], f32 steps emulated with Math.fround, sin and cos
   * of the f32 angles in f64): computed on the host, it is T·dim values once per step.
   */
  async timestepEmbedding(timesteps: readonly number[], dim: number, o: CpuTimestepOptions = {}): Promise<Float32Array> {
    const f = Math.fround;
    const half = Math.floor(dim / 2);
    const den = f(half - (o.downscaleFreqShift ?? 1));
    const divide = (e: number) => ((o.pytorchDevice ?? 'cuda') === 'cuda' ? f(e * f(1 / den)) : f(e / den));
    const freq = Array.from({ length: half }, (_, j) => f(Math.exp(divide(f(f(-Math.log(o.maxPeriod ?? 10000)) * j)))));
    const out = new Float32Array(timesteps.length * dim);
    timesteps.forEach((t0, r) => {
      const t = f(f(t0) * f(o.timestepMultiplier ?? 1));
      for (let j = 0; j < half; j++) {
        const e = f(f(o.scale ?? 1) * f(t * freq[j]!));
        out[r * dim + (o.flipSinToCos ? half + j : j)] = Math.sin(e);
        out[r * dim + (o.flipSinToCos ? j : half + j)] = Math.cos(e);
      }
    });
    return out;
  }

  /** Frees every weight and memory and stops the workers. */
  async close(): Promise<void> {
    if (this.closed) return;
    await this.queue;
    this.closed = true;
    this.memories.length = 0;
    this.spares.length = 0;
    this.work = null;
    await this.pool.close();
  }
}

export { CpuMemory };

/** Emptied WebAssembly memories kept for the next load (see newMemory). */
const SPARE_MEMORIES = 2;

export type CpuActivation = 'gelu' | 'gelu_tanh' | 'quick_gelu' | 'silu';
export type CpuBinaryOp = 'add' | 'sub' | 'mul' | 'div';
const ACTIVATIONS: Readonly<Record<CpuActivation, number>> = { gelu: 0, gelu_tanh: 1, quick_gelu: 2, silu: 3 };
const BINARY: Readonly<Record<CpuBinaryOp, number>> = { add: 0, sub: 1, mul: 2, div: 3 };

/** Per-batch AdaLN vectors: batch b's at data[offset + b·stride + c]. */
export interface CpuModulation {
  readonly shift: { readonly data: Float32Array; readonly offset: number; readonly stride: number };
  readonly scale: { readonly data: Float32Array; readonly offset: number; readonly stride: number };
  readonly rowsPerBatch: number;
}

export interface CpuAttentionOptions {
  readonly batch: number;
  readonly lq: number;
  readonly lk: number;
  readonly heads: number;
  readonly kvHeads?: number;
  readonly headDim: number;
  readonly scale?: number;
  readonly causal?: boolean;
  readonly causalOffset?: number;
  readonly mask?: { readonly data: Float32Array; readonly shape: readonly number[] };
  readonly keyPadding?: ArrayLike<number>;
  readonly relativeBias?: Float32Array;
}

export interface CpuRopeOptions {
  readonly batch: number;
  readonly seq: number;
  readonly heads: number;
  readonly headDim: number;
  readonly rotaryDim?: number;
  readonly mode?: 'half' | 'interleaved';
  readonly angle: (b: number, l: number, i: number) => number;
}

export interface CpuConv2dGeometry {
  readonly stride: readonly [number, number];
  readonly pad: { readonly top: number; readonly bottom: number; readonly left: number; readonly right: number };
  readonly dilation?: readonly [number, number];
}

/** A per-batch vector: batch b's at data[offset + b·stride + c]. */
export interface CpuSlice {
  readonly data: Float32Array;
  readonly offset: number;
  readonly stride: number;
}

export interface CpuT5Buckets {
  readonly numBuckets: number;
  readonly maxDistance: number;
  readonly bidirectional: boolean;
}

export interface CpuTimestepOptions {
  readonly flipSinToCos?: boolean;
  readonly downscaleFreqShift?: number;
  readonly scale?: number;
  readonly maxPeriod?: number;
  readonly timestepMultiplier?: number;
  readonly pytorchDevice?: 'cuda' | 'cpu';
}

/** Hugging Face T5's _relative_position_bucket for rel = key − query position, with its f32 log arithmetic. */
export function t5Bucket(rel: number, o: CpuT5Buckets): number {
  let buckets = o.numBuckets;
  let bucket = 0;
  let n: number;
  if (o.bidirectional) {
    buckets = Math.floor(buckets / 2);
    if (rel > 0) bucket += buckets;
    n = Math.abs(rel);
  } else {
    n = -Math.min(rel, 0);
  }
  const exact = Math.floor(buckets / 2);
  if (n < exact) return bucket + n;
  const f = Math.fround;
  const scaled = f(f(f(Math.log(f(f(n) / exact))) / f(Math.log(o.maxDistance / exact))) * (buckets - exact));
  return bucket + Math.min(exact + Math.trunc(scaled), buckets - 1);
}

/** [H, Lq + Lk − 1]: the bias of each relative position (attention's relativeBias). */
export function t5RelativeBiasTable(weight: Float32Array, heads: number, lq: number, lk: number, o: CpuT5Buckets): Float32Array {
  if (weight.length !== o.numBuckets * heads) throw new RangeError(`t5 bias: weight has ${weight.length} values, not ${o.numBuckets}×${heads}`);
  const width = lq + lk - 1;
  const out = new Float32Array(heads * width);
  for (let r = 0; r < width; r++) {
    const bucket = t5Bucket(r - (lq - 1), o);
    for (let h = 0; h < heads; h++) out[h * width + r] = weight[bucket * heads + h]!;
  }
  return out;
}

/** Work items linear_run splits a job into (wasm/linear.c: GEMV_PANELS, MC, tile_rows, NPT). */
function linearItems(dtype: CpuWeightDtype, m: number, n: number, threads: number): number {
  const panels = Math.ceil(n / 8);
  const nt = Math.ceil(panels / 8);
  if (m <= 3) return nt;
  let mc = 64;
  if (dtype !== 'f32') {
    const mt = Math.ceil((8 * threads) / nt);
    mc = Math.min(1024, Math.max(64, Math.ceil(Math.ceil(m / mt) / 4) * 4));
  }
  return Math.ceil(m / mc) * nt;
}

function checkRows(op: string, x: Float32Array, cols: number, weight: Float32Array | null): void {
  if (!Number.isSafeInteger(cols) || cols <= 0 || x.length % cols !== 0) throw new RangeError(`${op}: ${x.length} values are not rows of ${cols}`);
  if (weight && weight.length !== cols) throw new RangeError(`${op}: weight has ${weight.length} values, not ${cols}`);
}

/** Strides of a mask broadcast to [B, H, Lq, Lk] (0 where broadcast). */
function maskStrides(shape: readonly number[], full: readonly [number, number, number, number]): number[] {
  if (shape.length < 1 || shape.length > 4) throw new RangeError(`attention: mask rank ${shape.length}`);
  const dims = [...Array(4 - shape.length).fill(1), ...shape] as number[];
  const strides = [0, 0, 0, 0];
  let stride = 1;
  for (let i = 3; i >= 0; i--) {
    const d = dims[i]!;
    if (d !== 1 && d !== full[i]) throw new RangeError(`attention: mask shape ${JSON.stringify(shape)} does not broadcast to ${JSON.stringify(full)}`);
    strides[i] = d === 1 && full[i] !== 1 ? 0 : stride;
    stride *= d;
  }
  return strides;
}
