/**
 * The ops a model's math is written in, implemented once per kind of device: WGSL kernels on a
 * GPU (gpu-backend.ts) and WebAssembly kernels on the CPU (cpu-backend.ts). Models see only
 * this interface; the scheduler decides which backend runs which block.
 *
 * Every op allocates its output and returns it. Tensors are activations (f32, or i32 ids);
 * weights are the model's tensors as loaded onto the device (in their stored dtype where the
 * kernels read it, e.g. GGUF blocks for linear weights).
 */
import { RuntimeShapeError } from './shapes.ts';

/** An activation on one device. Row-major; `shape` may be a view (reshape) of shared storage. */
export interface Tensor {
  readonly device: string;
  readonly shape: readonly number[];
  readonly dtype: 'f32' | 'i32';
}

/** A model tensor resident on one device, under its canonical (transformers/diffusers) name. */
export interface Weight {
  readonly device: string;
  readonly name: string;
  readonly shape: readonly number[];
}

/** Per-batch vector b at tensor[offset + b·stride + c] (AdaLN's chunks of one modulation tensor). */
export interface VectorSlice {
  readonly tensor: Tensor;
  readonly offset?: number;
  readonly stride?: number;
}

export type ActivationKind = 'gelu' | 'gelu_tanh' | 'quick_gelu' | 'silu';
export type BinaryOp = 'add' | 'sub' | 'mul' | 'div';

/**
 * Rotary embedding: a host table of cos and sin per table row ([rows, rotaryDim/2, 2]), built by
 * the model (ropeTableValues for Llama, fluxRopeTableValues for FLUX). Token l of a call uses
 * row positionOffset + l. Backends upload a table once per identity and keep it.
 */
export interface RopeSpec {
  readonly mode: 'half' | 'interleaved';
  readonly rotaryDim: number;
  readonly rows: number;
  readonly table: Float32Array;
}

/** A KV cache of one attention layer: [B, capacity, kvHeads, headDim] keys and values, `length` filled. */
export interface KvCacheHandle {
  readonly device: string;
  readonly capacity: number;
  readonly length: number;
}

export interface AttentionOptions {
  readonly heads: number;
  readonly kvHeads?: number;
  readonly headDim: number;
  /** Default 1/√headDim (T5: 1). */
  readonly scale?: number;
  /** Bottom-right aligned (decoding with a cache sees every cached key). */
  readonly causal?: boolean;
  /** Additive f32 mask broadcast to [B, H, Lq, Lk]. */
  readonly mask?: Tensor;
  /** [H, Lq + Lk − 1] relative bias (t5Bias). */
  readonly relativeBias?: Tensor;
  /** k and v are appended to the cache first; attention then reads every cached row. */
  readonly cache?: KvCacheHandle;
}

export interface Conv2dOptions {
  readonly stride?: number;
  /** Symmetric padding, or the VAE downsampler's asymmetric [top, bottom, left, right]. */
  readonly padding?: number | readonly [number, number, number, number];
}

export interface TimestepOptions {
  readonly flipSinToCos?: boolean;
  readonly downscaleFreqShift?: number;
  readonly scale?: number;
  readonly maxPeriod?: number;
  readonly timestepMultiplier?: number;
}

export interface T5BiasOptions {
  readonly numBuckets: number;
  readonly maxDistance: number;
  readonly bidirectional: boolean;
}

export interface Backend {
  /** 'gpu:N' or 'cpu'. */
  readonly device: string;

  upload(data: Float32Array | Int32Array, shape: readonly number[]): Promise<Tensor>;
  /** f32 values (i32 tensors converted). Waits for the work recorded so far. */
  download(t: Tensor): Promise<Float32Array>;
  /** Same storage, another shape of the same element count. */
  reshape(t: Tensor, shape: readonly number[]): Tensor;

  /** x · wᵀ + bias (+ residual, shaped like the output: in the same kernel where the device can). */
  linear(x: Tensor, w: Weight, bias?: Weight | null, residual?: Tensor | null): Promise<Tensor>;
  /**
   * A linear whose weight stacks several projections (rows N0, N1, …): returns one output per
   * projection ([..., Ni]), from one kernel where the device can (a fused QKV or gate/up).
   */
  linearParts(x: Tensor, w: Weight, bias: Weight | null, widths: readonly number[]): Promise<Tensor[]>;
  /** ids (i32, any shape) → [...ids.shape, dim]. */
  embedding(ids: Tensor, table: Weight): Promise<Tensor>;
  rmsNorm(x: Tensor, w: Weight | null, eps: number): Promise<Tensor>;
  /** Over the last dim; with `modulation`, x̂·(1 + scale) + shift per batch (FLUX's AdaLN). */
  layerNorm(x: Tensor, w: Weight | null, b: Weight | null, eps: number,
    modulation?: { readonly shift: VectorSlice; readonly scale: VectorSlice; readonly rowsPerBatch: number }): Promise<Tensor>;
  /** NCHW; `silu` fuses the SiLU that follows every GroupNorm in a resnet block. */
  groupNorm(x: Tensor, w: Weight | null, b: Weight | null, o: { readonly groups: number; readonly eps: number; readonly silu?: boolean }): Promise<Tensor>;
  activation(kind: ActivationKind, x: Tensor): Promise<Tensor>;
  /** act(gate) · up. */
  gated(kind: ActivationKind, gate: Tensor, up: Tensor): Promise<Tensor>;
  /** NumPy broadcasting; b may be a Weight (a bias, a learned scale). */
  binary(op: BinaryOp, a: Tensor, b: Tensor | Weight): Promise<Tensor>;
  /** x·s + b. */
  scale(x: Tensor, s: number, b?: number): Promise<Tensor>;
  /** Softmax over the last dim. */
  softmax(x: Tensor): Promise<Tensor>;
  /** q [B, Lq, H·D], k and v [B, Lk, Hkv·D] → [B, Lq, H·D]. */
  attention(q: Tensor, k: Tensor, v: Tensor, o: AttentionOptions): Promise<Tensor>;
  /** x [B, L, H·D] (heads from headDim) → rotated copy; token l uses table row positionOffset + l. */
  rope(x: Tensor, spec: RopeSpec, headDim: number, positionOffset?: number): Promise<Tensor>;
  concat(xs: readonly Tensor[], axis: number): Promise<Tensor>;
  slice(x: Tensor, axis: number, start: number, length: number): Promise<Tensor>;
  permute(x: Tensor, perm: readonly number[]): Promise<Tensor>;
  /** NCHW x, weight [Cout, Cin, KH, KW]. */
  conv2d(x: Tensor, w: Weight, b: Weight | null, o?: Conv2dOptions): Promise<Tensor>;
  /** Nearest ×factor on the last two dims. */
  upsampleNearest(x: Tensor, factor: number): Promise<Tensor>;
  /** [timesteps.length, dim], as diffusers' get_timestep_embedding. */
  timestepEmbedding(timesteps: readonly number[], dim: number, o?: TimestepOptions): Promise<Tensor>;
  /** x·(1 + scale) + shift (rows of x per batch of the vectors: rowsPerBatch). */
  modulate(x: Tensor, shift: VectorSlice, scale: VectorSlice, rowsPerBatch: number): Promise<Tensor>;
  /** x + gate·y. */
  gatedResidual(x: Tensor, y: Tensor, gate: VectorSlice, rowsPerBatch: number): Promise<Tensor>;
  /** relative_attention_bias.weight [numBuckets, H] → attention's relativeBias [H, Lq + Lk − 1]. */
  t5Bias(weight: Weight, heads: number, lq: number, lk: number, o: T5BiasOptions): Promise<Tensor>;
  kvCache(batch: number, capacity: number, kvHeads: number, headDim: number): Promise<KvCacheHandle>;
}

/** A tensor cut along its last axis into parts of these widths (the unfused path of linearParts). */
export async function splitLastAxis(b: Backend, x: Tensor, widths: readonly number[], what: string): Promise<Tensor[]> {
  const n = x.shape[x.shape.length - 1]!;
  if (widths.reduce((a, w) => a + w, 0) !== n) throw new RuntimeShapeError(`linearParts: widths ${widths.join(' + ')} do not add up to ${what}'s ${n} rows`);
  const parts: Tensor[] = [];
  let at = 0;
  for (const width of widths) {
    parts.push(await b.slice(x, -1, at, width));
    at += width;
  }
  return parts;
}
