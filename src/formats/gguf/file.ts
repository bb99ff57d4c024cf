import { defaultAllocator, type ByteAllocator } from '../allocator.ts';
import { WeightsFormatError, WeightsNotFoundError } from '../errors.ts';
import { fileSource, type ByteSource } from '../source.ts';
import { Cursor } from './cursor.ts';
import { dequantize } from './dequantize.ts';
import { readHeader, type GgufTensorInfo } from './header.ts';
import type { GgufValue, GgufValueTypeInfo } from './metadata.ts';
import { ggmlTypeById, GGML_TYPES } from './types.ts';

export interface GgufOpenOptions {
  /** Where every buffer filled from the file comes from (default: plain Uint8Arrays). */
  readonly allocator?: ByteAllocator;
}

/**
 * A GGUF file whose header has been read and validated; tensors are read on demand, each
 * by its own byte range, so a model never has to fit in memory as a whole.
 */
export class GgufFile {
  readonly name: string;
  /** 2 or 3. */
  readonly version: number;
  /** Every key-value pair, in file order. A Map, so keys like `__proto__` are just keys. */
  readonly metadata: ReadonlyMap<string, GgufValue>;
  /** Each metadata value's stored type (u32 vs u64, f32 vs f64, arrays' item types). */
  readonly metadataTypes: ReadonlyMap<string, GgufValueTypeInfo>;
  /** `general.alignment`, or 32. */
  readonly alignment: number;
  /** Absolute offset of the data section (tensor offsets in the file are relative to it). */
  readonly dataOffset: number;
  /** In header order. */
  readonly tensors: ReadonlyMap<string, GgufTensorInfo>;
  readonly #source: ByteSource;
  readonly #allocator: ByteAllocator;

  private constructor(source: ByteSource, allocator: ByteAllocator, header: Awaited<ReturnType<typeof readHeader>>) {
    this.name = source.name;
    this.#source = source;
    this.#allocator = allocator;
    this.version = header.version;
    this.metadata = header.metadata;
    this.metadataTypes = header.metadataTypes;
    this.alignment = header.alignment;
    this.dataOffset = header.dataOffset;
    this.tensors = header.tensors;
  }

  /** Reads and validates the header; the source stays open until `close()`. */
  static async open(source: ByteSource, options: GgufOpenOptions = {}): Promise<GgufFile> {
    const allocator = options.allocator ?? defaultAllocator;
    const header = await readHeader(new Cursor(source, allocator));
    return new GgufFile(source, allocator, header);
  }

  tensor(name: string): GgufTensorInfo {
    const info = this.tensors.get(name);
    if (!info) throw new WeightsNotFoundError(this.name, `tensor "${name}"`, [...this.tensors.keys()]);
    return info;
  }

  /** The tensor's bytes exactly as stored (quantized blocks for quantized types). */
  async readRaw(name: string): Promise<Uint8Array> {
    const info = this.tensor(name);
    const bytes = this.#allocator.allocate(info.byteLength, name);
    await this.#source.readInto(info.offset, bytes);
    return bytes;
  }

  /** The tensor as float32 in ggml order (ne0 fastest = row-major over `shape`), dequantized on the CPU. */
  async readF32(name: string): Promise<Float32Array> {
    const info = this.tensor(name);
    const type = ggmlTypeById(info.type)!;
    if (!type.dequantizable) {
      const supported = GGML_TYPES.filter((t) => t.dequantizable).map((t) => t.name).join(', ');
      throw new WeightsFormatError(this.name, `tensor "${name}" is ${type.name}, which this reader cannot dequantize`, {
        hint: `supported types: ${supported}; readRaw() still returns its bytes`,
      });
    }
    return dequantize(type, await this.readRaw(name), info.elements);
  }

  async close(): Promise<void> {
    await this.#source.close();
  }
}

/** Opens a GGUF file on disk (Node, Deno); the file is closed again if its header is bad. */
export async function openGguf(path: string, options: GgufOpenOptions = {}): Promise<GgufFile> {
  const source = await fileSource(path);
  try {
    return await GgufFile.open(source, options);
  } catch (error) {
    await source.close();
    throw error;
  }
}
