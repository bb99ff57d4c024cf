import type { Plan } from '../allocation/planner.ts';
import { MultiGpuError } from '../errors.ts';
import type { HostTensor, Step, StepContext } from '../models/program.ts';
import type { Backend, KvCacheHandle, Tensor, Weight } from './backend.ts';
import { CpuBackend } from './cpu-backend.ts';
import { GpuBackend } from './gpu-backend.ts';
import type { PlacedBlock } from './placement.ts';
import { elementsOf } from './shapes.ts';
import type { StagingArea } from './staging.ts';

/** A step asked for a weight, activation or input the model does not have there. */
export class ModelGraphError extends MultiGpuError {
  constructor(message: string) {
    super('E_MODEL_GRAPH', message, { hint: 'a model definition reads a tensor its block does not own, or an input is missing; check the input names the model takes' });
  }
}

export function emptyRunStats(): RunStats {
  return { movedBytes: 0, moves: 0, recordMs: 0, submitMs: 0, hopMs: 0, dispatches: 0, submits: 0, bindGroups: 0 };
}

/** Streamed blocks staged ahead of the one running. */
export const PREFETCH = 2;

export type DeviceBackend = (GpuBackend | CpuBackend) & Backend;

/** KV caches of one generate session, per layer key and device. */
export class KvSession {
  position = 0;
  readonly capacity: number;
  readonly caches = new Map<string, { backend: DeviceBackend; handle: KvCacheHandle }>();
  constructor(capacity: number) {
    this.capacity = capacity;
  }
  close(): void {
    for (const { backend, handle } of this.caches.values()) if (backend instanceof GpuBackend) backend.dropCache(handle);
    this.caches.clear();
  }
}

export interface RunStats {
  /** Bytes of activations moved between devices. */
  movedBytes: number;
  moves: number;
  /** Host time spent recording the steps' ops (model math, op checks, pipeline lookups). */
  recordMs: number;
  /** Host time spent encoding and submitting them (bind groups, uniforms, queue.submit). */
  submitMs: number;
  /** Time a step waited for an activation to move from another device (read back, then uploaded). */
  hopMs: number;
  /** Kernel dispatches submitted on GPUs. */
  dispatches: number;
  /** Command buffers submitted for them. */
  submits: number;
  /** Bind groups created for them (the rest came from the recorders' caches). */
  bindGroups: number;
  /** Bytes of the next pass's streamed blocks staged at the end of this one (prestageNext). */
  aheadBytes?: number;
}

/**
 * Executes a model's steps on a plan: each step on its block's execution device (stream blocks
 * on the compute device, their weights staged first), reading named activations that the
 * scheduler moves to that device on demand (through the host: WebGPU has no peer copies) and
 * keeps there for later readers. After each step, activations no name holds any more are freed.
 */
export class Scheduler {
  constructor(
    private readonly plan: Plan,
    private readonly placed: ReadonlyMap<string, PlacedBlock>,
    private readonly backendOf: (device: string) => Promise<DeviceBackend>,
    private readonly staging: (device: string) => StagingArea,
    private readonly prefetch = PREFETCH,
  ) {
    if (!Number.isInteger(prefetch) || prefetch < 1) throw new RangeError(`prefetch must be a whole number ≥ 1, got ${prefetch}`);
  }

  /** Streamed blocks of the last pass, in the order it ran them. */
  #streamOrder: PlacedBlock[] = [];
  #prestaged: PlacedBlock[] = [];

  /**
   * Queues the copies of the first `prefetch` streamed blocks of a pass like the last one (the
   * next decoding step) now, so the link works while this pass's logits are read back and the
   * next pass records its resident blocks. Weights don't depend on the pass: only the staging
   * buffers are taken early. releasePrestaged() gives them back when no such pass follows.
   */
  async prestage(): Promise<number> {
    let bytes = 0;
    for (const p of this.#streamOrder.slice(0, this.prefetch)) {
      await this.#settle(p.placement.execDevice);
      const area = this.staging(p.placement.execDevice);
      const before = area.copiedBytes;
      await area.stage(p);
      bytes += area.copiedBytes - before;
      this.#prestaged.push(p);
    }
    return bytes;
  }

  /** Streamed weights are copied by the queue: a device's held-back work goes first (it may read the staging buffers being refilled). */
  async #settle(device: string): Promise<void> {
    const backend = await this.backendOf(device);
    if (backend instanceof GpuBackend && backend.awaitingValues) await backend.flush();
  }

  releasePrestaged(): void {
    for (const p of this.#prestaged) this.staging(p.placement.execDevice).release(p.placement.name);
    this.#prestaged = [];
  }

  /**
   * `prestageNext`: another pass like this one follows (decoding); its first streamed blocks'
   * copies are queued before this pass's outputs are read back (see prestage).
   */
  async run(steps: readonly Step[], inputs: ReadonlyMap<string, HostTensor>, outputs: readonly string[], session?: KvSession,
    stats: RunStats = emptyRunStats(), prestageNext = false): Promise<Map<string, HostTensor>> {
    // name → its copies, by device ('host' for inputs)
    const state = new Map<string, Map<string, Tensor | HostTensor>>();
    for (const [name, t] of inputs) state.set(name, new Map([['host', t]]));
    const used = new Set<DeviceBackend>();
    const keepOn = (device: string): Tensor[] => [...state.values()].flatMap((copies) => {
      const t = copies.get(device);
      return t && 'device' in t ? [t] : [];
    });
    const deviceOf = (step: Step): string => {
      if (step.block === null) return this.plan.compute;
      const p = this.placed.get(step.block);
      if (!p) throw new ModelGraphError(`a step runs block "${step.block}", which the model's block map does not have`);
      return p.placement.execDevice;
    };
    const streamed = (step: Step | undefined): PlacedBlock | null => {
      if (!step || step.block === null) return null;
      const p = this.placed.get(step.block)!;
      return p.placement.exec === 'stream' ? p : null;
    };
    this.#prestaged = [];
    const order: PlacedBlock[] = [];
    try {
      for (let i = 0; i < steps.length; i++) {
        const step = steps[i]!;
        const device = deviceOf(step);
        const backend = await this.backendOf(device);
        if (!used.has(backend)) {
          used.add(backend);
          if (backend instanceof GpuBackend) backend.beginPass();
        }
        const block = step.block === null ? null : this.placed.get(step.block)!;
        let weights: ReadonlyMap<string, Weight> = block?.weights ?? new Map();
        const stream = streamed(step);
        if (stream) {
          await this.#settle(device);
          weights = await this.staging(device).stage(stream);
          if (!order.includes(stream)) order.push(stream);
        }
        // The next `prefetch` streamed blocks' copies are queued now, ahead of this step's kernels
        // (whatever device this step runs on: streamed blocks always run on the compute device).
        const ahead = new Set<string>();
        for (const next of steps.slice(i + 1)) {
          if (ahead.size >= this.prefetch) break;
          const p = streamed(next);
          if (!p || next.block === step.block || ahead.has(p.placement.name)) continue;
          ahead.add(p.placement.name);
          await this.#settle(p.placement.execDevice);
          await this.staging(p.placement.execDevice).stage(p);
        }
        let hopMs = 0;
        const get = async (name: string): Promise<Tensor> => {
          const copies = state.get(name);
          if (!copies) throw new ModelGraphError(`block ${step.block ?? '(none)'} reads "${name}", which no earlier step set and no input gave`);
          const here = copies.get(device);
          if (here) return here as Tensor;
          const [from, t] = copies.entries().next().value as [string, Tensor | HostTensor];
          let moved: Tensor;
          if (from === 'host') {
            moved = await backend.upload((t as HostTensor).data, (t as HostTensor).shape);
          } else {
            const src = t as Tensor;
            const source = await this.backendOf(from);
            stats.movedBytes += elementsOf(src.shape) * 4;
            stats.moves++;
            // Downloads come back as f32 values; i32 tensors go on as i32.
            const asStored = (f: Float32Array) => (src.dtype === 'i32' ? Int32Array.from(f) : f);
            const h0 = performance.now();
            if (source instanceof GpuBackend && backend instanceof GpuBackend) {
              // GPU to GPU: the read-back is queued and this device records on without waiting;
              // the values are written before its work is submitted (GpuBackend.uploadLater).
              const finish = await source.startDownload(src);
              hopMs += performance.now() - h0;
              moved = await backend.uploadLater(src.shape, src.dtype, finish().then(asStored));
            } else {
              const f = await source.download(src);
              hopMs += performance.now() - h0;
              moved = await backend.upload(asStored(f), src.shape);
            }
          }
          copies.set(device, moved);
          return moved;
        };
        const ctx: StepContext = {
          b: backend,
          w: (name) => {
            const w = weights.get(name);
            if (!w) {
              throw new ModelGraphError(block && !block.names.has(name)
                ? `block ${step.block} reads weight "${name}", which belongs to another block (its own: ${[...block.names].slice(0, 6).join(', ')}${block.names.size > 6 ? ', …' : ''})`
                : `block ${step.block ?? '(none)'} reads weight "${name}", which the checkpoint does not have`);
            }
            return w;
          },
          has: (name) => weights.has(name),
          get,
          exists: (name) => state.has(name),
          set: (name, t) => {
            if (t.device !== device) throw new ModelGraphError(`block ${step.block} set "${name}" to a tensor on ${t.device}, not ${device}`);
            state.set(name, new Map([[device, t]]));
          },
          input: (name) => {
            const t = inputs.get(name);
            if (!t) throw new ModelGraphError(`the model needs input "${name}"`);
            return t;
          },
          position: session?.position ?? 0,
          kv: async (key, batch, kvHeads, headDim) => {
            if (!session) return undefined;
            const id = `${key}@${device}`;
            let c = session.caches.get(id);
            if (!c) {
              c = { backend, handle: await backend.kvCache(batch, session.capacity, kvHeads, headDim) };
              session.caches.set(id, c);
            }
            return c.handle;
          },
        };
        const dispatched = backend instanceof GpuBackend ? backend.rec.dispatched : 0;
        const submitted = backend instanceof GpuBackend ? backend.rec.submits : 0;
        const made = backend instanceof GpuBackend ? backend.rec.bindGroupsMade : 0;
        const waited = backend instanceof GpuBackend ? backend.hopWaitMs : 0;
        const t0 = performance.now();
        await step.run(ctx);
        const t1 = performance.now();
        // Waiting for another device's values while collecting counts as hop time, not submitting.
        let waitedInCollect = 0;
        if (backend instanceof GpuBackend) {
          await backend.collect(keepOn(device), { defer: true });
          waitedInCollect = backend.hopWaitMs - waited;
          stats.dispatches += backend.rec.dispatched - dispatched;
          stats.submits += backend.rec.submits - submitted;
          stats.bindGroups += backend.rec.bindGroupsMade - made;
        }
        stats.hopMs += hopMs + waitedInCollect;
        stats.recordMs += t1 - t0 - hopMs;
        stats.submitMs += performance.now() - t1 - waitedInCollect;
        if (stream && steps[i + 1]?.block !== step.block) this.staging(device).release(stream.placement.name);
      }
      this.#streamOrder = order;
      // Outputs' read-backs are queued first, then the next pass's first weight copies: the
      // read-back waits only for this pass's work.
      const reads = new Map<string, HostTensor | { finish: () => Promise<Float32Array>; shape: number[] }>();
      for (const name of outputs) {
        const copies = state.get(name);
        if (!copies) throw new ModelGraphError(`the model did not produce output "${name}"`);
        const [from, t] = copies.entries().next().value as [string, Tensor | HostTensor];
        if (from === 'host') {
          reads.set(name, t as HostTensor);
          continue;
        }
        const backend = await this.backendOf(from);
        const shape = [...(t as Tensor).shape];
        reads.set(name, backend instanceof GpuBackend
          ? { finish: await backend.startDownload(t as Tensor), shape }
          : { data: await backend.download(t as Tensor), shape });
      }
      try {
        if (prestageNext) stats.aheadBytes = (stats.aheadBytes ?? 0) + await this.prestage();
      } catch (error) {
        // The read-backs' buffers are freed when they finish.
        await Promise.allSettled([...reads.values()].map((r) => ('finish' in r ? r.finish() : null)));
        throw error;
      }
      const result = new Map<string, HostTensor>();
      for (const [name, r] of reads) result.set(name, 'finish' in r ? { data: await r.finish(), shape: r.shape } : r);
      return result;
    } finally {
      for (const b of used) if (b instanceof GpuBackend) await b.collect([]);
    }
  }
}
