import { defaultAllocator, type ByteAllocator } from './allocator.ts';
import { DTYPE_BYTES, isDtype, toFloat32, type Dtype } from './dtypes.ts';
import { WeightsFormatError, WeightsNotFoundError } from './errors.ts';
import { fileSource, type ByteSource } from './source.ts';

/** The safetensors reference implementation refuses headers above this; so do we. */
export const MAX_HEADER_BYTES = 100 * 1000 * 1000;

export interface SafetensorsTensor {
  readonly name: string;
  readonly dtype: Dtype;
  readonly shape: readonly number[];
  /** Absolute position of the first byte in the file. */
  readonly offset: number;
  readonly byteLength: number;
}

export interface ReadOptions {
  readonly allocator?: ByteAllocator;
}

/** A safetensors file whose header has been read and validated; tensors are read on demand. */
export class SafetensorsFile {
  readonly name: string;
  readonly metadata: ReadonlyMap<string, string>;
  /** In file order (by offset). */
  readonly tensors: ReadonlyMap<string, SafetensorsTensor>;
  readonly #source: ByteSource;
  readonly #allocator: ByteAllocator;

  private constructor(source: ByteSource, allocator: ByteAllocator, metadata: Map<string, string>, tensors: Map<string, SafetensorsTensor>) {
    this.name = source.name;
    this.#source = source;
    this.#allocator = allocator;
    this.metadata = metadata;
    this.tensors = tensors;
  }

  static async open(source: ByteSource, options: ReadOptions = {}): Promise<SafetensorsFile> {
    const allocator = options.allocator ?? defaultAllocator;
    const { metadata, tensors } = await readHeader(source, allocator);
    return new SafetensorsFile(source, allocator, metadata, tensors);
  }

  tensor(name: string): SafetensorsTensor {
    const info = this.tensors.get(name);
    if (!info) throw new WeightsNotFoundError(this.name, `tensor "${name}"`, [...this.tensors.keys()]);
    return info;
  }

  /** The tensor's bytes, exactly as stored (little-endian). */
  async read(name: string): Promise<Uint8Array> {
    const info = this.tensor(name);
    const bytes = this.#allocator.allocate(info.byteLength, name);
    await this.#source.readInto(info.offset, bytes);
    return bytes;
  }

  /** The tensor's stored bytes into `target` (exactly its byteLength), with no allocation. */
  async readRawInto(name: string, target: Uint8Array): Promise<void> {
    const info = this.tensor(name);
    if (target.byteLength !== info.byteLength) throw new RangeError(`${this.name}: ${name} has ${info.byteLength} bytes, the target ${target.byteLength}`);
    await this.#source.readInto(info.offset, target);
  }

  /** The same as read(): the name every weights file shares (see TensorFile). */
  readRaw(name: string): Promise<Uint8Array> {
    return this.read(name);
  }

  async readF32(name: string): Promise<Float32Array> {
    return toFloat32(this.tensor(name).dtype, await this.read(name));
  }

  async close(): Promise<void> {
    await this.#source.close();
  }
}

export async function openSafetensors(path: string, options: ReadOptions = {}): Promise<SafetensorsFile> {
  const source = await fileSource(path);
  try {
    return await SafetensorsFile.open(source, options);
  } catch (error) {
    await source.close();
    throw error;
  }
}

// ---- header validation ----------------------------------------------------------------

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
const isIndex = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;

async function readHeader(source: ByteSource, allocator: ByteAllocator) {
  const file = source.name;
  const fail = (problem: string, cause?: unknown) => new WeightsFormatError(file, problem, { cause });
  if (source.size < 8) throw fail(`${source.size} bytes is too short for a safetensors file (the header length alone takes 8)`);
  const prefix = allocator.allocate(8, 'header length');
  await source.readInto(0, prefix);
  const declared = new DataView(prefix.buffer, prefix.byteOffset, 8).getBigUint64(0, true);
  if (declared > BigInt(MAX_HEADER_BYTES)) throw fail(`header length ${declared} is over the ${MAX_HEADER_BYTES}-byte limit`);
  const headerLength = Number(declared);
  if (headerLength > source.size - 8) {
    throw fail(`header length ${headerLength} runs past the end of the file (${source.size} bytes)`);
  }
  const headerBytes = allocator.allocate(headerLength, 'header');
  await source.readInto(8, headerBytes);
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(headerBytes);
  } catch (cause) {
    throw fail('header is not valid UTF-8', cause);
  }
  let parsed: unknown;
  try {
    // JSON.parse makes "__proto__" an ordinary own key, and nothing below copies keys into
    // plain objects: tensors and metadata go into Maps.
    parsed = JSON.parse(text);
  } catch (cause) {
    throw fail(`header is not valid JSON (${(cause as Error).message})`, cause);
  }
  if (!isObject(parsed)) throw fail(`header is not a JSON object (it is ${Array.isArray(parsed) ? 'an array' : parsed === null ? 'null' : typeof parsed})`);

  const dataStart = 8 + headerLength;
  const dataSize = source.size - dataStart;
  const metadata = new Map<string, string>();
  const entries: SafetensorsTensor[] = [];
  for (const [key, value] of Object.entries(parsed)) {
    if (key === '__metadata__') {
      if (!isObject(value)) throw fail('__metadata__ is not an object');
      for (const [k, v] of Object.entries(value)) {
        if (typeof v !== 'string') throw fail(`__metadata__ value of "${k}" is not a string`);
        metadata.set(k, v);
      }
      continue;
    }
    entries.push(validateEntry(key, value, dataStart, dataSize, fail));
  }
  entries.sort((a, b) => a.offset - b.offset);
  // The data region must be tiled exactly: no gaps, no overlaps, nothing after the last tensor.
  let expected = dataStart;
  let previous = '(start of data)';
  for (const entry of entries) {
    if (entry.offset < expected) throw fail(`tensor "${entry.name}" overlaps "${previous}" (starts at data offset ${entry.offset - dataStart}, before ${expected - dataStart})`);
    if (entry.offset > expected) throw fail(`gap of ${entry.offset - expected} bytes before tensor "${entry.name}" (data offset ${expected - dataStart})`);
    expected = entry.offset + entry.byteLength;
    previous = entry.name;
  }
  if (expected !== source.size) {
    throw fail(`${source.size - expected} bytes after the last tensor: the data region is ${dataSize} bytes but tensors cover ${expected - dataStart}`);
  }
  return { metadata, tensors: new Map(entries.map((e) => [e.name, e])) };
}

function validateEntry(name: string, value: unknown, dataStart: number, dataSize: number,
  fail: (problem: string) => WeightsFormatError): SafetensorsTensor {
  const where = `tensor "${name}"`;
  if (!isObject(value)) throw fail(`${where} is not an object`);
  const { dtype, shape, data_offsets: offsets } = value;
  if (!isDtype(dtype)) throw fail(`${where} has unknown dtype ${JSON.stringify(dtype)} (known: ${Object.keys(DTYPE_BYTES).join(', ')})`);
  if (!Array.isArray(shape)) throw fail(`${where} has no shape array`);
  for (const d of shape) {
    if (!isIndex(d)) throw fail(`${where} has shape ${JSON.stringify(shape)}: dimensions must be non-negative integers`);
  }
  if (!Array.isArray(offsets) || offsets.length !== 2 || !isIndex(offsets[0]) || !isIndex(offsets[1])) {
    throw fail(`${where} has data_offsets ${JSON.stringify(offsets)}: expected [begin, end], non-negative integers`);
  }
  const [begin, end] = offsets as [number, number];
  if (begin > end) throw fail(`${where} has data_offsets [${begin}, ${end}]: begin is after end`);
  if (end > dataSize) throw fail(`${where} ends at data offset ${end}, past the end of the data region (${dataSize} bytes)`);
  const elements = (shape as number[]).reduce((a, b) => a * b, 1);
  const byteLength = elements * DTYPE_BYTES[dtype];
  if (!Number.isSafeInteger(byteLength) || byteLength !== end - begin) {
    throw fail(`${where} is ${dtype} ${JSON.stringify(shape)}, which is ${byteLength} bytes, but data_offsets [${begin}, ${end}] hold ${end - begin}`);
  }
  return { name, dtype, shape: shape as number[], offset: dataStart + begin, byteLength };
}
