import type { BlockPlacement, Plan } from '../allocation/planner.ts';
import type { CpuKernels } from '../cpu/kernels.ts';
import { isCpuWeightDtype } from '../cpu/dtypes.ts';
import type { CpuDevice } from '../devices/cpu-device.ts';
import type { DeviceSet } from '../devices/device-set.ts';
import { CapacityExceededError, GpuOutOfMemoryError } from '../devices/errors.ts';
import type { GpuDevice, TrackedBuffer } from '../devices/gpu-device.ts';
import type { ByteLedger, LedgerEntry } from '../devices/ledger.ts';
import { DTYPE_BYTES, isDtype, toFloat32 } from '../formats/dtypes.ts';
import type { WeightSet, WeightTensor } from '../formats/weights.ts';
import { GPU_DTYPE_LAYOUT, GpuTensor, type GpuDtype } from '../kernels/tensor.ts';
import type { BlockMap } from '../models/blocks.ts';
import type { CanonicalTensor } from '../models/program.ts';
import { CpuParam } from './cpu-backend.ts';
import { GpuWeight } from './gpu-backend.ts';
import { RuntimeShapeError } from './shapes.ts';

/** A canonical tensor's bytes as the devices take them: its dtype and shape after any cut. */
export interface TensorBytes {
  readonly name: string;
  readonly dtype: string;
  readonly shape: readonly number[];
  readonly bytes: Uint8Array;
  read(): Promise<Float32Array>;
}

/** The dtypes the WGSL kernels read in stored form; anything else is widened to f32 on load. */
const GPU_STORED: Readonly<Record<string, GpuDtype>> = {
  F32: 'f32', F16: 'f16', BF16: 'bf16', F8_E4M3: 'f8_e4m3', F8_E5M2: 'f8_e5m2',
  Q8_0: 'q8_0', Q4_0: 'q4_0', Q4_1: 'q4_1', Q5_0: 'q5_0', Q5_1: 'q5_1', Q4_K: 'q4_k', Q5_K: 'q5_k', Q6_K: 'q6_k',
};
/** Ops other than linear read these weight dtypes in stored form (norms, embeddings, convs, biases). */
const PLAIN: ReadonlySet<GpuDtype> = new Set(['f32', 'f16', 'bf16']);
/** Below this many elements a CPU matrix is also kept as f32 values (T5's bucket table, small position tables). */
const SMALL = 1 << 16;

/**
 * Canonical name → source tensor and cut, for every tensor of the checkpoint: the model's
 * derived entries, and every other stored tensor under its own name.
 */
export function canonicalIndex(weights: WeightSet, derived: ReadonlyMap<string, CanonicalTensor>): Map<string, CanonicalTensor> {
  const index = new Map<string, CanonicalTensor>(derived);
  const used = new Set([...derived.values()].flatMap((c) => c.parts ? c.parts.map((p) => p.source) : [c.source]));
  for (const name of weights.tensors.keys()) if (!used.has(name) && !index.has(name)) index.set(name, { source: name });
  return index;
}

function rowBytesOf(t: WeightTensor): number {
  const rows = t.shape[0] ?? 1;
  if (t.byteLength % rows !== 0) throw new RuntimeShapeError(`${t.name}: ${t.byteLength} bytes are not ${rows} equal rows`);
  return t.byteLength / rows;
}

/** Stored tensors a canonical tensor is read from. */
export function sourcesOf(c: CanonicalTensor): string[] {
  return c.parts ? c.parts.flatMap(sourcesOf) : [c.source];
}

/** Parts stacked along the first dimension (they were checked alike when the model fused them). */
async function readStacked(weights: WeightSet, name: string, parts: readonly CanonicalTensor[]): Promise<TensorBytes> {
  const read = await Promise.all(parts.map((p, i) => readCanonical(weights, `${name}[${i}]`, p)));
  const first = read[0]!;
  for (const r of read) {
    if (r.dtype !== first.dtype || r.shape.slice(1).join() !== first.shape.slice(1).join()) {
      throw new RuntimeShapeError(`${name}: parts ${read.map((x) => `${x.dtype} [${x.shape.join(', ')}]`).join(', ')} do not stack`);
    }
  }
  const bytes = new Uint8Array(read.reduce((n, r) => n + r.bytes.byteLength, 0));
  let at = 0;
  for (const r of read) {
    bytes.set(r.bytes, at);
    at += r.bytes.byteLength;
  }
  const shape = [read.reduce((n, r) => n + (r.shape[0] ?? 1), 0), ...first.shape.slice(1)];
  return {
    name, dtype: first.dtype, shape, bytes,
    read: async () => {
      const values = await Promise.all(read.map((r) => r.read()));
      const out = new Float32Array(values.reduce((n, v) => n + v.length, 0));
      let o = 0;
      for (const v of values) {
        out.set(v, o);
        o += v.length;
      }
      return out;
    },
  };
}

/** Reads and cuts one canonical tensor on the host. */
export async function readCanonical(weights: WeightSet, name: string, c: CanonicalTensor): Promise<TensorBytes> {
  if (c.parts) return readStacked(weights, name, c.parts);
  const src = weights.tensor(c.source);
  let bytes = await src.readRaw();
  let shape = [...src.shape];
  if (c.rows) {
    const rowBytes = rowBytesOf(src);
    const out = new Uint8Array(c.rows.count * rowBytes);
    for (let i = 0; i < c.rows.count; i++) {
      const r = c.rows.rowOf(i);
      if (!Number.isInteger(r) || r < 0 || r >= (src.shape[0] ?? 1)) throw new RuntimeShapeError(`${name}: row ${r} is outside ${c.source} [${src.shape.join(', ')}]`);
      out.set(bytes.subarray(r * rowBytes, (r + 1) * rowBytes), i * rowBytes);
    }
    bytes = out;
    shape = [c.rows.count, ...shape.slice(1)];
  }
  if (c.transpose) {
    if (shape.length !== 2 || !isDtype(src.dtype)) throw new RuntimeShapeError(`${name}: only 2-D plain tensors can be transposed, ${c.source} is ${src.dtype} [${shape.join(', ')}]`);
    const size = DTYPE_BYTES[src.dtype];
    const [a, b] = shape as [number, number];
    const out = new Uint8Array(bytes.length);
    for (let i = 0; i < a; i++) for (let j = 0; j < b; j++) out.set(bytes.subarray((i * b + j) * size, (i * b + j + 1) * size), (j * a + i) * size);
    bytes = out;
    shape = [b, a];
  }
  const whole = bytes;
  const dtype = src.dtype;
  const read = async (): Promise<Float32Array> => {
    if (!c.rows && !c.transpose) return src.readF32();
    if (isDtype(dtype)) return toFloat32(dtype, whole);
    // Quantized and cut: dequantize the source, then cut the same rows.
    const all = await src.readF32();
    const width = all.length / (src.shape[0] ?? 1);
    const out = new Float32Array(c.rows!.count * width);
    for (let i = 0; i < c.rows!.count; i++) out.set(all.subarray(c.rows!.rowOf(i) * width, (c.rows!.rowOf(i) + 1) * width), i * width);
    return out;
  };
  return { name, dtype, shape, bytes, read };
}

/** The form a tensor takes on a GPU: its stored bytes where the kernels read them, else f32. */
export async function gpuForm(t: TensorBytes, role: 'matrix' | 'other'): Promise<{ dtype: GpuDtype; bytes: Uint8Array }> {
  const stored = GPU_STORED[t.dtype.toUpperCase()];
  if (stored && (role === 'matrix' || PLAIN.has(stored))) {
    const k = t.shape[t.shape.length - 1] ?? 1;
    if (stored === 'f32' || PLAIN.has(stored) || k % GPU_DTYPE_LAYOUT[stored].blockElements === 0) return { dtype: stored, bytes: t.bytes };
  }
  const f = await t.read();
  return { dtype: 'f32', bytes: new Uint8Array(f.buffer, f.byteOffset, f.byteLength) };
}

/** Whether a tensor is read only by linear (so it may stay quantized on a GPU). Embedding tables and convs are not. */
function roleOf(kind: string, shape: readonly number[]): 'matrix' | 'other' {
  return kind !== 'embedding' && shape.length === 2 ? 'matrix' : 'other';
}

/**
 * A buffer written through its mapping at creation (a memcpy, or a file read, into memory Dawn
 * copies to the device by DMA; queue.writeBuffer measured 1.6 GB/s on an H100). Host-visible
 * buffers count on the cpu's ledger (`account`).
 */
async function filledBuffer(gpu: GpuDevice, label: string, byteLength: number, usage: GPUBufferUsageFlags,
  fill: (view: Uint8Array) => void | Promise<void>, account?: CpuDevice): Promise<TrackedBuffer> {
  const size = Math.max(4, Math.ceil(byteLength / 4) * 4);
  const storage = await gpu.createBuffer({
    label: account ? `${label} (host-visible)` : label, size, usage, mappedAtCreation: true,
    account: account && { ledger: account.ledger, name: account.name, capacity: account.capacity.bytes, source: account.capacity.source },
  });
  try {
    await fill(new Uint8Array(storage.buffer.getMappedRange(0, size), 0, byteLength));
  } catch (error) {
    storage.buffer.unmap();
    storage.destroy();
    throw error;
  }
  storage.buffer.unmap();
  return storage;
}

/**
 * A tensor the GPU takes as stored, uncut: read from the file straight into the buffer's mapping
 * (no host copy; what makes a 16 GB load I/O-bound); stacked parts one after another into one
 * mapping. Null when it needs a host-side form (a cut, a transpose, a layout the kernels don't read).
 */
async function directToGpu(gpu: GpuDevice, weights: WeightSet, name: string, c: CanonicalTensor, kind: string,
  usage: GPUBufferUsageFlags, account?: CpuDevice): Promise<{ storage: TrackedBuffer; dtype: GpuDtype; shape: readonly number[]; bytes: number } | null> {
  const parts = c.parts ?? [c];
  if (parts.some((p) => p.rows || p.transpose || p.parts)) return null;
  const srcs = parts.map((p) => weights.tensor(p.source));
  const first = srcs[0]!;
  const stored = GPU_STORED[first.dtype.toUpperCase()];
  const k = first.shape[first.shape.length - 1] ?? 1;
  if (!stored || srcs.some((t) => !t.readRawInto || t.dtype !== first.dtype || t.shape.slice(1).join() !== first.shape.slice(1).join())) return null;
  if (!(roleOf(kind, first.shape) === 'matrix' || PLAIN.has(stored)) || k % GPU_DTYPE_LAYOUT[stored].blockElements !== 0) return null;
  const bytes = srcs.reduce((n, t) => n + t.byteLength, 0);
  const storage = await filledBuffer(gpu, name, bytes, usage, async (view) => {
    let at = 0;
    for (const t of srcs) {
      await t.readRawInto!(view.subarray(at, at + t.byteLength));
      at += t.byteLength;
    }
  }, account);
  const shape = srcs.length === 1 ? first.shape : [srcs.reduce((n, t) => n + (t.shape[0] ?? 1), 0), ...first.shape.slice(1)];
  return { storage, dtype: stored, shape, bytes };
}

const DEVICE_USAGE = () => GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST | GPUBufferUsage.COPY_SRC;
const HOST_VISIBLE_USAGE = () => GPUBufferUsage.MAP_WRITE | GPUBufferUsage.COPY_SRC;

export async function toGpu(gpu: GpuDevice, t: TensorBytes, kind: string): Promise<GpuWeight> {
  const form = await gpuForm(t, roleOf(kind, t.shape));
  const storage = await filledBuffer(gpu, t.name, form.bytes.byteLength, DEVICE_USAGE(), (view) => view.set(form.bytes));
  return new GpuWeight(t.name, new GpuTensor(gpu, storage, t.shape, form.dtype));
}

export async function toCpu(kernels: CpuKernels, t: TensorBytes): Promise<CpuParam> {
  const elements = t.shape.reduce((a, b) => a * b, 1);
  if (t.shape.length < 2) return new CpuParam(t.name, t.shape, null, await t.read());
  const rows = t.shape[0]!;
  const k = elements / rows;
  const lower = t.dtype.toLowerCase();
  let matrix;
  if (isCpuWeightDtype(lower) && lower !== 'f32' && k % blockOf(lower) === 0) {
    matrix = await kernels.loadWeight(t.bytes, [rows, k], lower, { label: t.name });
  } else {
    matrix = await kernels.loadWeight(await t.read(), [rows, k], 'f32', { label: t.name });
  }
  return new CpuParam(t.name, t.shape, matrix, elements <= SMALL ? await t.read() : null);
}

function blockOf(dtype: string): number {
  return (GPU_DTYPE_LAYOUT as Record<string, { blockElements: number }>)[dtype]?.blockElements ?? 1;
}

/**
 * A tensor kept in a host-visible GPU buffer (MAP_WRITE | COPY_SRC, written once at load): the
 * stream mode's store for blocks the plan puts on `cpu`. Each pass copies it to the compute
 * device by DMA. Counted on the cpu ledger (SPEC §3).
 */
export class HostVisibleTensor {
  constructor(readonly name: string, readonly dtype: GpuDtype, readonly shape: readonly number[], readonly buffer: TrackedBuffer, readonly bytes: number) {}
}

export async function toHostVisible(gpu: GpuDevice, t: TensorBytes, kind: string, cpu: CpuDevice): Promise<HostVisibleTensor> {
  const form = await gpuForm(t, roleOf(kind, t.shape));
  const buffer = await filledBuffer(gpu, t.name, form.bytes.byteLength, HOST_VISIBLE_USAGE(), (view) => view.set(form.bytes), cpu);
  return new HostVisibleTensor(t.name, form.dtype, t.shape, buffer, form.bytes.byteLength);
}

/**
 * A stream block's tensor kept in ordinary host memory, in the form the GPU takes: the fallback
 * when host-visible memory runs out (or the load's hostVisibleBudget is spent). Each pass copies
 * it through the staging area's ring of mapped buffers, a JavaScript copy (~7 GB/s measured on
 * an H100, against ~50 by DMA from host-visible buffers). Counted on the cpu ledger.
 */
export class HostMemoryTensor {
  constructor(readonly name: string, readonly dtype: GpuDtype, readonly shape: readonly number[], readonly bytes: Uint8Array,
    private readonly ledger: ByteLedger, private readonly entry: LedgerEntry) {}

  release(): void {
    this.ledger.release(this.entry);
  }
}

/** Everything of a placement a step may need. */
export interface PlacedBlock {
  readonly placement: BlockPlacement;
  /** canonical name → weight on the block's execution device (resident and pipeline blocks). */
  readonly weights: Map<string, GpuWeight | CpuParam>;
  /** Stream blocks stored on cpu: host-visible copies on the compute GPU. */
  readonly hostVisible: Map<string, HostVisibleTensor>;
  /** Stream blocks stored on cpu that did not get host-visible memory: host copies, streamed through a ring. */
  readonly hostMemory: Map<string, HostMemoryTensor>;
  /** Stream blocks stored on another GPU: its device buffers there. */
  readonly donor: Map<string, GpuWeight>;
  /** canonical names this block may read (its own and tied ones). */
  readonly names: ReadonlySet<string>;
}

export interface PlaceOptions {
  readonly devices: DeviceSet;
  readonly weights: WeightSet;
  readonly blockMap: BlockMap;
  readonly plan: Plan;
  readonly index: ReadonlyMap<string, CanonicalTensor>;
  readonly cpuKernels: () => Promise<CpuKernels>;
  /**
   * Bytes of host-visible memory stream blocks may take (default: unlimited, until an allocation
   * fails); past it, their tensors stay in host memory and stream through a ring.
   */
  readonly hostVisibleBudget?: number;
}

/** cpu ledger entries of weights the cpu device executes (in WebAssembly memory), by param. */
const cpuEntries = new WeakMap<CpuParam, { ledger: ByteLedger; entry: LedgerEntry }>();

/** Bytes a cpu-executed weight holds on the cpu ledger. */
export function cpuParamBytes(param: CpuParam): number {
  return cpuEntries.get(param)?.entry.bytes ?? 0;
}

/** Loads every block's weights where the plan stores them, in the form its execution needs. */
export async function placeWeights(o: PlaceOptions): Promise<Map<string, PlacedBlock>> {
  const bySource = new Map<string, string[]>();
  for (const [name, c] of o.index) for (const source of sourcesOf(c)) bySource.set(source, [...(bySource.get(source) ?? []), name]);
  const placed = new Map<string, PlacedBlock>();
  // One load per (tensor, device): tied tensors read by two blocks on one device share it.
  const shared = new Map<string, Promise<GpuWeight | CpuParam>>();
  const cpu = o.devices.cpu;
  let hostVisibleLeft = o.hostVisibleBudget ?? Infinity;
  /** A stream tensor in host memory, for the ring. */
  const toHostMemory = async (name: string, kind: string, t: TensorBytes): Promise<HostMemoryTensor> => {
    const form = await gpuForm(t, roleOf(kind, t.shape));
    const size = Math.max(4, Math.ceil(form.bytes.byteLength / 4) * 4);
    if (cpu.ledger.used + size > cpu.capacity.bytes) {
      throw new CapacityExceededError(cpu.name, name, size, cpu.ledger.used, cpu.capacity.bytes, cpu.capacity.source);
    }
    const bytes = new Uint8Array(size);
    bytes.set(form.bytes);
    return new HostMemoryTensor(name, form.dtype, t.shape, bytes, cpu.ledger, cpu.ledger.add(`${name} (host memory, ring-streamed)`, size));
  };
  try {
    for (const block of o.blockMap.blocks) {
      const p = o.plan.blocks.find((b) => b.name === block.name);
      if (!p) throw new RuntimeShapeError(`the plan has no placement for block ${block.name}`);
      const names = new Set([...block.tensors, ...block.shared].flatMap((s) => bySource.get(s) ?? []));
      const entry: PlacedBlock = { placement: p, weights: new Map(), hostVisible: new Map(), hostMemory: new Map(), donor: new Map(), names };
      for (const name of names) {
        const load = async () => readCanonical(o.weights, name, o.index.get(name)!);
        const canonical = o.index.get(name)!;
        if (p.exec === 'stream' && p.device === 'cpu') {
          const gpu = o.devices.get(p.execDevice) as GpuDevice;
          const estimate = sourcesOf(canonical).reduce((n, source) => n + o.weights.tensor(source).byteLength, 0);
          if (estimate <= hostVisibleLeft) {
            try {
              const direct = await directToGpu(gpu, o.weights, name, canonical, block.kind, HOST_VISIBLE_USAGE(), cpu);
              const hv = direct
                ? new HostVisibleTensor(name, direct.dtype, direct.shape, direct.storage, direct.bytes)
                : await toHostVisible(gpu, await load(), block.kind, cpu);
              entry.hostVisible.set(name, hv);
              hostVisibleLeft -= hv.buffer.bytes;
              continue;
            } catch (error) {
              // The driver has no more mappable memory: this and every later tensor take the ring.
              if (!(error instanceof GpuOutOfMemoryError)) throw error;
              hostVisibleLeft = 0;
            }
          }
          entry.hostMemory.set(name, await toHostMemory(name, block.kind, await load()));
        } else if (p.exec === 'stream') {
          const donor = o.devices.get(p.device) as GpuDevice;
          entry.donor.set(name, await toGpu(donor, await load(), block.kind));
        } else {
          const device = p.execDevice;
          const key = `${name}@${device}`;
          let w = shared.get(key);
          if (!w) {
            w = device === 'cpu'
              ? load().then(async (t) => {
                const param = await toCpu(await o.cpuKernels(), t);
                // The WebAssembly memory it took counts on the cpu ledger as the plan counted it.
                cpuEntries.set(param, { ledger: cpu.ledger, entry: cpu.ledger.add(`${name} (cpu kernels)`, t.bytes.byteLength) });
                return param;
              })
              : (async () => {
                const gpu = o.devices.get(device) as GpuDevice;
                const direct = await directToGpu(gpu, o.weights, name, canonical, block.kind, DEVICE_USAGE());
                return direct ? new GpuWeight(name, new GpuTensor(gpu, direct.storage, direct.shape, direct.dtype)) : toGpu(gpu, await load(), block.kind);
              })();
            shared.set(key, w);
          }
          entry.weights.set(name, await w);
        }
      }
      placed.set(block.name, entry);
    }
  } catch (error) {
    await releasePlaced(placed, o.cpuKernels);
    throw error;
  }
  return placed;
}

export async function releasePlaced(placed: ReadonlyMap<string, PlacedBlock>, cpuKernels: () => Promise<CpuKernels>): Promise<void> {
  const seen = new Set<unknown>();
  for (const b of placed.values()) {
    for (const w of [...b.weights.values(), ...b.donor.values()]) {
      if (seen.has(w)) continue;
      seen.add(w);
      if (w instanceof GpuWeight) w.t.destroy();
      else {
        if (w.matrix) await (await cpuKernels()).freeWeight(w.matrix);
        const e = cpuEntries.get(w);
        e?.ledger.release(e.entry);
      }
    }
    for (const h of b.hostVisible.values()) h.buffer.destroy();
    for (const h of b.hostMemory.values()) h.release();
  }
}

