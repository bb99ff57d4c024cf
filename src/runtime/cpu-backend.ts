import { t5RelativeBiasTable, type CpuKernels, type CpuWeight } from '../cpu/kernels.ts';
import type {
  ActivationKind, AttentionOptions, Backend, BinaryOp, Conv2dOptions, KvCacheHandle, RopeSpec, T5BiasOptions, Tensor,
  TimestepOptions, VectorSlice, Weight,
} from './backend.ts';
import { splitLastAxis } from './backend.ts';
import { broadcastShape, checkSlice, elementsOf, normalizeAxis, RuntimeShapeError } from './shapes.ts';

/** An activation in host memory (the CPU device's kernels copy it into WebAssembly memory per op). */
export class CpuActivation implements Tensor {
  readonly device = 'cpu';
  readonly shape: readonly number[];
  readonly data: Float32Array | Int32Array;
  constructor(data: Float32Array | Int32Array, shape: readonly number[]) {
    if (data.length !== elementsOf(shape)) throw new RuntimeShapeError(`cpu tensor: ${data.length} values for shape [${shape.join(', ')}]`);
    this.data = data;
    this.shape = shape;
  }
  get dtype(): 'f32' | 'i32' {
    return this.data instanceof Int32Array ? 'i32' : 'f32';
  }
  get f32(): Float32Array {
    if (!(this.data instanceof Float32Array)) throw new RuntimeShapeError('an i32 tensor reached an op that reads f32');
    return this.data;
  }
}

/**
 * A model tensor on the CPU device: matrices (rank ≥ 2) resident in WebAssembly memory in
 * their stored dtype, as [shape[0], rest]; vectors and small matrices also as f32 values
 * (norm weights, biases, T5's bucket table).
 */
export class CpuParam implements Weight {
  readonly device = 'cpu';
  readonly name: string;
  readonly shape: readonly number[];
  readonly matrix: CpuWeight | null;
  readonly values: Float32Array | null;
  constructor(name: string, shape: readonly number[], matrix: CpuWeight | null, values: Float32Array | null) {
    this.name = name;
    this.shape = shape;
    this.matrix = matrix;
    this.values = values;
  }
}

class CpuKv implements KvCacheHandle {
  readonly device = 'cpu';
  readonly k: Float32Array;
  readonly v: Float32Array;
  length = 0;
  constructor(readonly batch: number, readonly capacity: number, readonly width: number) {
    this.k = new Float32Array(batch * capacity * width);
    this.v = new Float32Array(batch * capacity * width);
  }
  append(k: Float32Array, v: Float32Array, n: number): void {
    if (this.length + n > this.capacity) throw new RuntimeShapeError(`KV cache: ${this.length + n} positions exceed its capacity ${this.capacity}`);
    for (let b = 0; b < this.batch; b++) {
      const at = (b * this.capacity + this.length) * this.width;
      this.k.set(k.subarray(b * n * this.width, (b + 1) * n * this.width), at);
      this.v.set(v.subarray(b * n * this.width, (b + 1) * n * this.width), at);
    }
    this.length += n;
  }
  /** The filled rows, [B, length, width]. */
  filled(which: 'k' | 'v'): Float32Array {
    const src = this[which];
    if (this.length === this.capacity) return src;
    const out = new Float32Array(this.batch * this.length * this.width);
    for (let b = 0; b < this.batch; b++) out.set(src.subarray(b * this.capacity * this.width, (b * this.capacity + this.length) * this.width), b * this.length * this.width);
    return out;
  }
}

/** The Backend on the CPU device: the WebAssembly kernels of src/cpu. */
export class CpuBackend implements Backend {
  readonly device = 'cpu';
  readonly kernels: CpuKernels;

  constructor(kernels: CpuKernels) {
    this.kernels = kernels;
  }

  #act(t: Tensor, op: string): CpuActivation {
    if (!(t instanceof CpuActivation)) throw new RuntimeShapeError(`${op}: an activation on ${t.device} reached cpu`);
    return t;
  }

  #param(w: Weight, op: string): CpuParam {
    if (!(w instanceof CpuParam)) throw new RuntimeShapeError(`${op}: weight ${w.name} on ${w.device} reached cpu`);
    return w;
  }

  #matrix(w: Weight, op: string): CpuWeight {
    const m = this.#param(w, op).matrix;
    if (!m) throw new RuntimeShapeError(`${op}: ${w.name} [${w.shape.join(', ')}] is not a matrix`);
    return m;
  }

  #values(w: Weight | null | undefined, op: string): Float32Array | null {
    if (!w) return null;
    const v = this.#param(w, op).values;
    if (!v) throw new RuntimeShapeError(`${op}: ${w.name} [${w.shape.join(', ')}] is kept only as a matrix`);
    return v;
  }

  #slice(s: VectorSlice, op: string): { data: Float32Array; offset: number; stride: number } {
    const t = this.#act(s.tensor, op);
    return { data: t.f32, offset: s.offset ?? 0, stride: s.stride ?? t.shape[t.shape.length - 1]! };
  }

  #out(data: Float32Array, shape: readonly number[]): CpuActivation {
    return new CpuActivation(data, shape);
  }

  async upload(data: Float32Array | Int32Array, shape: readonly number[]): Promise<Tensor> {
    return new CpuActivation(data.slice(), [...shape]);
  }

  async download(t: Tensor): Promise<Float32Array> {
    const a = this.#act(t, 'download');
    return a.data instanceof Float32Array ? a.data.slice() : Float32Array.from(a.data);
  }

  reshape(t: Tensor, shape: readonly number[]): Tensor {
    const a = this.#act(t, 'reshape');
    return new CpuActivation(a.data, [...shape]);
  }

  async linear(x: Tensor, w: Weight, bias?: Weight | null, residual?: Tensor | null): Promise<Tensor> {
    const out = await this.#linear(x, w, bias);
    return residual ? this.binary('add', out, residual) : out;
  }

  async linearParts(x: Tensor, w: Weight, bias: Weight | null, widths: readonly number[]): Promise<Tensor[]> {
    return splitLastAxis(this, await this.#linear(x, w, bias), widths, w.name);
  }

  async #linear(x: Tensor, w: Weight, bias?: Weight | null): Promise<Tensor> {
    const xa = this.#act(x, 'linear');
    const m = this.#matrix(w, 'linear');
    const k = xa.shape[xa.shape.length - 1]!;
    if (k !== m.k) throw new RuntimeShapeError(`linear: x [${xa.shape.join(', ')}] does not end in K = ${m.k} of ${w.name}`);
    const rows = xa.data.length / k;
    const out = await this.kernels.linear(xa.f32, rows, m, { bias: this.#values(bias, 'linear') });
    return this.#out(out, [...xa.shape.slice(0, -1), m.n]);
  }

  async embedding(ids: Tensor, table: Weight): Promise<Tensor> {
    const ia = this.#act(ids, 'embedding');
    const m = this.#matrix(table, 'embedding');
    return this.#out(await this.kernels.embedding(ia.data, m), [...ia.shape, m.k]);
  }

  async rmsNorm(x: Tensor, w: Weight | null, eps: number): Promise<Tensor> {
    const xa = this.#act(x, 'rmsNorm');
    return this.#out(await this.kernels.rmsNorm(xa.f32, xa.shape[xa.shape.length - 1]!, this.#values(w, 'rmsNorm'), eps), xa.shape);
  }

  async layerNorm(x: Tensor, w: Weight | null, b: Weight | null, eps: number,
    modulation?: { readonly shift: VectorSlice; readonly scale: VectorSlice; readonly rowsPerBatch: number }): Promise<Tensor> {
    const xa = this.#act(x, 'layerNorm');
    const m = modulation && { shift: this.#slice(modulation.shift, 'layerNorm'), scale: this.#slice(modulation.scale, 'layerNorm'), rowsPerBatch: modulation.rowsPerBatch };
    const out = await this.kernels.layerNorm(xa.f32, xa.shape[xa.shape.length - 1]!, this.#values(w, 'layerNorm'), this.#values(b, 'layerNorm'), eps, m);
    return this.#out(out, xa.shape);
  }

  async groupNorm(x: Tensor, w: Weight | null, b: Weight | null, o: { readonly groups: number; readonly eps: number; readonly silu?: boolean }): Promise<Tensor> {
    const xa = this.#act(x, 'groupNorm');
    const out = await this.kernels.groupNorm(xa.f32, xa.shape[0]!, xa.shape[1]!, o.groups, this.#values(w, 'groupNorm'), this.#values(b, 'groupNorm'), o.eps, o.silu ?? false);
    return this.#out(out, xa.shape);
  }

  async activation(kind: ActivationKind, x: Tensor): Promise<Tensor> {
    const xa = this.#act(x, 'activation');
    return this.#out(await this.kernels.activation(kind, xa.f32), xa.shape);
  }

  async gated(kind: ActivationKind, gate: Tensor, up: Tensor): Promise<Tensor> {
    const g = this.#act(gate, 'gated');
    return this.#out(await this.kernels.gatedActivation(kind, g.f32, this.#act(up, 'gated').f32), g.shape);
  }

  async binary(op: BinaryOp, a: Tensor, b: Tensor | Weight): Promise<Tensor> {
    const aa = this.#act(a, op);
    const bData = b instanceof CpuActivation ? b.f32 : this.#values(b as Weight, op)!;
    const shape = broadcastShape(op, aa.shape, b.shape);
    return this.#out(await this.kernels.binary(op, aa.f32, aa.shape, bData, b.shape), shape);
  }

  async scale(x: Tensor, s: number, b = 0): Promise<Tensor> {
    const xa = this.#act(x, 'scale');
    return this.#out(await this.kernels.scale(xa.f32, s, b), xa.shape);
  }

  async softmax(x: Tensor): Promise<Tensor> {
    const xa = this.#act(x, 'softmax');
    const n = xa.shape[xa.shape.length - 1]!;
    return this.#out(await this.kernels.softmax(xa.f32, xa.data.length / n, n), xa.shape);
  }

  async attention(q: Tensor, k: Tensor, v: Tensor, o: AttentionOptions): Promise<Tensor> {
    const qa = this.#act(q, 'attention');
    let kd = this.#act(k, 'attention').f32;
    let vd = this.#act(v, 'attention').f32;
    const [batch, lq] = qa.shape as [number, number];
    let lk = k.shape[1]!;
    const kvHeads = o.kvHeads ?? o.heads;
    if (o.cache) {
      if (!(o.cache instanceof CpuKv)) throw new RuntimeShapeError(`attention: a KV cache on ${o.cache.device} reached cpu`);
      o.cache.append(kd, vd, lk);
      kd = o.cache.filled('k');
      vd = o.cache.filled('v');
      lk = o.cache.length;
    }
    const mask = o.mask ? { data: this.#act(o.mask, 'attention').f32, shape: o.mask.shape } : undefined;
    const out = await this.kernels.attention(qa.f32, kd, vd, {
      batch, lq, lk, heads: o.heads, kvHeads, headDim: o.headDim, scale: o.scale, causal: o.causal, mask,
      relativeBias: o.relativeBias ? this.#act(o.relativeBias, 'attention').f32 : undefined,
    });
    return this.#out(out, qa.shape);
  }

  async rope(x: Tensor, spec: RopeSpec, headDim: number, positionOffset = 0): Promise<Tensor> {
    const xa = this.#act(x, 'rope');
    const [batch, seq] = xa.shape as [number, number];
    const width = xa.shape[xa.shape.length - 1]!;
    const half = spec.rotaryDim / 2;
    const cos = new Float32Array(batch * seq * half);
    const sin = new Float32Array(batch * seq * half);
    for (let b = 0; b < batch; b++) {
      for (let l = 0; l < seq; l++) {
        const row = Math.min(positionOffset + l, spec.rows - 1); // as the GPU kernel: rows past the end use the last
        for (let i = 0; i < half; i++) {
          cos[(b * seq + l) * half + i] = spec.table[(row * half + i) * 2]!;
          sin[(b * seq + l) * half + i] = spec.table[(row * half + i) * 2 + 1]!;
        }
      }
    }
    const out = await this.kernels.ropeCosSin(xa.f32, { batch, seq, heads: width / headDim, headDim, rotaryDim: spec.rotaryDim, mode: spec.mode }, cos, sin);
    return this.#out(out, xa.shape);
  }

  async concat(xs: readonly Tensor[], axis: number): Promise<Tensor> {
    const as = xs.map((x) => this.#act(x, 'concat'));
    const ax = normalizeAxis('concat', axis, as[0]!.shape.length);
    const shape = [...as[0]!.shape];
    shape[ax] = as.reduce((s, t) => s + t.shape[ax]!, 0);
    return this.#out(await this.kernels.concat(as.map((t) => ({ data: t.f32, shape: t.shape })), ax), shape);
  }

  async slice(x: Tensor, axis: number, start: number, length: number): Promise<Tensor> {
    const xa = this.#act(x, 'slice');
    const ax = normalizeAxis('slice', axis, xa.shape.length);
    checkSlice(xa.shape, ax, start, length);
    const outer = elementsOf(xa.shape.slice(0, ax));
    const inner = elementsOf(xa.shape.slice(ax + 1));
    const along = xa.shape[ax]!;
    const out = new Float32Array(outer * length * inner);
    const src = xa.f32;
    for (let o = 0; o < outer; o++) out.set(src.subarray((o * along + start) * inner, (o * along + start + length) * inner), o * length * inner);
    const shape = [...xa.shape];
    shape[ax] = length;
    return this.#out(out, shape);
  }

  async permute(x: Tensor, perm: readonly number[]): Promise<Tensor> {
    const xa = this.#act(x, 'permute');
    return this.#out(await this.kernels.permute(xa.f32, xa.shape, perm), perm.map((p) => xa.shape[p]!));
  }

  async conv2d(x: Tensor, w: Weight, b: Weight | null, o: Conv2dOptions = {}): Promise<Tensor> {
    const xa = this.#act(x, 'conv2d');
    const [, , kh, kw] = w.shape as [number, number, number, number];
    const p = o.padding ?? 0;
    const pad = typeof p === 'number' ? { top: p, bottom: p, left: p, right: p } : { top: p[0], bottom: p[1], left: p[2], right: p[3] };
    const s = o.stride ?? 1;
    const r = await this.kernels.conv2d(xa.f32, xa.shape as [number, number, number, number], this.#matrix(w, 'conv2d'), [kh, kw], { stride: [s, s], pad }, this.#values(b, 'conv2d'));
    return this.#out(r.data, r.shape);
  }

  async upsampleNearest(x: Tensor, factor: number): Promise<Tensor> {
    const xa = this.#act(x, 'upsampleNearest');
    const [n, c, h, w] = xa.shape as [number, number, number, number];
    return this.#out(await this.kernels.upsampleNearest(xa.f32, n * c, h, w, factor, factor), [n, c, h * factor, w * factor]);
  }

  async timestepEmbedding(timesteps: readonly number[], dim: number, o: TimestepOptions = {}): Promise<Tensor> {
    return this.#out(await this.kernels.timestepEmbedding(timesteps, dim, o), [timesteps.length, dim]);
  }

  async modulate(x: Tensor, shift: VectorSlice, scale: VectorSlice, rowsPerBatch: number): Promise<Tensor> {
    const xa = this.#act(x, 'modulate');
    const cols = xa.shape[xa.shape.length - 1]!;
    return this.#out(await this.kernels.adaLNModulate(xa.f32, cols, rowsPerBatch, this.#slice(shift, 'modulate'), this.#slice(scale, 'modulate')), xa.shape);
  }

  async gatedResidual(x: Tensor, y: Tensor, gate: VectorSlice, rowsPerBatch: number): Promise<Tensor> {
    const xa = this.#act(x, 'gatedResidual');
    const cols = xa.shape[xa.shape.length - 1]!;
    return this.#out(await this.kernels.gatedResidual(xa.f32, this.#act(y, 'gatedResidual').f32, cols, rowsPerBatch, this.#slice(gate, 'gatedResidual')), xa.shape);
  }

  async t5Bias(weight: Weight, heads: number, lq: number, lk: number, o: T5BiasOptions): Promise<Tensor> {
    const values = this.#values(weight, 't5Bias')!;
    return this.#out(t5RelativeBiasTable(values, heads, lq, lk, o), [heads, lq + lk - 1]);
  }

  async kvCache(batch: number, capacity: number, kvHeads: number, headDim: number): Promise<KvCacheHandle> {
    return new CpuKv(batch, capacity, kvHeads * headDim);
  }
}
