import { WeightsFormatError } from '../errors.ts';
import type { Cursor } from './cursor.ts';
import {
  GgufValueType, MIN_KV_BYTES, readString, readValue, readValueType, valueTypeName,
  type GgufValue, type GgufValueTypeInfo,
} from './metadata.ts';
import { ggmlByteLength, ggmlTypeById } from './types.ts';

/** One tensor's entry in the header, with everything derived from it checked. */
export interface GgufTensorInfo {
  readonly name: string;
  /** ggml type id. */
  readonly type: number;
  /** ggml's name for it ("Q4_K", "F32", ...). */
  readonly typeName: string;
  /** ggml order: ne0 (the contiguous dimension) first. */
  readonly dims: readonly number[];
  /** Row-major, outermost first: `dims` reversed. */
  readonly shape: readonly number[];
  readonly elements: number;
  /** Absolute position of the first byte in the file. */
  readonly offset: number;
  readonly byteLength: number;
}

export interface GgufHeader {
  readonly version: number;
  readonly metadata: Map<string, GgufValue>;
  readonly metadataTypes: Map<string, GgufValueTypeInfo>;
  readonly alignment: number;
  readonly dataOffset: number;
  /** In header order. */
  readonly tensors: Map<string, GgufTensorInfo>;
}

/** "GGUF" as a little-endian u32. */
const MAGIC = 0x46554747;
/** magic, version, tensor count, key count. */
const FIXED_HEADER_BYTES = 4 + 4 + 8 + 8;
/** The fewest bytes a tensor info takes: name length, n_dims, one dim, type, offset. */
export const MIN_TENSOR_INFO_BYTES = 8 + 4 + 8 + 4 + 8;
/** ggml's GGML_MAX_DIMS. */
export const MAX_DIMS = 4;
export const DEFAULT_ALIGNMENT = 32;
const ALIGNMENT_KEY = 'general.alignment';

const hex = (bytes: Uint8Array): string => [...bytes].map((b) => b.toString(16).padStart(2, '0')).join(' ');

/**
 * Reads and validates a GGUF (v2 or v3, little-endian) header: every count and length is
 * proven to fit in the file before it is looped over or allocated, and the tensor table
 * is checked as a whole (types, sizes, alignment, bounds, overlaps) before it is returned.
 */
export async function readHeader(cursor: Cursor): Promise<GgufHeader> {
  const file = cursor.name;
  const fail = (problem: string, hint?: string): never => {
    throw new WeightsFormatError(file, problem, hint === undefined ? {} : { hint });
  };

  if (cursor.size < 8) fail(`${cursor.size} bytes is too short for a GGUF file`);
  await cursor.fill(8, 'the GGUF magic and version');
  const magic = cursor.bytes(4);
  if (new DataView(magic.buffer, magic.byteOffset, 4).getUint32(0, true) !== MAGIC) {
    fail(`not a GGUF file: the magic is ${hex(magic)}, expected 47 47 55 46 ("GGUF")`);
  }
  const version = cursor.u32();
  if (version === 1) {
    fail('GGUF version 1 is not supported (only versions 2 and 3)', 'convert the model again with a current llama.cpp (convert_hf_to_gguf.py)');
  }
  if (version === 0x02000000 || version === 0x03000000) {
    fail('big-endian GGUF files are not supported', 'convert the model again for a little-endian machine');
  }
  if (version !== 2 && version !== 3) fail(`unsupported GGUF version ${version} (only versions 2 and 3)`);

  await cursor.fill(FIXED_HEADER_BYTES - 8, 'the tensor and metadata counts');
  const tensorCount = cursor.u64();
  const kvCount = cursor.u64();
  // Bound both counts by what the file can hold before looping over either.
  const left = BigInt(cursor.remaining);
  if (kvCount * BigInt(MIN_KV_BYTES) > left) {
    fail(`metadata count ${kvCount} is more than the file can hold (each entry takes at least ${MIN_KV_BYTES} bytes, ${left} bytes follow the counts)`);
  }
  if (tensorCount * BigInt(MIN_TENSOR_INFO_BYTES) > left) {
    fail(`tensor count ${tensorCount} is more than the file can hold (each tensor info takes at least ${MIN_TENSOR_INFO_BYTES} bytes, ${left} bytes follow the counts)`);
  }
  if ((kvCount * BigInt(MIN_KV_BYTES)) + (tensorCount * BigInt(MIN_TENSOR_INFO_BYTES)) > left) {
    fail(`${kvCount} metadata entries and ${tensorCount} tensor infos are more than the file can hold (${left} bytes follow the counts)`);
  }

  // ---- metadata ----
  const metadata = new Map<string, GgufValue>();
  const metadataTypes = new Map<string, GgufValueTypeInfo>();
  for (let i = 0, n = Number(kvCount); i < n; i++) {
    const keyAt = cursor.pos;
    const key = await readString(cursor, true, `metadata key #${i}`);
    if (metadata.has(key)) fail(`metadata key "${key}" appears twice (the second at offset ${keyAt})`);
    const what = `metadata "${key}"`;
    const type = await readValueType(cursor, what);
    const { value, type: typeInfo } = await readValue(cursor, type, what);
    metadata.set(key, value);
    metadataTypes.set(key, typeInfo);
  }

  const alignment = readAlignment(metadata, metadataTypes, fail);

  // ---- tensor infos ----
  const n = Number(tensorCount);
  // Re-check with the real position: the metadata may have used more than its minimum.
  if (n * MIN_TENSOR_INFO_BYTES > cursor.remaining) {
    fail(`tensor count ${n} is more than the file can hold (each tensor info takes at least ${MIN_TENSOR_INFO_BYTES} bytes, ${cursor.remaining} bytes follow the metadata)`);
  }
  interface Raw { name: string; type: number; typeName: string; dims: number[]; elements: number; relative: bigint; byteLength: number }
  const raws: Raw[] = [];
  const names = new Set<string>();
  for (let i = 0; i < n; i++) {
    const nameAt = cursor.pos;
    const name = await readString(cursor, true, `the name of tensor #${i}`);
    if (names.has(name)) fail(`tensor name "${name}" appears twice (the second at offset ${nameAt})`);
    names.add(name);
    const what = `tensor "${name}"`;
    if (!cursor.has(4)) await cursor.fill(4, `${what}'s dimension count`);
    const nDims = cursor.u32();
    if (nDims < 1 || nDims > MAX_DIMS) fail(`${what}: ${nDims} dimensions (GGUF tensors have 1 to ${MAX_DIMS})`);
    await cursor.fill(8 * nDims + 4 + 8, `${what}'s dimensions, type and offset`);
    const dims: number[] = [];
    let elements = 1n;
    for (let d = 0; d < nDims; d++) {
      const dim = cursor.u64();
      if (dim < 1n) fail(`${what}: dimension ${d} is 0 (every dimension must be at least 1)`);
      elements *= dim;
      // Checked per step, so a product of huge u64s never grows past 2^106.
      if (elements > BigInt(Number.MAX_SAFE_INTEGER)) {
        fail(`${what}: ${[...dims, dim].join(' × ')}${d + 1 < nDims ? ' × …' : ''} elements is more than can be addressed`);
      }
      dims.push(Number(dim));
    }
    const type = cursor.u32();
    const relative = cursor.u64();
    const info = ggmlTypeById(type);
    if (!info) fail(`${what}: unknown ggml type ${type}`);
    const ggml = info!;
    if (dims[0]! % ggml.blockSize !== 0) {
      fail(`${what}: ne0 = ${dims[0]} is not a multiple of ${ggml.name}'s block size ${ggml.blockSize}`);
    }
    const count = Number(elements);
    const byteLength = ggmlByteLength(ggml, count);
    // A tensor larger than the file can never be read; this also keeps byteLength exact.
    if (byteLength > cursor.size) {
      fail(`${what}: ${dims.join(' × ')} ${ggml.name} is ${byteLength} bytes, more than the whole file (${cursor.size} bytes)`);
    }
    if (relative % BigInt(alignment) !== 0n) {
      fail(`${what}: offset ${relative} is not a multiple of the alignment ${alignment}`);
    }
    raws.push({ name, type, typeName: ggml.name, dims, elements: count, relative, byteLength });
  }

  // The data section starts at the first multiple of the alignment after the tensor infos.
  const dataOffset = Math.ceil(cursor.pos / alignment) * alignment;
  const tensors = new Map<string, GgufTensorInfo>();
  for (const raw of raws) {
    const start = BigInt(dataOffset) + raw.relative;
    const end = start + BigInt(raw.byteLength);
    if (end > BigInt(cursor.size)) {
      fail(`tensor "${raw.name}": data [${start}, ${end}) runs past the end of the file (${cursor.size} bytes)`);
    }
    tensors.set(raw.name, Object.freeze({
      name: raw.name,
      type: raw.type,
      typeName: raw.typeName,
      dims: Object.freeze(raw.dims),
      shape: Object.freeze([...raw.dims].reverse()),
      elements: raw.elements,
      offset: Number(start),
      byteLength: raw.byteLength,
    }));
  }
  checkOverlaps([...tensors.values()], fail);

  return { version, metadata, metadataTypes, alignment, dataOffset, tensors };
}

/** `general.alignment`, when present, must be a u32 power of two (ggml asserts the same). */
function readAlignment(
  metadata: ReadonlyMap<string, GgufValue>,
  types: ReadonlyMap<string, GgufValueTypeInfo>,
  fail: (problem: string) => never,
): number {
  if (!metadata.has(ALIGNMENT_KEY)) return DEFAULT_ALIGNMENT;
  const type = types.get(ALIGNMENT_KEY)!.type;
  const value = metadata.get(ALIGNMENT_KEY);
  if (type !== GgufValueType.UINT32) {
    return fail(`${ALIGNMENT_KEY} must be a u32 power of two, not a ${valueTypeName(type)}`);
  }
  const n = value as number;
  if (n === 0 || (n & (n - 1)) !== 0) fail(`${ALIGNMENT_KEY} must be a u32 power of two, not ${n}`);
  return n;
}

/** Sorted by offset, each tensor must end before the next begins. */
function checkOverlaps(tensors: GgufTensorInfo[], fail: (problem: string) => never): void {
  const sorted = [...tensors].sort((a, b) => a.offset - b.offset);
  for (let i = 1; i < sorted.length; i++) {
    const a = sorted[i - 1]!;
    const b = sorted[i]!;
    if (b.offset < a.offset + a.byteLength) {
      fail(`tensors "${a.name}" [${a.offset}, ${a.offset + a.byteLength}) and "${b.name}" [${b.offset}, ${b.offset + b.byteLength}) overlap`);
    }
  }
}
