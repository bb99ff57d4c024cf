import type { GpuDevice, TrackedBuffer } from '../devices/gpu-device.ts';
import { downloadBytes, GpuTensor } from '../kernels/tensor.ts';
import { GpuWeight } from './gpu-backend.ts';
import type { PlacedBlock } from './placement.ts';

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

  constructor(gpu: GpuDevice) {
    this.gpu = gpu;
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

  /** Frees the pooled buffers no block is staged in (memory pressure); returns the bytes freed. */
  trim(): number {
    let n = 0;
    for (const list of this.#free.values()) for (const b of list) {
      n += b.bytes;
      b.destroy();
    }
    this.#free.clear();
    return n;
  }

  /** Frees every staging buffer. */
  destroy(): void {
    for (const s of this.#staged.values()) for (const b of s.buffers) b.destroy();
    for (const list of this.#free.values()) for (const b of list) b.destroy();
    this.#staged.clear();
    this.#free.clear();
  }
}
