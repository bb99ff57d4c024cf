import type { Backend, KvCacheHandle, Tensor, Weight } from '../runtime/backend.ts';
import type { WeightSet } from '../formats/weights.ts';
import type { BlockMap, NameScheme } from './blocks.ts';

/**
 * How a model family computes: its config, the canonical names of its tensors, and its
 * forward math as a list of steps over named activations. Each step belongs to one block of
 * the family's block map (blocks.ts) and runs on the device the plan gives that block; the
 * scheduler moves the named activations a step reads to that device (a plan is a graph: a
 * step may read any earlier step's output, e.g. UNet skips, T5's position bias, FLUX's
 * conditioning vector).
 */

/** An input or output on the host, under the reference implementation's argument name. */
export interface HostTensor {
  readonly data: Float32Array | Int32Array;
  readonly shape: readonly number[];
}

/**
 * A canonical tensor cut from a stored one: rows rowOf(0..rows−1) of `source` (the first
 * dimension; a 1-D tensor's rows are its elements). BFL's fused qkv becomes three, GGUF's
 * permuted q/k rows are put back, BFL's final-norm halves are swapped.
 */
export interface CanonicalTensor {
  readonly source: string;
  readonly rows?: { readonly count: number; readonly rowOf: (i: number) => number };
  /** A 2-D source stored [in, out] (GPT-2's Conv1D): transposed once at load (plain float dtypes). */
  readonly transpose?: boolean;
  /**
   * The tensor is these tensors stacked along their first dimension, in order (same dtype and
   * trailing shape): projections that read the same input, fused at load so one kernel runs
   * them (see fuseRows). `source` is the first part's.
   */
  readonly parts?: readonly CanonicalTensor[];
}

export interface StepContext {
  readonly b: Backend;
  /** A weight of this step's block (or a tied tensor it reads), by canonical name. */
  w(name: string): Weight;
  /** Whether the block has this canonical tensor (optional biases, variants). */
  has(name: string): boolean;
  /** An activation set by an earlier step (or an input), on this step's device. */
  get(name: string): Promise<Tensor>;
  /** Whether an activation or input of that name exists. */
  exists(name: string): boolean;
  set(name: string, t: Tensor): void;
  /** An input's host values (timesteps, ids that decide positions). */
  input(name: string): HostTensor;
  /** Tokens already in the KV caches (0 without a generate session). */
  readonly position: number;
  /** This layer's KV cache on this step's device in a generate session; undefined otherwise. */
  kv(key: string, batch: number, kvHeads: number, headDim: number): Promise<KvCacheHandle | undefined>;
}

export interface Step {
  /** The block whose weights it uses and whose device runs it; null: no weights, the compute device. */
  readonly block: string | null;
  run(c: StepContext): Promise<void>;
}

export interface EntryDefinition<C> {
  /** Inputs it needs, by the reference's names. */
  readonly inputs: readonly string[];
  readonly optionalInputs?: readonly string[];
  /** Outputs it writes, by the reference's names. */
  outputs(config: C, inputs: ReadonlyMap<string, HostTensor>): readonly string[];
  steps(config: C, inputs: ReadonlyMap<string, HostTensor>): readonly Step[];
}

export interface ModelDefinition<C = unknown> {
  /** The block map family it runs (blocks.ts). */
  readonly family: string;
  configure(weights: WeightSet, blockMap: BlockMap): C;
  /** canonical name → how it is cut from the checkpoint's tensors (identity: omit the name). */
  canonical(scheme: NameScheme, weights: WeightSet, config: C): ReadonlyMap<string, CanonicalTensor>;
  /** 'forward' for most; the VAE: 'encode' and 'decode'. */
  readonly entries: Readonly<Record<string, EntryDefinition<C>>>;
  /** Causal LMs: what generate needs. */
  readonly causalLM?: {
    readonly logits: string;
    readonly maxPositions: (config: C) => number;
    /** Token ids run from 0 to vocab − 1. */
    readonly vocab: (config: C) => number;
  };
}
