import type { GpuDevice, TrackedBuffer } from '../devices/gpu-device.ts';
import * as ops from '../kernels/ops/index.ts';
import { KvCache } from '../kernels/ops/kv-cache.ts';
import type { RopeTable } from '../kernels/ops/rope.ts';
import { KernelRecorder } from '../kernels/recorder.ts';
import { GpuTensor, ReadbackPool, startReadback, uploadTensor, writeView } from '../kernels/tensor.ts';
import type {
  ActivationKind, AttentionOptions, Backend, BinaryOp, Conv2dOptions, KvCacheHandle, RopeSpec, T5BiasOptions, Tensor,
  TimestepOptions, VectorSlice, Weight,
} from './backend.ts';
import { splitLastAxis } from './backend.ts';
import { broadcastShape, checkSlice, elementsOf, normalizeAxis, RuntimeShapeError } from './shapes.ts';

/**
 * Whether attention runs as matmuls with its scores materialized (GpuBackend.#attentionByMatmul):
 * one sequence and one head wider than the flash kernel's 128-column slice, f32 activations, at
 * least 2^20 scores, and the scores (twice: before and after the softmax) within one storage
 * binding and a quarter of what the device has free.
 */
export function explicitScoresFit(gpu: GpuDevice, qShape: readonly number[], kShape: readonly number[],
  o: { readonly heads: number; readonly kvHeads?: number; readonly headDim: number }): boolean {
  if (qShape.length !== 3 || kShape.length !== 3 || qShape[0] !== 1 || o.heads !== 1 || (o.kvHeads ?? 1) !== 1) return false;
  if (o.headDim <= 128 || qShape[2] !== o.headDim || kShape[2] !== o.headDim) return false;
  const scores = qShape[1]! * kShape[1]!;
  if (scores < 2 ** 20) return false;
  const bytes = scores * 4;
  const free = gpu.capacity.bytes - gpu.ledger.used;
  return bytes <= gpu.device.limits.maxStorageBufferBindingSize && 2 * bytes <= free / 4;
}

/** Values on their way into `storage`: `ready` settles once `data` or `error` is set. */
interface PendingFill {
  readonly storage: TrackedBuffer;
  data: Float32Array | Int32Array | null;
  error: unknown;
  readonly ready: Promise<void>;
}

const arrived = (f: PendingFill) => f.data !== null || f.error !== undefined;

/** One turn of the event loop: lets WebGPU deliver finished read-backs (Dawn's node binding polls from setImmediate). */
function yieldToEventLoop(): Promise<void> {
  const g = globalThis as { setImmediate?: (f: () => void) => void };
  if (g.setImmediate) return new Promise((resolve) => g.setImmediate!(resolve));
  return new Promise((resolve) => {
    const channel = new MessageChannel();
    channel.port1.onmessage = () => {
      channel.port1.close();
      resolve();
    };
    channel.port2.postMessage(null);
  });
}

/** An activation on a GPU. */
export class GpuActivation implements Tensor {
  readonly device: string;
  readonly t: GpuTensor;
  constructor(t: GpuTensor) {
    this.device = t.gpu.name;
    this.t = t;
  }
  get shape(): readonly number[] {
    return this.t.shape;
  }
  get dtype(): 'f32' | 'i32' {
    return this.t.dtype === 'i32' ? 'i32' : 'f32';
  }
}

/** A model tensor on a GPU, in the form the kernels read (stored dtype, or staged for one block). */
export class GpuWeight implements Weight {
  readonly device: string;
  readonly name: string;
  readonly t: GpuTensor;
  constructor(name: string, t: GpuTensor) {
    this.device = t.gpu.name;
    this.name = name;
    this.t = t;
  }
  get shape(): readonly number[] {
    return this.t.shape;
  }
}

class GpuKv implements KvCacheHandle {
  readonly device: string;
  readonly cache: KvCache;
  constructor(device: string, cache: KvCache) {
    this.device = device;
    this.cache = cache;
  }
  get capacity(): number {
    return this.cache.capacity;
  }
  get length(): number {
    return this.cache.length;
  }
}

/**
 * The Backend on one GPU: each op records onto the current KernelRecorder; `flush()` submits
 * (the scheduler collects after every step, downloads flush first). Activations allocated since
 * the last `collect()` go back to the pool by it unless kept.
 */
export class GpuBackend implements Backend {
  readonly gpu: GpuDevice;
  readonly device: string;
  #rec: KernelRecorder | null = null;
  #live = new Set<TrackedBuffer>();
  /**
   * Activation buffers no tensor holds any more, by size: the next step's outputs reuse them, so
   * a pass in steady state (decoding) allocates nothing. Freed by close().
   */
  #pool = new Map<number, TrackedBuffer[]>();
  /** Pooled buffers freed while dispatches reading them were recorded but not submitted: no queue writes into them until then. */
  #freedUnsubmitted = new Set<TrackedBuffer>();
  /** Values from other devices, written before the next submit (uploadLater). */
  #fills: PendingFill[] = [];
  /** Mappable buffers of finished read-backs (logits every token, pipeline hops). */
  #readbacks = new ReadbackPool();
  #serial = new WeakMap<TrackedBuffer, number>();
  #nextSerial = 0;
  #ropeTables = new WeakMap<Float32Array, RopeTable>();
  #tables: GpuTensor[] = [];
  #caches = new Set<GpuKv>();

  constructor(gpu: GpuDevice) {
    this.gpu = gpu;
    this.device = gpu.name;
  }

  /** One recorder for the backend's life: it keeps its uniform buffer from submit to submit. */
  get rec(): KernelRecorder {
    return (this.#rec ??= new KernelRecorder(this.gpu, { reuseUniforms: true }));
  }

  /**
   * Submits what was recorded. Values still on their way from another device (uploadLater) are
   * waited for and written first: their writes must reach the queue before the work reading them.
   */
  async flush(): Promise<void> {
    if (this.#fills.length > 0) {
      const t0 = performance.now();
      await Promise.all(this.#fills.map((f) => f.ready));
      this.hopWaitMs += performance.now() - t0;
      this.#writeFills();
    }
    const rec = this.#rec;
    if (rec && rec.pending > 0) await rec.submit({ wait: false });
    this.#freedUnsubmitted.clear();
  }

  /** A pass starts: the recorder lays its uniforms out from the top again, so a pass's bind groups match the last one's. */
  beginPass(): void {
    this.#rec?.rewind();
  }

  /**
   * Returns every activation allocated since the last collect that `keep` does not hold to the
   * pool, after submitting. With `defer`, while values from another device are still on their
   * way (uploadLater), it lets the event loop deliver them once and submits only if they have
   * all arrived; otherwise the work stays recorded and the host goes on recording the next step
   * instead of waiting (the pipeline's hop overlaps the next device's recording).
   */
  async collect(keep: Iterable<Tensor>, o: { defer?: boolean } = {}): Promise<void> {
    if (o.defer && this.#fills.length > 0) {
      const t0 = performance.now();
      await yieldToEventLoop();
      this.hopWaitMs += performance.now() - t0;
      if (this.#fills.every(arrived)) await this.flush();
    } else {
      await this.flush();
    }
    const kept = new Set<TrackedBuffer>();
    for (const t of keep) if (t instanceof GpuActivation) kept.add(t.t.storage);
    for (const s of this.#live) {
      if (!kept.has(s)) {
        this.#live.delete(s);
        this.#recycle(s);
      }
    }
  }

  /** Whether values from another device are waited for before the next submit. */
  get awaitingValues(): boolean {
    return this.#fills.length > 0;
  }

  /** Milliseconds spent waiting for values from other devices, in flush() and collect()'s event-loop turns (the scheduler counts them as hop time). */
  hopWaitMs = 0;

  #writeFills(): void {
    const fills = this.#fills;
    this.#fills = [];
    const failed = fills.find((f) => f.error !== undefined);
    if (failed) {
      // The recorded work would read values that never came: drop it with them.
      this.#rec?.discard();
      throw failed.error;
    }
    for (const f of fills) {
      const data = f.data!;
      if (data.byteLength > 0) writeView(this.gpu.device, f.storage.buffer, 0, data);
    }
  }

  #recycle(s: TrackedBuffer): void {
    // Later dispatches are ordered after this step's reads (in one pass, or by the queue), so
    // they may take the buffer now; a queue write would overtake dispatches not yet submitted.
    if ((this.#rec?.pending ?? 0) > 0) this.#freedUnsubmitted.add(s);
    const list = this.#pool.get(s.bytes) ?? [];
    list.push(s);
    this.#pool.set(s.bytes, list);
  }

  /** Frees the pooled activation and read-back buffers (memory pressure); returns the bytes freed. */
  trim(): number {
    let n = this.#readbacks.clear();
    for (const list of this.#pool.values()) for (const s of list) {
      n += s.bytes;
      s.destroy();
    }
    this.#pool.clear();
    this.#freedUnsubmitted.clear();
    return n;
  }

  /** Bytes it holds on the GPU's ledger: live activations, RoPE tables, KV caches. */
  get heldBytes(): number {
    let n = 0;
    for (const s of this.#live) n += s.bytes;
    for (const list of this.#pool.values()) for (const s of list) n += s.bytes;
    for (const t of this.#tables) n += t.storage.bytes;
    n += this.#rec?.heldBytes ?? 0;
    n += this.#readbacks.heldBytes;
    for (const kv of this.#caches) n += kv.cache.k.storage.bytes + kv.cache.v.storage.bytes;
    return n;
  }

  /** Frees one activation now (it must not be used again). */
  release(t: Tensor): void {
    const a = this.#act(t, 'release');
    if (this.#live.delete(a.t.storage)) this.#recycle(a.t.storage);
  }

  /** Frees every activation and KV cache this backend made. */
  async close(): Promise<void> {
    await this.collect([]);
    this.trim();
    this.#rec?.dispose();
    this.#rec = null;
    for (const kv of this.#caches) kv.cache.destroy();
    this.#caches.clear();
    for (const t of this.#tables) t.destroy();
    this.#tables = [];
    this.#ropeTables = new WeakMap();
  }

  /** `queueWrite`: the buffer is written by queue.writeBuffer, not by a dispatch (see #recycle). */
  async #empty(shape: readonly number[], dtype: 'f32' | 'i32' = 'f32', label = 'activation', queueWrite = false): Promise<GpuTensor> {
    const bytes = Math.max(256, Math.ceil((elementsOf(shape) * 4) / 256) * 256);
    let storage = this.#takePooled(bytes, queueWrite);
    if (!storage) {
      storage = await this.gpu.createBuffer({ label, size: bytes, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST | GPUBufferUsage.COPY_SRC });
      this.#serial.set(storage, this.#nextSerial++);
    }
    this.#live.add(storage);
    return new GpuTensor(this.gpu, storage, shape, dtype);
  }

  /**
   * The oldest free buffer of that size. Not the last one freed: a pass then takes the same
   * buffers in the same order every time (the free lists hold the same buffers at the start of
   * each decoding pass, whatever order the last pass freed them in), so the recorder's cached
   * bind groups match token after token.
   */
  #takePooled(bytes: number, queueWrite: boolean): TrackedBuffer | undefined {
    const list = this.#pool.get(bytes);
    if (!list || list.length === 0) return undefined;
    let best = -1;
    for (let i = 0; i < list.length; i++) {
      if (queueWrite && this.#freedUnsubmitted.has(list[i]!)) continue;
      if (best < 0 || this.#serial.get(list[i]!)! < this.#serial.get(list[best]!)!) best = i;
    }
    if (best < 0) return undefined;
    const [storage] = list.splice(best, 1);
    this.#freedUnsubmitted.delete(storage!);
    return storage;
  }

  #wrap(t: GpuTensor): GpuActivation {
    return new GpuActivation(t);
  }

  #act(t: Tensor, op: string): GpuActivation {
    if (!(t instanceof GpuActivation) || t.device !== this.device) throw new RuntimeShapeError(`${op}: an activation on ${t.device} reached ${this.device}`);
    return t;
  }

  #w(w: Weight | Tensor, op: string): GpuTensor {
    if (w instanceof GpuWeight && w.device === this.device) return w.t;
    if (w instanceof GpuActivation && w.device === this.device) return w.t;
    throw new RuntimeShapeError(`${op}: ${'name' in w ? `weight ${w.name}` : 'a tensor'} on ${w.device} reached ${this.device}`);
  }

  #slice(s: VectorSlice, op: string): ops.VectorSlice {
    return { tensor: this.#act(s.tensor, op).t, offset: s.offset, stride: s.stride };
  }

  async upload(data: Float32Array | Int32Array, shape: readonly number[]): Promise<Tensor> {
    if (data.length !== elementsOf(shape)) throw new RuntimeShapeError(`upload: ${data.length} values for shape [${shape.join(', ')}]`);
    const t = await this.#empty(shape, data instanceof Int32Array ? 'i32' : 'f32', 'input', true);
    if (data.byteLength > 0) writeView(this.gpu.device, t.buffer, 0, data);
    return this.#wrap(t);
  }

  /**
   * A tensor whose values are still on their way (another device's read-back): ops may record
   * work on it now; the values are written before that work is submitted (see flush, collect).
   */
  async uploadLater(shape: readonly number[], dtype: 'f32' | 'i32', values: Promise<Float32Array | Int32Array>): Promise<Tensor> {
    const n = elementsOf(shape);
    // Handlers go on before anything awaits: a read-back that fails early is not left unhandled.
    const fill: Omit<PendingFill, 'storage'> = {
      data: null, error: undefined,
      ready: values.then((data) => {
        fill.data = data.length === n ? data : null;
        if (!fill.data) fill.error = new RuntimeShapeError(`upload: ${data.length} values for shape [${shape.join(', ')}]`);
      }, (error: unknown) => {
        fill.error = error ?? new Error('a read-back failed');
      }),
    };
    const t = await this.#empty(shape, dtype, 'input', true);
    this.#fills.push(Object.assign(fill, { storage: t.storage }));
    return this.#wrap(t);
  }

  async download(t: Tensor): Promise<Float32Array> {
    return (await this.startDownload(t))();
  }

  /** download in two halves: the read-back is queued when this resolves; the function waits for the values. */
  async startDownload(t: Tensor): Promise<() => Promise<Float32Array>> {
    const a = this.#act(t, 'download');
    await this.flush();
    const finish = await startReadback(a.t, this.#readbacks);
    return async () => {
      const bytes = await finish();
      const view = bytes.byteOffset % 4 === 0 ? bytes : bytes.slice();
      if (a.t.dtype === 'i32') return Float32Array.from(new Int32Array(view.buffer, view.byteOffset, view.byteLength / 4));
      return new Float32Array(view.buffer, view.byteOffset, view.byteLength / 4);
    };
  }

  reshape(t: Tensor, shape: readonly number[]): Tensor {
    const a = this.#act(t, 'reshape');
    if (elementsOf(shape) !== a.t.elements) throw new RuntimeShapeError(`reshape: [${a.shape.join(', ')}] has ${a.t.elements} elements, [${shape.join(', ')}] ${elementsOf(shape)}`);
    return this.#wrap(new GpuTensor(this.gpu, a.t.storage, [...shape], a.t.dtype));
  }

  async linear(x: Tensor, w: Weight, bias?: Weight | null, residual?: Tensor | null): Promise<Tensor> {
    const xt = this.#act(x, 'linear').t;
    const wt = this.#w(w, 'linear');
    const out = await this.#empty([...xt.shape.slice(0, -1), wt.shape[0]!]);
    const b = bias ? this.#w(bias, 'linear') : null;
    if (residual && !ops.linearUsesGemv(xt, wt)) {
      await ops.linear(this.rec, xt, wt, b, out);
      return this.binary('add', this.#wrap(out), residual);
    }
    await ops.linear(this.rec, xt, wt, b, out, residual ? { residual: this.#act(residual, 'linear').t } : {});
    return this.#wrap(out);
  }

  async linearParts(x: Tensor, w: Weight, bias: Weight | null, widths: readonly number[]): Promise<Tensor[]> {
    const xt = this.#act(x, 'linearParts').t;
    const wt = this.#w(w, 'linearParts');
    if (widths.reduce((a, b) => a + b, 0) !== wt.shape[0]) throw new RuntimeShapeError(`linearParts: widths ${widths.join(' + ')} do not add up to ${w.name}'s ${wt.shape[0]} rows`);
    if (widths.length <= 3 && ops.linearUsesGemv(xt, wt)) {
      const outs: GpuTensor[] = [];
      // One at a time: the pool hands out buffers in a fixed order (see #takePooled).
      for (const n of widths) outs.push(await this.#empty([...xt.shape.slice(0, -1), n]));
      await ops.linear(this.rec, xt, wt, bias ? this.#w(bias, 'linearParts') : null, outs[0]!, { parts: outs.slice(1) });
      return outs.map((o) => this.#wrap(o));
    }
    const full = await this.linear(x, w, bias);
    const parts = await splitLastAxis(this, full, widths, w.name);
    this.release(full);
    return parts;
  }

  async embedding(ids: Tensor, table: Weight): Promise<Tensor> {
    const it = this.#act(ids, 'embedding').t;
    const tt = this.#w(table, 'embedding');
    const out = await this.#empty([...it.shape, tt.shape[1]!]);
    await ops.embedding(this.rec, it, tt, out);
    return this.#wrap(out);
  }

  async rmsNorm(x: Tensor, w: Weight | null, eps: number): Promise<Tensor> {
    const xt = this.#act(x, 'rmsNorm').t;
    const out = await this.#empty(xt.shape);
    await ops.rmsNorm(this.rec, xt, w ? this.#w(w, 'rmsNorm') : null, out, { eps });
    return this.#wrap(out);
  }

  async layerNorm(x: Tensor, w: Weight | null, b: Weight | null, eps: number,
    modulation?: { readonly shift: VectorSlice; readonly scale: VectorSlice; readonly rowsPerBatch: number }): Promise<Tensor> {
    const xt = this.#act(x, 'layerNorm').t;
    const out = await this.#empty(xt.shape);
    await ops.layerNorm(this.rec, xt, w ? this.#w(w, 'layerNorm') : null, b ? this.#w(b, 'layerNorm') : null, out, {
      eps,
      modulation: modulation && {
        shift: this.#slice(modulation.shift, 'layerNorm'), scale: this.#slice(modulation.scale, 'layerNorm'), rowsPerBatch: modulation.rowsPerBatch,
      },
    });
    return this.#wrap(out);
  }

  async groupNorm(x: Tensor, w: Weight | null, b: Weight | null, o: { readonly groups: number; readonly eps: number; readonly silu?: boolean }): Promise<Tensor> {
    const xt = this.#act(x, 'groupNorm').t;
    const out = await this.#empty(xt.shape);
    await ops.groupNorm(this.rec, xt, w ? this.#w(w, 'groupNorm') : null, b ? this.#w(b, 'groupNorm') : null, out, o);
    return this.#wrap(out);
  }

  async activation(kind: ActivationKind, x: Tensor): Promise<Tensor> {
    const xt = this.#act(x, 'activation').t;
    const out = await this.#empty(xt.shape);
    await ops.activation(this.rec, kind, xt, out);
    return this.#wrap(out);
  }

  async gated(kind: ActivationKind, gate: Tensor, up: Tensor): Promise<Tensor> {
    const g = this.#act(gate, 'gated').t;
    const out = await this.#empty(g.shape);
    await ops.gatedMlp(this.rec, kind, g, this.#act(up, 'gated').t, out);
    return this.#wrap(out);
  }

  async binary(op: BinaryOp, a: Tensor, b: Tensor | Weight): Promise<Tensor> {
    const at = this.#act(a, op).t;
    const bt = this.#w(b, op);
    const out = await this.#empty(broadcastShape(op, at.shape, bt.shape));
    await ops.binary(this.rec, op, at, bt, out);
    return this.#wrap(out);
  }

  async scale(x: Tensor, s: number, b = 0): Promise<Tensor> {
    const xt = this.#act(x, 'scale').t;
    const out = await this.#empty(xt.shape);
    await ops.scale(this.rec, xt, out, s, b);
    return this.#wrap(out);
  }

  async softmax(x: Tensor): Promise<Tensor> {
    const xt = this.#act(x, 'softmax').t;
    const out = await this.#empty(xt.shape);
    await ops.softmax(this.rec, xt, out);
    return this.#wrap(out);
  }

  async attention(q: Tensor, k: Tensor, v: Tensor, o: AttentionOptions): Promise<Tensor> {
    const qt = this.#act(q, 'attention').t;
    let kt = this.#act(k, 'attention').t;
    let vt = this.#act(v, 'attention').t;
    const kvHeads = o.kvHeads ?? o.heads;
    let kvLength: number | undefined;
    if (o.cache) {
      const kv = o.cache;
      if (!(kv instanceof GpuKv) || kv.device !== this.device) throw new RuntimeShapeError(`attention: a KV cache on ${kv.device} reached ${this.device}`);
      const shape = [kt.shape[0]!, kt.shape[1]!, kvHeads, o.headDim];
      await kv.cache.append(this.rec, new GpuTensor(this.gpu, kt.storage, shape, kt.dtype), new GpuTensor(this.gpu, vt.storage, shape, vt.dtype));
      kt = kv.cache.k;
      vt = kv.cache.v;
      kvLength = kv.cache.length;
    }
    if (!o.cache && !o.mask && !o.relativeBias && !o.causal && explicitScoresFit(this.gpu, qt.shape, kt.shape, o)) {
      return this.#attentionByMatmul(qt, kt, vt, o.scale ?? 1 / Math.sqrt(o.headDim));
    }
    const out = await this.#empty(qt.shape);
    await ops.attention(this.rec, qt, kt, vt, out, {
      heads: o.heads, kvHeads, headDim: o.headDim, scale: o.scale, causal: o.causal, kvLength,
      mask: o.mask ? this.#act(o.mask, 'attention').t : undefined,
      relativeBias: o.relativeBias ? this.#act(o.relativeBias, 'attention').t : undefined,
    });
    return this.#wrap(out);
  }

  /**
   * One head of width > 128 (the SD VAE's mid-block attention: 512 channels, one head) as two
   * matmuls around a softmax, the Lq × Lk scores materialized: the flash kernel would compute the
   * scores once per 128-column slice of the output (4 times at 512), the f32 tiled matmul runs
   * them once at several times its speed. explicitScoresFit decides where the scores fit.
   */
  async #attentionByMatmul(q: GpuTensor, k: GpuTensor, v: GpuTensor, scale: number): Promise<Tensor> {
    const [, lq, d] = q.shape as [number, number, number];
    const lk = k.shape[1]!;
    const as2d = (t: GpuTensor, rows: number) => new GpuTensor(this.gpu, t.storage, [rows, d], t.dtype);
    const qs = await this.#empty([lq, d]);
    await ops.scale(this.rec, as2d(q, lq), qs, scale);
    const scores = await this.#empty([lq, lk]);
    await ops.linear(this.rec, qs, as2d(k, lk), null, scores);
    this.release(this.#wrap(qs));
    const p = await this.#empty([lq, lk]);
    await ops.softmax(this.rec, scores, p);
    this.release(this.#wrap(scores));
    const vT = await this.#empty([d, lk]);
    await ops.permute(this.rec, as2d(v, lk), vT, [1, 0]);
    const out = await this.#empty([1, lq, d]);
    await ops.linear(this.rec, p, vT, null, new GpuTensor(this.gpu, out.storage, [lq, d], out.dtype));
    this.release(this.#wrap(p));
    this.release(this.#wrap(vT));
    return this.#wrap(out);
  }

  async rope(x: Tensor, spec: RopeSpec, headDim: number, positionOffset = 0): Promise<Tensor> {
    const xt = this.#act(x, 'rope').t;
    let table = this.#ropeTables.get(spec.table);
    if (table && (table.mode !== spec.mode || table.rotaryDim !== spec.rotaryDim || table.rows !== spec.rows)) {
      throw new RuntimeShapeError(`rope: one table array given as two specs (${table.mode}/${table.rotaryDim}/${table.rows} and ${spec.mode}/${spec.rotaryDim}/${spec.rows}); build a table per spec`);
    }
    if (!table) {
      const tensor = await uploadTensor(this.gpu, spec.table, [spec.rows, spec.rotaryDim / 2, 2], 'f32', { label: 'rope.table' });
      table = { tensor, rows: spec.rows, rotaryDim: spec.rotaryDim, mode: spec.mode };
      this.#ropeTables.set(spec.table, table);
      this.#tables.push(tensor);
    }
    const width = xt.shape[xt.shape.length - 1]!;
    if (width % headDim !== 0) throw new RuntimeShapeError(`rope: the last dim ${width} is not a multiple of head dim ${headDim}`);
    const out = await this.#empty(xt.shape);
    await ops.rope(this.rec, xt, table, { heads: width / headDim, headDim, out, positionOffset });
    return this.#wrap(out);
  }

  async concat(xs: readonly Tensor[], axis: number): Promise<Tensor> {
    const ts = xs.map((x) => this.#act(x, 'concat').t);
    const rank = ts[0]!.shape.length;
    const ax = normalizeAxis('concat', axis, rank);
    const shape = [...ts[0]!.shape];
    shape[ax] = ts.reduce((s, t) => s + t.shape[ax]!, 0);
    const out = await this.#empty(shape, ts[0]!.dtype === 'i32' ? 'i32' : 'f32');
    await ops.concat(this.rec, ts, out, ax);
    return this.#wrap(out);
  }

  async slice(x: Tensor, axis: number, start: number, length: number): Promise<Tensor> {
    const xt = this.#act(x, 'slice').t;
    const ax = normalizeAxis('slice', axis, xt.shape.length);
    checkSlice(xt.shape, ax, start, length);
    const outer = elementsOf(xt.shape.slice(0, ax));
    const inner = elementsOf(xt.shape.slice(ax + 1));
    const shape = [...xt.shape];
    shape[ax] = length;
    if (outer === 1) {
      const out = await this.#empty(shape, xt.dtype === 'i32' ? 'i32' : 'f32');
      await ops.copyBytes(this.rec, xt, start * inner * 4, out, 0, length * inner * 4);
      return this.#wrap(out);
    }
    const out = await this.#empty(shape, xt.dtype === 'i32' ? 'i32' : 'f32');
    await ops.sliceAlong(this.rec, xt, out, ax, start);
    return this.#wrap(out);
  }

  async permute(x: Tensor, perm: readonly number[]): Promise<Tensor> {
    const xt = this.#act(x, 'permute').t;
    const out = await this.#empty(perm.map((p) => xt.shape[p]!));
    await ops.permute(this.rec, xt, out, perm);
    return this.#wrap(out);
  }

  async conv2d(x: Tensor, w: Weight, b: Weight | null, o: Conv2dOptions = {}): Promise<Tensor> {
    const xt = this.#act(x, 'conv2d').t;
    const wt = this.#w(w, 'conv2d');
    const padding = Array.isArray(o.padding)
      ? { top: o.padding[0]!, bottom: o.padding[1]!, left: o.padding[2]!, right: o.padding[3]! }
      : (o.padding as number | undefined);
    const options = { stride: o.stride, padding };
    const out = await this.#empty(ops.conv2dOutputShape(xt.shape, wt.shape, options));
    await ops.conv2d(this.rec, xt, wt, b ? this.#w(b, 'conv2d') : null, out, options);
    return this.#wrap(out);
  }

  async upsampleNearest(x: Tensor, factor: number): Promise<Tensor> {
    const xt = this.#act(x, 'upsampleNearest').t;
    const [n, c, h, w] = xt.shape as [number, number, number, number];
    const out = await this.#empty([n, c, h * factor, w * factor]);
    await ops.upsampleNearest(this.rec, xt, out);
    return this.#wrap(out);
  }

  async timestepEmbedding(timesteps: readonly number[], dim: number, o: TimestepOptions = {}): Promise<Tensor> {
    const out = await this.#empty([timesteps.length, dim]);
    await ops.timestepEmbedding(this.rec, timesteps, out, o);
    return this.#wrap(out);
  }

  async modulate(x: Tensor, shift: VectorSlice, scale: VectorSlice, rowsPerBatch: number): Promise<Tensor> {
    const xt = this.#act(x, 'modulate').t;
    const out = await this.#empty(xt.shape);
    await ops.adaLNModulate(this.rec, xt, this.#slice(shift, 'modulate'), this.#slice(scale, 'modulate'), out, { rowsPerBatch });
    return this.#wrap(out);
  }

  async gatedResidual(x: Tensor, y: Tensor, gate: VectorSlice, rowsPerBatch: number): Promise<Tensor> {
    const xt = this.#act(x, 'gatedResidual').t;
    const out = await this.#empty(xt.shape);
    await ops.gatedResidual(this.rec, xt, this.#act(y, 'gatedResidual').t, this.#slice(gate, 'gatedResidual'), out, { rowsPerBatch });
    return this.#wrap(out);
  }

  async t5Bias(weight: Weight, heads: number, lq: number, lk: number, o: T5BiasOptions): Promise<Tensor> {
    const wt = this.#w(weight, 't5Bias');
    if (wt.shape[0] !== o.numBuckets || wt.shape[1] !== heads) {
      throw new RuntimeShapeError(`t5Bias: ${weight.name} is [${wt.shape.join(', ')}], not [${o.numBuckets}, ${heads}]`);
    }
    const out = await this.#empty([heads, lq + lk - 1]);
    await ops.t5RelativeBias(this.rec, wt, out, { lq, lk, bidirectional: o.bidirectional, maxDistance: o.maxDistance });
    return this.#wrap(out);
  }

  async kvCache(batch: number, capacity: number, kvHeads: number, headDim: number): Promise<KvCacheHandle> {
    const kv = new GpuKv(this.device, await KvCache.create(this.gpu, { batch, capacity, kvHeads, headDim }));
    this.#caches.add(kv);
    return kv;
  }

  /** Frees a KV cache made by kvCache. */
  dropCache(kv: KvCacheHandle): void {
    if (kv instanceof GpuKv && this.#caches.delete(kv)) kv.cache.destroy();
  }
}
