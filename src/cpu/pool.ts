/**
 * The CPU device's threads: the calling thread plus `threads - 1` workers (worker_threads
 * under Node, Web Workers under Deno and in browsers), all running the same WebAssembly
 * module on shared memories. One op at a time: every thread calls the same export with the
 * same job pointer and its thread id; the kernels share the work out through an atomic
 * counter in the job, so the calling thread computes too and nobody idles on a fixed split.
 */
import { detectRuntime, importNodeBuiltin } from '../devices/runtime.ts';
import { CTRL, OP, workerSource } from './worker-source.ts';

interface WorkerHandle {
  post(message: unknown): void;
  onMessage(handler: (message: Record<string, unknown>) => void): void;
  /** Node: whether the worker keeps the process alive. */
  ref(on: boolean): void;
  terminate(): Promise<unknown> | void;
}

/** Spins (Atomics.load) before a worker sleeps: back-to-back ops skip the futex wake-up. */
const SPIN = 20_000;

export class CpuKernelError extends Error {}

function canBlock(): boolean {
  // Atomics.wait throws on a browser's main thread; elsewhere (Node, Deno, workers) it blocks.
  const g = globalThis as { document?: unknown; WorkerGlobalScope?: unknown };
  return !(typeof g.document !== 'undefined' && typeof g.WorkerGlobalScope === 'undefined');
}

async function spawn(source: string): Promise<WorkerHandle> {
  if (detectRuntime() === 'node') {
    const wt = await importNodeBuiltin<typeof import('node:worker_threads')>('worker_threads');
    const worker = new wt.Worker(source, { eval: true });
    return {
      post: (m) => worker.postMessage(m),
      onMessage: (h) => worker.on('message', h),
      ref: (on) => (on ? worker.ref() : worker.unref()),
      terminate: () => worker.terminate(),
    };
  }
  const url = URL.createObjectURL(new Blob([source], { type: 'text/javascript' }));
  const worker = new Worker(url, { type: 'module' });
  return {
    post: (m) => worker.postMessage(m),
    onMessage: (h) => worker.addEventListener('message', (e) => h((e as MessageEvent).data as Record<string, unknown>)),
    ref: () => {},
    terminate: () => {
      worker.terminate();
      URL.revokeObjectURL(url);
    },
  };
}

export class ThreadPool {
  readonly threads: number;
  private readonly ctrl: Int32Array;
  private readonly workers: WorkerHandle[];
  private readonly fnIndex: Map<string, number>;
  private seq = 0;
  private readonly pendingAcks = new Map<number, { left: number; resolve: () => void; reject: (e: Error) => void }>();
  private workerError: string | null = null;
  private closed = false;
  private readonly blocking = canBlock();

  private constructor(threads: number, ctrl: Int32Array, workers: WorkerHandle[], fns: readonly string[]) {
    this.threads = threads;
    this.ctrl = ctrl;
    this.workers = workers;
    this.fnIndex = new Map(fns.map((f, i) => [f, i]));
    for (const w of workers) {
      w.onMessage((m) => {
        if (m.type === 'ack') this.ack(m.seq as number, m.error as string | undefined);
        else if (m.type === 'error') this.workerError = `worker ${String(m.tid)}: ${String(m.message)}`;
      });
    }
  }

  /** A pool of `threads` threads (the caller included); threads = 1 starts no worker. */
  static async create(threads: number, module: WebAssembly.Module, fns: readonly string[]): Promise<ThreadPool> {
    const count = Math.max(0, threads - 1);
    // One thread needs no shared control words (and a page without isolation has no SharedArrayBuffer).
    const ctrl = new Int32Array(count > 0 ? new SharedArrayBuffer(CTRL.WORDS * 4) : new ArrayBuffer(CTRL.WORDS * 4));
    const source = count > 0 ? workerSource() : '';
    const workers = await Promise.all(Array.from({ length: count }, () => spawn(source)));
    const pool = new ThreadPool(threads, ctrl, workers, fns);
    if (count > 0) {
      await pool.broadcast((tid) => ({ type: 'init', ctrl: ctrl.buffer, tid, workers: count, gen: Atomics.load(ctrl, CTRL.GEN), module, fns, spin: SPIN }), false);
    }
    return pool;
  }

  private ack(seq: number, error?: string): void {
    const p = this.pendingAcks.get(seq);
    if (!p) return;
    if (error) {
      this.pendingAcks.delete(seq);
      p.reject(new CpuKernelError(`CPU worker failed: ${error}`));
      return;
    }
    if (--p.left === 0) {
      this.pendingAcks.delete(seq);
      p.resolve();
    }
  }

  /**
   * Sends one message to every worker (built per thread id 1..) and waits for all acks.
   * Workers blocked in Atomics.wait are sent to their event loop by a MAILBOX op.
   */
  async broadcast(build: (tid: number) => Record<string, unknown>, mailbox = true): Promise<void> {
    if (this.workers.length === 0) return;
    const seq = ++this.seq;
    const done = new Promise<void>((resolve, reject) => this.pendingAcks.set(seq, { left: this.workers.length, resolve, reject }));
    Atomics.store(this.ctrl, CTRL.MSGSEQ, seq);
    this.workers.forEach((w, i) => {
      w.ref(true);
      w.post({ ...build(i + 1), seq });
    });
    if (mailbox) this.signal(OP.MAILBOX);
    try {
      await done;
    } finally {
      for (const w of this.workers) w.ref(false);
    }
  }

  private signal(op: number): void {
    Atomics.store(this.ctrl, CTRL.OP, op);
    Atomics.store(this.ctrl, CTRL.DONE, 0);
    Atomics.add(this.ctrl, CTRL.GEN, 1);
    Atomics.notify(this.ctrl, CTRL.GEN);
  }

  /**
   * Runs export `fn`(arg, thread) on every thread, the caller's `local` instance as thread 0,
   * the workers' instances of memory `slot` as threads 1.. Blocks where the runtime allows
   * (Node, Deno, workers); on a browser's main thread it waits asynchronously. `items`: how
   * many work items the job has (the workers stay asleep for one).
   */
  run(fn: string, slot: number, local: WebAssembly.Instance, arg: number, items = Infinity): void | Promise<void> {
    if (this.closed) throw new CpuKernelError('the CPU thread pool is closed');
    const call = local.exports[fn] as (arg: number, thread: number) => void;
    const n = this.workers.length;
    // One work item: the calling thread takes it; waking the workers would only add latency.
    if (n === 0 || items <= 1) {
      call(arg, 0);
      return;
    }
    const c = this.ctrl;
    Atomics.store(c, CTRL.FN, this.fnIndex.get(fn)!);
    Atomics.store(c, CTRL.SLOT, slot);
    Atomics.store(c, CTRL.ARG, arg);
    Atomics.store(c, CTRL.ERROR, 0);
    this.signal(OP.CALL);
    let localError: unknown = null;
    try {
      call(arg, 0);
    } catch (error) {
      localError = error;
    }
    const finish = (): void => {
      if (localError) throw localError;
      if (Atomics.load(c, CTRL.ERROR) !== 0) throw new CpuKernelError(`CPU kernel ${fn} failed on a worker${this.workerError ? `: ${this.workerError}` : ''}`);
    };
    if (this.blocking) {
      for (let d = Atomics.load(c, CTRL.DONE); d < n; d = Atomics.load(c, CTRL.DONE)) Atomics.wait(c, CTRL.DONE, d);
      finish();
      return;
    }
    return (async () => {
      for (let d = Atomics.load(c, CTRL.DONE); d < n; d = Atomics.load(c, CTRL.DONE)) {
        const waitAsync = (Atomics as { waitAsync?: (a: Int32Array, i: number, v: number) => { async: boolean; value: Promise<string> | string } }).waitAsync;
        if (waitAsync) {
          const r = waitAsync(c, CTRL.DONE, d);
          if (r.async) await r.value;
        } else {
          await new Promise((resolve) => setTimeout(resolve, 0));
        }
      }
      finish();
    })();
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.workers.length > 0) this.signal(OP.EXIT);
    await Promise.all(this.workers.map((w) => w.terminate()));
  }
}
