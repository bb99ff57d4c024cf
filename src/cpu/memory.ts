/**
 * One WebAssembly memory of the CPU device and its allocator. wasm32 addresses 4 GiB at most,
 * so larger models spread their weights over several memories (kernels.ts). A memory never
 * shrinks: freed ranges are reused, and a memory whose weights are all freed is dropped whole.
 *
 * Layout: [0, heap base) the module's own data; per-thread stacks; per-thread scratch; one
 * job record per thread slot; then the heap, first-fit with coalescing, 64-byte aligned.
 */

export const PAGE = 65536;
/** The wasm32 ceiling: 65536 pages. */
export const MAX_MEMORY_BYTES = 65536 * PAGE;
const STACK_BYTES = 64 * 1024;
/** Per-thread scratch for the kernels (linear's decoded panels, norms' row buffers, ...). */
export const SCRATCH_BYTES = 256 * 1024;
const JOB_BYTES = 1024;
const ALIGN = 64;

const alignUp = (n: number, a: number) => Math.ceil(n / a) * a;

export class CpuMemoryFullError extends RangeError {}

export class CpuMemory {
  readonly slot: number;
  readonly memory: WebAssembly.Memory;
  readonly limit: number;
  readonly shared: boolean;
  /** Thread t's stack top, scratch base, and the job record. */
  readonly stackTops: readonly number[];
  readonly scratch: number;
  readonly job: number;
  private readonly heapStart: number;
  private top: number;
  /** Sorted, disjoint free ranges below `top`. */
  private free: Array<{ at: number; size: number }> = [];
  private readonly live = new Map<number, number>();
  /** Bytes held by live allocations. */
  used = 0;
  instance: WebAssembly.Instance | null = null;

  constructor(slot: number, heapBase: number, threads: number, limit: number, shared: boolean, initialBytes = 0) {
    this.slot = slot;
    this.shared = shared;
    this.limit = Math.min(MAX_MEMORY_BYTES, Math.floor(limit / PAGE) * PAGE);
    let at = alignUp(heapBase, ALIGN);
    const tops: number[] = [];
    for (let t = 0; t < threads; t++) {
      at += STACK_BYTES;
      tops.push(at);
    }
    this.stackTops = tops;
    this.scratch = at;
    at += threads * SCRATCH_BYTES;
    this.job = at;
    at += JOB_BYTES;
    this.heapStart = at;
    this.top = at;
    const pages = Math.ceil((at + initialBytes) / PAGE);
    if (pages * PAGE > this.limit) throw new CpuMemoryFullError(`a CPU memory limit of ${limit} bytes cannot hold its ${at}-byte fixed area`);
    this.memory = new WebAssembly.Memory({ initial: pages, maximum: this.limit / PAGE, shared } as WebAssembly.MemoryDescriptor);
  }

  /** Bytes this memory can still hand out (free ranges and room below the limit). */
  get available(): number {
    return this.free.reduce((s, f) => s + f.size, 0) + (this.limit - this.top);
  }

  get committedBytes(): number {
    return this.memory.buffer.byteLength;
  }

  get liveAllocations(): number {
    return this.live.size;
  }

  /** An aligned range of `bytes`, or null when this memory cannot hold it. */
  alloc(bytes: number): number | null {
    const size = alignUp(Math.max(bytes, 1), ALIGN);
    for (let i = 0; i < this.free.length; i++) {
      const f = this.free[i]!;
      if (f.size >= size) {
        const at = f.at;
        if (f.size === size) this.free.splice(i, 1);
        else this.free[i] = { at: at + size, size: f.size - size };
        return this.take(at, size);
      }
    }
    if (this.top + size > this.limit) return null;
    const at = this.top;
    const need = at + size;
    const have = this.memory.buffer.byteLength;
    if (need > have) {
      // Grow by at least a quarter of what is committed, so many small loads don't grow page by page.
      const want = Math.min(this.limit, Math.max(need, have + Math.floor(have / 4)));
      try {
        this.memory.grow(Math.ceil((want - have) / PAGE));
      } catch (error) {
        // The host could not commit that much: try exactly what is needed before giving up.
        try {
          this.memory.grow(Math.ceil((need - have) / PAGE));
        } catch {
          throw new CpuMemoryFullError(`CPU memory ${this.slot}: the host refused to grow it to ${need} bytes (${String(error)})`);
        }
      }
    }
    this.top = need;
    return this.take(at, size);
  }

  private take(at: number, size: number): number {
    this.live.set(at, size);
    this.used += size;
    return at;
  }

  release(at: number): void {
    const size = this.live.get(at);
    if (size === undefined) throw new RangeError(`CPU memory ${this.slot}: ${at} is not allocated`);
    this.live.delete(at);
    this.used -= size;
    let i = this.free.findIndex((f) => f.at > at);
    if (i < 0) i = this.free.length;
    this.free.splice(i, 0, { at, size });
    // Coalesce with the neighbours, and give the last range back to `top`.
    if (i + 1 < this.free.length && at + size === this.free[i + 1]!.at) {
      this.free[i]!.size += this.free[i + 1]!.size;
      this.free.splice(i + 1, 1);
    }
    if (i > 0 && this.free[i - 1]!.at + this.free[i - 1]!.size === at) {
      this.free[i - 1]!.size += this.free[i]!.size;
      this.free.splice(i, 1);
      i--;
    }
    const last = this.free[this.free.length - 1];
    if (last && last.at + last.size === this.top) {
      this.top = last.at;
      this.free.pop();
    }
  }

  bytes(at: number, length: number): Uint8Array {
    return new Uint8Array(this.memory.buffer, at, length);
  }

  f32(at: number, length: number): Float32Array {
    return new Float32Array(this.memory.buffer, at, length);
  }

  i32(at: number, length: number): Int32Array {
    return new Int32Array(this.memory.buffer, at, length);
  }
}
