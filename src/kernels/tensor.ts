import type { GpuDevice, TrackedBuffer } from '../devices/gpu-device.ts';
import { toFloat32 } from '../formats/dtypes.ts';

/**
 * How a tensor is laid out in a GPU buffer. Weights stay in their stored form and are
 * decoded inside the shaders: f16 and bf16 packed two per u32, fp8 four per u32, GGUF
 * blocks byte for byte. Activations are f32 (or f16 on the f16 path).
 */
export type GpuDtype =
  | 'f32' | 'f16' | 'bf16' | 'f8_e4m3' | 'f8_e5m2' | 'i32' | 'u32'
  | 'q8_0' | 'q4_0' | 'q4_1' | 'q5_0' | 'q5_1' | 'q4_k' | 'q5_k' | 'q6_k';

/** Bytes per block and elements per block of each layout (GGUF's block structs). */
export const GPU_DTYPE_LAYOUT: Readonly<Record<GpuDtype, { readonly blockElements: number; readonly blockBytes: number }>> = Object.freeze({
  f32: { blockElements: 1, blockBytes: 4 },
  i32: { blockElements: 1, blockBytes: 4 },
  u32: { blockElements: 1, blockBytes: 4 },
  f16: { blockElements: 1, blockBytes: 2 },
  bf16: { blockElements: 1, blockBytes: 2 },
  f8_e4m3: { blockElements: 1, blockBytes: 1 },
  f8_e5m2: { blockElements: 1, blockBytes: 1 },
  q8_0: { blockElements: 32, blockBytes: 34 },
  q4_0: { blockElements: 32, blockBytes: 18 },
  q4_1: { blockElements: 32, blockBytes: 20 },
  q5_0: { blockElements: 32, blockBytes: 22 },
  q5_1: { blockElements: 32, blockBytes: 24 },
  q4_k: { blockElements: 256, blockBytes: 144 },
  q5_k: { blockElements: 256, blockBytes: 176 },
  q6_k: { blockElements: 256, blockBytes: 210 },
});

export function storedBytes(dtype: GpuDtype, elements: number): number {
  const { blockElements, blockBytes } = GPU_DTYPE_LAYOUT[dtype];
  if (elements % blockElements !== 0) throw new RangeError(`${elements} elements is not a whole number of ${dtype} blocks (${blockElements})`);
  return (elements / blockElements) * blockBytes;
}

/** A tensor on one GPU: its buffer (on the ledger), shape (row-major), layout. */
export class GpuTensor {
  readonly gpu: GpuDevice;
  readonly storage: TrackedBuffer;
  readonly shape: readonly number[];
  readonly dtype: GpuDtype;
  /** fp8 "scaled" checkpoints carry one f32 scale per tensor; 1 otherwise. */
  readonly scale: number;

  constructor(gpu: GpuDevice, storage: TrackedBuffer, shape: readonly number[], dtype: GpuDtype, scale = 1) {
    this.gpu = gpu;
    this.storage = storage;
    this.shape = shape;
    this.dtype = dtype;
    this.scale = scale;
  }

  get buffer(): GPUBuffer {
    return this.storage.buffer;
  }

  get elements(): number {
    return this.shape.reduce((a, b) => a * b, 1);
  }

  /** Bytes of data (the buffer may be padded to a multiple of 4). */
  get byteLength(): number {
    return storedBytes(this.dtype, this.elements);
  }

  destroy(): void {
    this.storage.destroy();
  }
}

const USAGE = () => GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST | GPUBufferUsage.COPY_SRC;

/** A zero-filled tensor (outputs, KV caches). */
export async function emptyTensor(gpu: GpuDevice, shape: readonly number[], dtype: GpuDtype = 'f32', label = 'tensor'): Promise<GpuTensor> {
  const bytes = storedBytes(dtype, shape.reduce((a, b) => a * b, 1));
  const storage = await gpu.createBuffer({ label, size: Math.max(4, Math.ceil(bytes / 4) * 4), usage: USAGE() });
  return new GpuTensor(gpu, storage, shape, dtype);
}

/**
 * Uploads stored bytes (any layout) or f32 values. WebGPU copies whole 4-byte words, so a
 * tail that is not a multiple of 4 bytes is padded with zeros.
 */
export async function uploadTensor(gpu: GpuDevice, data: Float32Array | Uint8Array, shape: readonly number[], dtype: GpuDtype = 'f32',
  options: { label?: string; scale?: number } = {}): Promise<GpuTensor> {
  const bytes = data instanceof Float32Array ? new Uint8Array(data.buffer, data.byteOffset, data.byteLength) : data;
  const expected = storedBytes(dtype, shape.reduce((a, b) => a * b, 1));
  if (bytes.byteLength !== expected) throw new RangeError(`${dtype} ${JSON.stringify(shape)} needs ${expected} bytes, got ${bytes.byteLength}`);
  const tensor = await emptyTensor(gpu, shape, dtype, options.label);
  const whole = bytes.byteLength - (bytes.byteLength % 4);
  if (whole > 0) writeView(gpu.device, tensor.buffer, 0, bytes, whole);
  if (whole < bytes.byteLength) {
    const tail = new Uint8Array(4);
    tail.set(bytes.subarray(whole));
    gpu.device.queue.writeBuffer(tensor.buffer, whole, tail);
  }
  return scaled(tensor, options.scale);
}

function scaled(t: GpuTensor, scale?: number): GpuTensor {
  return scale === undefined ? t : new GpuTensor(t.gpu, t.storage, t.shape, t.dtype, scale);
}

/**
 * queue.writeBuffer of a typed array's bytes. Deno's WebGPU types take no source that may be
 * backed by a SharedArrayBuffer, and TypeScript cannot tell a typed array's backing store
 * apart; the cast changes the type only (a view over shared memory goes through as before).
 */
export function writeView(device: GPUDevice, buffer: GPUBuffer, offset: number, view: ArrayBufferView, byteLength = view.byteLength): void {
  device.queue.writeBuffer(buffer, offset, new Uint8Array(view.buffer as ArrayBuffer, view.byteOffset, byteLength));
}

/** Where read-backs get their mappable buffers: a pool (ReadbackPool) or a new one each time. */
export interface ReadbackBuffers {
  take(gpu: GpuDevice, size: number): Promise<TrackedBuffer>;
  /** The buffer is unmapped and may be handed out again. */
  give(buffer: TrackedBuffer): void;
}

const oneOff: ReadbackBuffers = {
  take: (gpu, size) => gpu.createBuffer({ label: 'readback', size, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST }),
  give: (buffer) => buffer.destroy(),
};

/**
 * Mappable read-back buffers kept for reuse, by size (powers of two). Creating one costs two
 * error-scope round trips through the instance's event polling, which a decoding step would
 * otherwise pay on every logits read-back and every pipeline hop.
 */
export class ReadbackPool implements ReadbackBuffers {
  readonly #free = new Map<number, TrackedBuffer[]>();

  async take(gpu: GpuDevice, size: number): Promise<TrackedBuffer> {
    const bytes = Math.max(256, 2 ** Math.ceil(Math.log2(size)));
    const kept = this.#free.get(bytes)?.pop();
    if (kept) return kept;
    return gpu.createBuffer({ label: 'readback', size: bytes, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
  }

  give(buffer: TrackedBuffer): void {
    const list = this.#free.get(buffer.bytes) ?? [];
    list.push(buffer);
    this.#free.set(buffer.bytes, list);
  }

  get heldBytes(): number {
    let n = 0;
    for (const list of this.#free.values()) for (const b of list) n += b.bytes;
    return n;
  }

  /** Frees the kept buffers; returns the bytes freed. */
  clear(): number {
    const n = this.heldBytes;
    for (const list of this.#free.values()) for (const b of list) b.destroy();
    this.#free.clear();
    return n;
  }
}

/**
 * Starts reading a tensor back: the copy is submitted and the mapping requested before this
 * resolves, so work submitted afterwards (the next pass's weight copies) does not delay it.
 * The returned function waits for the bytes (padding dropped).
 */
export async function startReadback(tensor: GpuTensor, buffers: ReadbackBuffers = oneOff): Promise<() => Promise<Uint8Array>> {
  const gpu = tensor.gpu;
  const size = Math.max(4, Math.ceil(tensor.byteLength / 4) * 4);
  const staging = await buffers.take(gpu, size);
  let mapped: Promise<void>;
  try {
    const encoder = gpu.device.createCommandEncoder({ label: 'readback' });
    encoder.copyBufferToBuffer(tensor.buffer, 0, staging.buffer, 0, size);
    gpu.device.queue.submit([encoder.finish()]);
    mapped = staging.buffer.mapAsync(GPUMapMode.READ, 0, size);
  } catch (error) {
    staging.destroy();
    throw error;
  }
  return async () => {
    let ok = false;
    try {
      await mapped;
      const out = new Uint8Array(staging.buffer.getMappedRange(0, size).slice(0, tensor.byteLength));
      staging.buffer.unmap();
      ok = true;
      return out;
    } finally {
      if (ok) buffers.give(staging);
      else staging.destroy();
    }
  };
}

/** The tensor's bytes back on the host (padding dropped). */
export async function downloadBytes(tensor: GpuTensor): Promise<Uint8Array> {
  return (await startReadback(tensor))();
}

/** An f32 tensor's values (f16 activations are widened). */
export async function downloadF32(tensor: GpuTensor): Promise<Float32Array> {
  const bytes = await downloadBytes(tensor);
  if (tensor.dtype === 'f32') return new Float32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4);
  if (tensor.dtype === 'f16') return toFloat32('F16', bytes);
  throw new RangeError(`downloadF32 reads f32 or f16 tensors, not ${tensor.dtype}`);
}
