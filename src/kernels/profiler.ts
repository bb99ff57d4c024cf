import type { GpuDevice, TrackedBuffer } from '../devices/gpu-device.ts';

/**
 * GPU time per kernel, from timestamp queries: a diagnostic for benchmarks (`MULTIGPU_PROFILE=1`
 * or `setKernelProfiling(true)`), off by default because it gives every dispatch its own compute
 * pass. Devices without the timestamp-query feature are not profiled.
 */
export interface KernelTime {
  readonly label: string;
  readonly dispatches: number;
  /** Total GPU time in milliseconds. */
  readonly ms: number;
}

let enabled = typeof process !== 'undefined' && process.env?.MULTIGPU_PROFILE === '1';
const totals = new Map<string, { dispatches: number; ns: number }>();
const pending = new Set<Promise<void>>();

export function setKernelProfiling(on: boolean): void {
  enabled = on;
}

export function profilingOn(gpu: GpuDevice): boolean {
  return enabled && gpu.hasFeature('timestamp-query');
}

/** Queries one submit can time (two per dispatch; WebGPU caps a query set at 4096). */
export const MAX_PROFILED_DISPATCHES = 2048;

/** Timestamp queries for one submit's dispatches. */
export class SubmitProfile {
  readonly querySet: GPUQuerySet;
  readonly labels: string[];
  readonly #resolve: TrackedBuffer;
  readonly #read: TrackedBuffer;

  private constructor(querySet: GPUQuerySet, labels: string[], resolve: TrackedBuffer, read: TrackedBuffer) {
    this.querySet = querySet;
    this.labels = labels;
    this.#resolve = resolve;
    this.#read = read;
  }

  static async create(gpu: GpuDevice, labels: string[]): Promise<SubmitProfile> {
    const count = labels.length * 2;
    const querySet = gpu.device.createQuerySet({ type: 'timestamp', count });
    const resolve = await gpu.createBuffer({ label: 'profile.resolve', size: count * 8, usage: GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC });
    const read = await gpu.createBuffer({ label: 'profile.read', size: count * 8, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
    return new SubmitProfile(querySet, labels, resolve, read);
  }

  /** The pass descriptor's timestampWrites for dispatch i. */
  writes(i: number): GPUComputePassTimestampWrites {
    return { querySet: this.querySet, beginningOfPassWriteIndex: 2 * i, endOfPassWriteIndex: 2 * i + 1 };
  }

  encodeResolve(encoder: GPUCommandEncoder): void {
    const count = this.labels.length * 2;
    encoder.resolveQuerySet(this.querySet, 0, count, this.#resolve.buffer, 0);
    encoder.copyBufferToBuffer(this.#resolve.buffer, 0, this.#read.buffer, 0, count * 8);
  }

  /** After the submit: reads the times back in the background and adds them to the totals. */
  collectLater(): void {
    const done = this.#read.buffer.mapAsync(GPUMapMode.READ).then(() => {
      const t = new BigInt64Array(this.#read.buffer.getMappedRange().slice(0));
      this.labels.forEach((label, i) => {
        const ns = Number(t[2 * i + 1]! - t[2 * i]!);
        const e = totals.get(label) ?? { dispatches: 0, ns: 0 };
        e.dispatches++;
        if (ns > 0) e.ns += ns;
        totals.set(label, e);
      });
    }).finally(() => {
      this.#read.destroy();
      this.#resolve.destroy();
      this.querySet.destroy();
      pending.delete(done);
    });
    pending.add(done);
  }
}

/** Waits for outstanding read-backs, then returns GPU time per kernel label, longest first. */
export async function kernelProfile(): Promise<KernelTime[]> {
  await Promise.allSettled([...pending]);
  return [...totals].map(([label, e]) => ({ label, dispatches: e.dispatches, ms: e.ns / 1e6 })).sort((a, b) => b.ms - a.ms);
}

export function resetKernelProfile(): void {
  totals.clear();
}
