import { WeightsNotFoundError } from './errors.ts';
import type { SafetensorsFile } from './safetensors.ts';

/** One tensor of a model, wherever it is stored. */
export interface WeightTensor {
  readonly name: string;
  /** A safetensors dtype (F32, BF16, ...) or a ggml type name (Q4_K, ...). */
  readonly dtype: string;
  /** Row-major, outermost dimension first. */
  readonly shape: readonly number[];
  /** Bytes as stored (quantized blocks for GGUF). */
  readonly byteLength: number;
  /** The file that holds it, for messages. */
  readonly file: string;
  readRaw(): Promise<Uint8Array>;
  /** The stored bytes read straight into `target` (byteLength bytes), e.g. a mapped GPU buffer: no copy on the host. */
  readRawInto?(target: Uint8Array): Promise<void>;
  /** Converted (or dequantized) to float32 on the CPU. */
  readF32(): Promise<Float32Array>;
}

export type WeightsFormat = 'safetensors' | 'gguf';

/**
 * A model's weights: a single file, a sharded checkpoint, a Hugging Face folder, or one
 * component of a ComfyUI checkpoint. Everything downstream (block maps, the planner, the
 * loaders) sees only this.
 */
export class WeightSet {
  readonly name: string;
  readonly format: WeightsFormat;
  /** config.json beside the weights, when there is one. */
  readonly config: Readonly<Record<string, unknown>> | null;
  readonly metadata: ReadonlyMap<string, unknown>;
  readonly tensors: ReadonlyMap<string, WeightTensor>;
  readonly #close: () => Promise<void>;

  constructor(init: {
    name: string;
    format: WeightsFormat;
    tensors: ReadonlyMap<string, WeightTensor>;
    config?: Readonly<Record<string, unknown>> | null;
    metadata?: ReadonlyMap<string, unknown>;
    close?: () => Promise<void>;
  }) {
    this.name = init.name;
    this.format = init.format;
    this.tensors = init.tensors;
    this.config = init.config ?? null;
    this.metadata = init.metadata ?? new Map();
    this.#close = init.close ?? (async () => {});
  }

  tensor(name: string): WeightTensor {
    const t = this.tensors.get(name);
    if (!t) throw new WeightsNotFoundError(this.name, `tensor "${name}"`, [...this.tensors.keys()]);
    return t;
  }

  readRaw(name: string): Promise<Uint8Array> {
    return this.tensor(name).readRaw();
  }

  readF32(name: string): Promise<Float32Array> {
    return this.tensor(name).readF32();
  }

  /** Total stored bytes. */
  get byteLength(): number {
    let n = 0;
    for (const t of this.tensors.values()) n += t.byteLength;
    return n;
  }

  /**
   * The tensors whose names `rename` maps to a new name (null drops a tensor), sharing this
   * set's open files: closing the view closes nothing; close the set it came from.
   */
  view(name: string, rename: (tensorName: string) => string | null, config: Readonly<Record<string, unknown>> | null = this.config): WeightSet {
    const tensors = new Map<string, WeightTensor>();
    for (const [key, tensor] of this.tensors) {
      const renamed = rename(key);
      if (renamed !== null) tensors.set(renamed, { ...tensor, name: renamed, readRaw: tensor.readRaw, readF32: tensor.readF32 });
    }
    return new WeightSet({ name, format: this.format, tensors, config, metadata: this.metadata });
  }

  async close(): Promise<void> {
    await this.#close();
  }
}

/** What a weights file offers per tensor: raw bytes and f32, by name. */
export interface TensorFile {
  readonly name: string;
  readRaw(tensor: string): Promise<Uint8Array>;
  readRawInto?(tensor: string, target: Uint8Array): Promise<void>;
  readF32(tensor: string): Promise<Float32Array>;
}

/** The WeightTensors of one file, from its header's entries. */
export function tensorsOf(file: TensorFile,
  infos: Iterable<{ readonly name: string; readonly shape: readonly number[]; readonly byteLength: number; readonly dtype: string }>): Map<string, WeightTensor> {
  const tensors = new Map<string, WeightTensor>();
  for (const info of infos) {
    tensors.set(info.name, {
      name: info.name,
      dtype: info.dtype,
      shape: info.shape,
      byteLength: info.byteLength,
      file: file.name,
      readRaw: () => file.readRaw(info.name),
      readRawInto: file.readRawInto ? (target: Uint8Array) => file.readRawInto!(info.name, target) : undefined,
      readF32: () => file.readF32(info.name),
    });
  }
  return tensors;
}

export function safetensorsTensors(file: SafetensorsFile): Map<string, WeightTensor> {
  return tensorsOf(file, file.tensors.values());
}

export function fromSafetensors(file: SafetensorsFile, config: Readonly<Record<string, unknown>> | null = null): WeightSet {
  return new WeightSet({
    name: file.name, format: 'safetensors', tensors: safetensorsTensors(file), config,
    metadata: file.metadata, close: () => file.close(),
  });
}
