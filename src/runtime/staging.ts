import type { CpuDevice } from '../devices/cpu-device.ts';
import type { GpuDevice, TrackedBuffer } from '../devices/gpu-device.ts';
import { downloadBytes, GpuTensor } from '../kernels/tensor.ts';
import { GpuWeight } from './gpu-backend.ts';
import type { PlacedBlock } from './placement.ts';

/** Bytes of one ring slot (a mapped upload buffer), and how many slots rotate. */
export const RING_SLOT_BYTES = 32 << 20;
export const RING_SLOTS = 4;

interface RingSlot {
  readonly buffer: TrackedBuffer;
  /** The mapAsync that makes it writable again once its last copy has run; null while mapped. */
  ready: Promise<void> | null;
}

/**
 * Stream mode's staging area on the compute GPU: device buffers, pooled by size and reused
 * from block to block (transformer layers have identical tensors, so after the first two
 * blocks nothing is allocated). A block's weights are copied in just before it runs; the next
 * streamed block's copies are queued before the current block's kernels are submitted.
 */
export class StagingArea {
  readonly gpu: GpuDevice;
  #free = new Map<number, TrackedBuffer[]>();
  #staged = new Map<string, { weights: Map<string, GpuWeight>; buffers: TrackedBuffer[] }>();
  /** Bytes copied in since creation (what a pass costs in transfers). */
  copiedBytes = 0;
  /** Of those, bytes that went through the ring (host-memory tensors). */
  ringBytes = 0;
  /** The ring for tensors in host memory: mapped upload buffers, counted on the cpu ledger. */
  #ring: RingSlot[] = [];
  #nextSlot = 0;
  readonly #host: CpuDevice | undefined;

  constructor(gpu: GpuDevice, host?: CpuDevice) {
    this.gpu = gpu;
    this.#host = host;
  }

  async #slot(bytes: number): Promise<RingSlot> {
    if (this.#ring.length < RING_SLOTS) {
      const size = Math.min(RING_SLOT_BYTES, Math.ceil(bytes / 4096) * 4096);
      const host = this.#host;
      const buffer = await this.gpu.createBuffer({
        label: 'staging ring (host-visible)', size, usage: GPUBufferUsage.MAP_WRITE | GPUBufferUsage.COPY_SRC, mappedAtCreation: true,
        account: host && { ledger: host.ledger, name: host.name, capacity: host.capacity.bytes, source: host.capacity.source },
      });
      const slot: RingSlot = { buffer, ready: null };
      this.#ring.push(slot);
      return slot;
    }
    const slot = this.#ring[this.#nextSlot]!;
    this.#nextSlot = (this.#nextSlot + 1) % this.#ring.length;
    if (slot.ready) await slot.ready;
    slot.ready = null;
    return slot;
  }

  /**
   * Copies host bytes into a device buffer through the ring: each slot is written through its
   * mapping (the JavaScript copy that bounds this path), unmapped, copied by the GPU, and mapped
   * again in the background while the other slots take the next chunks.
   */
  async #ringCopy(src: Uint8Array, dst: GPUBuffer): Promise<void> {
    const device = this.gpu.device;
    for (let offset = 0; offset < src.byteLength;) {
      const slot = await this.#slot(src.byteLength - offset);
      const n = Math.min(slot.buffer.bytes, src.byteLength - offset);
      new Uint8Array(slot.buffer.buffer.getMappedRange(0, n)).set(src.subarray(offset, offset + n));
      slot.buffer.buffer.unmap();
      const encoder = device.createCommandEncoder({ label: 'staging ring' });
      encoder.copyBufferToBuffer(slot.buffer.buffer, 0, dst, offset, n);
      device.queue.submit([encoder.finish()]);
      const ready = slot.buffer.buffer.mapAsync(GPUMapMode.WRITE);
      // A destroyed slot (trim, destroy) rejects its pending map: nothing waits on it then.
      ready.catch(() => undefined);
      slot.ready = ready;
      offset += n;
    }
  }

  async #acquire(size: number, label: string): Promise<TrackedBuffer> {
    const list = this.#free.get(size);
    const b = list?.pop();
    if (b) return b;
    return this.gpu.createBuffer({ label: `staging ${label}`, size, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST | GPUBufferUsage.COPY_SRC });
  }

  /** Queues the copies of a block's weights into staging buffers (idempotent per block until released). */
  async stage(block: PlacedBlock): Promise<Map<string, GpuWeight>> {
    const name = block.placement.name;
    const done = this.#staged.get(name);
    if (done) return done.weights;
    const weights = new Map<string, GpuWeight>();
    const buffers: TrackedBuffer[] = [];
    const encoder = this.gpu.device.createCommandEncoder({ label: `stage ${name}` });
    for (const [tensor, hv] of block.hostVisible) {
      const size = hv.buffer.bytes;
      const buffer = await this.#acquire(size, tensor);
      buffers.push(buffer);
      encoder.copyBufferToBuffer(hv.buffer.buffer, 0, buffer.buffer, 0, size);
      this.copiedBytes += size;
      weights.set(tensor, new GpuWeight(tensor, new GpuTensor(this.gpu, buffer, hv.shape, hv.dtype)));
    }
    this.gpu.device.queue.submit([encoder.finish()]);
    for (const [tensor, hm] of block.hostMemory) {
      const size = hm.bytes.byteLength;
      const buffer = await this.#acquire(size, tensor);
      buffers.push(buffer);
      await this.#ringCopy(hm.bytes, buffer.buffer);
      this.copiedBytes += size;
      this.ringBytes += size;
      weights.set(tensor, new GpuWeight(tensor, new GpuTensor(this.gpu, buffer, hm.shape, hm.dtype)));
    }
    // Weights stored on another GPU: WebGPU has no peer copies, so they come through the host.
    for (const [tensor, w] of block.donor) {
      const bytes = await downloadBytes(w.t);
      const size = Math.max(4, Math.ceil(bytes.byteLength / 4) * 4);
      const buffer = await this.#acquire(size, tensor);
      buffers.push(buffer);
      const padded = new Uint8Array(size);
      padded.set(bytes);
      this.gpu.device.queue.writeBuffer(buffer.buffer, 0, padded);
      this.copiedBytes += size;
      weights.set(tensor, new GpuWeight(tensor, new GpuTensor(this.gpu, buffer, w.t.shape, w.t.dtype)));
    }
    this.#staged.set(name, { weights, buffers });
    return weights;
  }

  /** The block's kernels are submitted: its buffers may take the next copies (the queue orders them). */
  release(blockName: string): void {
    const s = this.#staged.get(blockName);
    if (!s) return;
    this.#staged.delete(blockName);
    for (const b of s.buffers) {
      const list = this.#free.get(b.bytes) ?? [];
      list.push(b);
      this.#free.set(b.bytes, list);
    }
  }

  /** Bytes of its buffers (pooled and in use), on the GPU's ledger. */
  get heldBytes(): number {
    let n = 0;
    for (const s of this.#staged.values()) for (const b of s.buffers) n += b.bytes;
    for (const list of this.#free.values()) for (const b of list) n += b.bytes;
    return n;
  }

  /** Bytes of its ring (host-visible, on the cpu ledger). */
  get hostHeldBytes(): number {
    return this.#ring.reduce((n, s) => n + s.buffer.bytes, 0);
  }

  #dropRing(): number {
    const n = this.hostHeldBytes;
    for (const s of this.#ring) s.buffer.destroy();
    this.#ring = [];
    this.#nextSlot = 0;
    return n;
  }

  /** Frees the pooled buffers no block is staged in and the ring (memory pressure); returns the bytes freed. */
  trim(): number {
    let n = this.#dropRing();
    for (const list of this.#free.values()) for (const b of list) {
      n += b.bytes;
      b.destroy();
    }
    this.#free.clear();
    return n;
  }

  /** Frees every staging buffer. */
  destroy(): void {
    this.#dropRing();
    for (const s of this.#staged.values()) for (const b of s.buffers) b.destroy();
    for (const list of this.#free.values()) for (const b of list) b.destroy();
    this.#staged.clear();
    this.#free.clear();
  }
}
