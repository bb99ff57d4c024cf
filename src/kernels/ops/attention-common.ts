import type { GpuDevice, TrackedBuffer } from '../../devices/gpu-device.ts';
import type { KernelLimits } from '../limits.ts';
import type { Binding } from '../recorder.ts';
import { writeView, type GpuTensor } from '../tensor.ts';

/**
 * A tensor read as rows of tokens: element (b, l, c) sits at
 * offset + b·batchStride + l·rowStride + c. The defaults make a [B, L, ...] tensor's plain
 * row-major layout; a slice of a fused QKV output [B, L, 3·C] is
 * `{ tensor, offset: C, rowStride: 3 * C }`.
 */
export interface TensorView {
  readonly tensor: GpuTensor;
  /** Elements before (b=0, l=0, c=0). Default 0. */
  readonly offset?: number;
  /** Elements between consecutive tokens. Default: the product of shape[2..]. */
  readonly rowStride?: number;
  /** Elements between batches. Default: shape[1] · rowStride. */
  readonly batchStride?: number;
}

export type ViewInput = GpuTensor | TensorView;

export interface ResolvedView {
  readonly tensor: GpuTensor;
  readonly offset: number;
  readonly rowStride: number;
  readonly batchStride: number;
  /** shape[0], shape[1] of the tensor (batch, rows: a KV cache's capacity). */
  readonly batch: number;
  readonly rows: number;
}

export function isView(x: ViewInput): x is TensorView {
  return 'tensor' in x && !('storage' in x);
}

export function resolveView(x: ViewInput, what: string): ResolvedView {
  const view: TensorView = isView(x) ? x : { tensor: x };
  const shape = view.tensor.shape;
  if (shape.length < 2) throw new RangeError(`${what}: shape ${JSON.stringify(shape)} needs at least [batch, rows, ...]`);
  const inner = shape.slice(2).reduce((a, b) => a * b, 1);
  const rowStride = view.rowStride ?? inner;
  const batchStride = view.batchStride ?? shape[1]! * rowStride;
  const offset = view.offset ?? 0;
  for (const [name, value] of [['offset', offset], ['rowStride', rowStride], ['batchStride', batchStride]] as const) {
    if (!Number.isInteger(value) || value < 0) throw new RangeError(`${what}: ${name} ${value} is not a non-negative integer`);
  }
  return { tensor: view.tensor, offset, rowStride, batchStride, batch: shape[0]!, rows: shape[1]! };
}

/** Throws unless every element (b < batch, l < rows, c < width) of the view lies in its tensor. */
export function checkViewExtent(v: ResolvedView, batch: number, rows: number, width: number, what: string): void {
  if (batch === 0 || rows === 0 || width === 0) return;
  const last = v.offset + (batch - 1) * v.batchStride + (rows - 1) * v.rowStride + width - 1;
  if (last >= v.tensor.elements) {
    throw new RangeError(`${what}: ${batch}×${rows} rows of ${width} reach element ${last}, past the tensor's ${v.tensor.elements}`);
  }
}

export function elementBytes(t: GpuTensor): number {
  switch (t.dtype) {
    case 'f32': case 'i32': case 'u32': return 4;
    case 'f16': case 'bf16': return 2;
    default: throw new RangeError(`${t.dtype} tensors are not activations`);
  }
}

/** A bound range of a buffer and the index, in elements from the binding's start, of its first element. */
export interface RangeBinding {
  readonly binding: Binding;
  readonly base: number;
}

/**
 * Binds elements [first, first + count) of a tensor. The whole buffer when it fits one
 * binding (base = first); else a range starting at the offset alignment below `first`.
 */
export function rangeBinding(t: GpuTensor, first: number, count: number, limits: KernelLimits): RangeBinding {
  const size = t.buffer.size;
  if (size <= limits.maxStorageBufferBindingSize) return { binding: t.buffer, base: first };
  const eb = elementBytes(t);
  const start = first * eb;
  const aligned = Math.floor(start / limits.minStorageBufferOffsetAlignment) * limits.minStorageBufferOffsetAlignment;
  const end = Math.min(size, Math.ceil(((first + Math.max(count, 1)) * eb) / 4) * 4);
  const bytes = Math.max(4, end - aligned);
  if (bytes > limits.maxStorageBufferBindingSize) {
    throw new RangeError(`a range of ${bytes} bytes of "${t.storage.label}" is larger than a binding (${limits.maxStorageBufferBindingSize})`);
  }
  return { binding: { buffer: t.buffer, offset: aligned, size: bytes }, base: (start - aligned) / eb };
}

/** Bytes a range of `count` elements can take once aligned down: what chunk planning budgets. */
export function bindingBudget(limits: KernelLimits): number {
  return limits.maxStorageBufferBindingSize - limits.minStorageBufferOffsetAlignment - 4;
}

/** True when every tensor's whole buffer fits one binding (the plain, single-dispatch case). */
export function allFit(tensors: ReadonlyArray<GpuTensor | undefined>, limits: KernelLimits): boolean {
  return tensors.every((t) => !t || t.buffer.size <= limits.maxStorageBufferBindingSize);
}

interface DeviceBuffers {
  readOnly?: Promise<TrackedBuffer>;
  readWrite?: Promise<TrackedBuffer>;
  scratch: Array<{ bytes: number; buffer: Promise<TrackedBuffer> }>;
  tables: Map<string, Promise<TrackedBuffer>>;
}

const perDevice = new WeakMap<GpuDevice, DeviceBuffers>();

function buffersOf(gpu: GpuDevice): DeviceBuffers {
  let b = perDevice.get(gpu);
  if (!b) perDevice.set(gpu, (b = { scratch: [], tables: new Map() }));
  return b;
}

const STORAGE = () => GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST | GPUBufferUsage.COPY_SRC;

/** A 16-byte buffer for bindings a variant declares but a call does not use. */
export function dummyBuffer(gpu: GpuDevice, writable: boolean): Promise<TrackedBuffer> {
  const b = buffersOf(gpu);
  const key = writable ? 'readWrite' : 'readOnly';
  let p = b[key];
  if (!p) {
    p = gpu.createBuffer({ label: `attention.dummy.${key}`, size: 16, usage: STORAGE() });
    b[key] = p;
    p.catch(() => { b[key] = undefined; });
  }
  return p;
}

/**
 * Scratch of at least `bytes` (split-key attention state, group norm's chunk statistics): the
 * kernel library's per-device scratch, with its constants. Buffers are kept and reused, never
 * freed while the device lives (a dispatch already recorded may use them); dropAttentionBuffers
 * frees them all.
 */
export async function scratchBuffer(gpu: GpuDevice, bytes: number): Promise<TrackedBuffer> {
  const b = buffersOf(gpu);
  const found = b.scratch.find((s) => s.bytes >= bytes);
  if (found) return found.buffer;
  const size = Math.max(256, Math.ceil(bytes / 256) * 256);
  const buffer = gpu.createBuffer({ label: 'attention.scratch', size, usage: STORAGE() });
  b.scratch.push({ bytes: size, buffer });
  try {
    return await buffer;
  } catch (error) {
    b.scratch = b.scratch.filter((s) => s.buffer !== buffer);
    throw error;
  }
}

/** A small constant table (u32 or f32 words) uploaded once per device and key. */
export function constantTable(gpu: GpuDevice, key: string, make: () => Uint32Array | Float32Array): Promise<TrackedBuffer> {
  const b = buffersOf(gpu);
  let p = b.tables.get(key);
  if (!p) {
    const data = make();
    p = (async () => {
      const buffer = await gpu.createBuffer({ label: `attention.table.${key}`, size: Math.max(16, Math.ceil(data.byteLength / 4) * 4), usage: STORAGE() });
      writeView(gpu.device, buffer.buffer, 0, data);
      return buffer;
    })();
    b.tables.set(key, p);
    p.catch(() => b.tables.delete(key));
  }
  return p;
}

/** Frees the dummy, scratch and table buffers the attention ops keep on a device (freeAll). */
export async function dropAttentionBuffers(gpu: GpuDevice): Promise<void> {
  const b = perDevice.get(gpu);
  if (!b) return;
  perDevice.delete(gpu);
  const all = [b.readOnly, b.readWrite, ...b.scratch.map((s) => s.buffer), ...b.tables.values()];
  for (const p of all) {
    if (!p) continue;
    try {
      (await p).destroy();
    } catch {
      // never allocated: nothing to free
    }
  }
}

/** Packs uniforms: each entry a u32, an i32 (tagged) or an f32 (tagged). */
export function packUniforms(values: ReadonlyArray<number | { i32: number } | { f32: number }>): Uint32Array {
  const words = new Uint32Array(Math.ceil(values.length / 4) * 4);
  const view = new DataView(words.buffer);
  values.forEach((value, i) => {
    if (typeof value === 'number') {
      if (!Number.isInteger(value) || value < 0 || value > 0xffffffff) throw new RangeError(`uniform ${i}: ${value} is not a u32`);
      view.setUint32(i * 4, value, true);
    } else if ('i32' in value) {
      if (!Number.isInteger(value.i32) || value.i32 < -(2 ** 31) || value.i32 >= 2 ** 31) throw new RangeError(`uniform ${i}: ${value.i32} is not an i32`);
      view.setInt32(i * 4, value.i32, true);
    } else {
      view.setFloat32(i * 4, value.f32, true);
    }
  });
  return words;
}

/** Subgroup reductions need subgroups of at least 4 (WebGPU guarantees it where the feature exists). */
export function canUseSubgroups(gpu: GpuDevice): boolean {
  return gpu.hasFeature('subgroups');
}
