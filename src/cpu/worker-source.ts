/**
 * The worker threads' code, sent as source text (so no worker file has to be found on disk
 * or by a bundler): Node runs it with worker_threads `eval`, Deno and browsers as a module
 * Worker from a Blob URL. `workerMain` must stay self-contained: no imports, no closures.
 *
 * Protocol (control words in a SharedArrayBuffer, see pool.ts): the worker blocks in
 * Atomics.wait on GEN; each new generation is one op: CALL runs an export on one memory's
 * instance with (arg, thread id) and counts DONE; MAILBOX returns to the event loop so that
 * posted messages (new or dropped memories) are handled, each acknowledged by its seq.
 */

/** Indices into the control Int32Array (pool.ts uses the same). */
export const CTRL = { GEN: 0, DONE: 1, OP: 2, FN: 3, SLOT: 4, ARG: 5, MSGSEQ: 6, ERROR: 7, WORDS: 16 } as const;
export const OP = { CALL: 1, MAILBOX: 2, EXIT: 3 } as const;

export interface WorkerEnv {
  post(message: unknown): void;
  listen(handler: (message: unknown) => void): void;
  close(): void;
}

export function workerMain(env: WorkerEnv): void {
  const GEN = 0, DONE = 1, OPW = 2, FN = 3, SLOT = 4, ARG = 5, MSGSEQ = 6, ERROR = 7;
  const CALL = 1, MAILBOX = 2, EXIT = 3;
  let ctrl: Int32Array | null = null;
  let tid = 0;
  let workers = 0;
  let seen = 0;
  let handled = 0;
  let spin = 0;
  let module: WebAssembly.Module | null = null;
  let fns: string[] = [];
  const instances: Array<WebAssembly.Instance | undefined> = [];
  type Message =
    | { type: 'init'; seq: number; ctrl: SharedArrayBuffer; tid: number; workers: number; gen: number; module: WebAssembly.Module; fns: string[]; spin: number }
    | { type: 'memory'; seq: number; slot: number; memory: WebAssembly.Memory; stackTop: number }
    | { type: 'drop'; seq: number; slot: number };

  function loop(): void {
    const c = ctrl!;
    for (;;) {
      if (handled < Atomics.load(c, MSGSEQ)) return; // messages are waiting: let the event loop deliver them
      let g = Atomics.load(c, GEN);
      for (let i = 0; g === seen && i < spin; i++) g = Atomics.load(c, GEN);
      while (g === seen) {
        Atomics.wait(c, GEN, seen);
        g = Atomics.load(c, GEN);
      }
      seen = g;
      const op = Atomics.load(c, OPW);
      if (op === CALL) {
        try {
          const instance = instances[Atomics.load(c, SLOT)]!;
          (instance.exports[fns[Atomics.load(c, FN)]!] as (arg: number, thread: number) => void)(Atomics.load(c, ARG), tid);
        } catch (error) {
          Atomics.store(c, ERROR, tid);
          env.post({ type: 'error', tid, message: String((error as Error)?.stack ?? error) });
        }
        if (Atomics.add(c, DONE, 1) + 1 === workers) Atomics.notify(c, DONE);
      } else if (op === EXIT) {
        env.close();
        return;
      }
      // MAILBOX: the check at the top of the loop returns when a message is due.
    }
  }

  env.listen((raw) => {
    const message = raw as Message;
    try {
      if (message.type === 'init') {
        ctrl = new Int32Array(message.ctrl);
        tid = message.tid;
        workers = message.workers;
        seen = message.gen;
        module = message.module;
        fns = message.fns;
        spin = message.spin;
      } else if (message.type === 'memory') {
        const instance = new WebAssembly.Instance(module!, { env: { memory: message.memory } });
        (instance.exports.__stack_pointer as WebAssembly.Global).value = message.stackTop;
        instances[message.slot] = instance;
      } else if (message.type === 'drop') {
        instances[message.slot] = undefined;
      }
      handled = message.seq;
      env.post({ type: 'ack', seq: message.seq });
    } catch (error) {
      handled = message.seq;
      env.post({ type: 'ack', seq: message.seq, error: String((error as Error)?.stack ?? error) });
    }
    loop();
  });
}

/** Source text of a worker: picks its runtime's message port, then runs workerMain. */
export function workerSource(): string {
  return `const workerMain = ${workerMain.toString()};
const node = typeof process === 'object' && typeof require === 'function' && typeof Deno === 'undefined';
let env;
if (node) {
  const { parentPort } = require('node:worker_threads');
  env = { post: (m) => parentPort.postMessage(m), listen: (h) => parentPort.on('message', h), close: () => parentPort.close() };
} else {
  env = { post: (m) => self.postMessage(m), listen: (h) => { self.onmessage = (e) => h(e.data); }, close: () => self.close() };
}
workerMain(env);
`;
}
