import { WeightsFormatError } from '../errors.ts';
import type { Cursor } from './cursor.ts';

/**
 * A metadata value: numbers for integers up to 32 bits and floats, bigint for 64-bit
 * integers (they may not fit a double), booleans, strings, and arrays of these.
 */
export type GgufValue = number | bigint | boolean | string | readonly GgufValue[];

/** GGUF's metadata value types (gguf_type). */
export const GgufValueType = Object.freeze({
  UINT8: 0, INT8: 1, UINT16: 2, INT16: 3, UINT32: 4, INT32: 5, FLOAT32: 6,
  BOOL: 7, STRING: 8, ARRAY: 9, UINT64: 10, INT64: 11, FLOAT64: 12,
} as const);

/** A value's type as stored: `itemType` for arrays (and `item` for arrays of arrays). */
export interface GgufValueTypeInfo {
  readonly type: number;
  readonly item?: GgufValueTypeInfo;
}

const TYPE_NAMES = ['u8', 'i8', 'u16', 'i16', 'u32', 'i32', 'f32', 'bool', 'string', 'array', 'u64', 'i64', 'f64'] as const;

export function valueTypeName(type: number): string {
  return TYPE_NAMES[type] ?? `type ${type}`;
}

/** Bytes of a fixed-size value; strings and arrays are variable. */
const FIXED_BYTES: readonly number[] = [1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8];

/**
 * The fewest bytes any value of `type` can take: a string is at least its u64 length, an
 * array at least its u32 item type and u64 count. Used to bound counts before looping.
 */
export function minimumValueBytes(type: number): number {
  if (type === GgufValueType.STRING) return 8;
  if (type === GgufValueType.ARRAY) return 12;
  return FIXED_BYTES[type]!;
}

/**
 * Arrays of arrays are legal GGUF but no writer nests more than one level; a limit keeps a
 * crafted file from recursing the reader off its stack.
 */
export const MAX_ARRAY_DEPTH = 3;

/** The fewest bytes a metadata entry takes: key length (u64), value type (u32), a 1-byte value. */
export const MIN_KV_BYTES = 8 + 4 + 1;

function isKnownType(type: number): boolean {
  return Number.isInteger(type) && type >= 0 && type <= 12;
}

/**
 * Reads a u64 length and proves that `length × minimumEach` bytes remain in the file before
 * anything is looped over or allocated; returns it as a (then safe) number.
 */
export async function readLength(cursor: Cursor, minimumEach: number, what: string): Promise<number> {
  const at = cursor.pos;
  if (!cursor.has(8)) await cursor.fill(8, `the length of ${what}`);
  const length = cursor.u64();
  const left = BigInt(cursor.remaining);
  if (length * BigInt(minimumEach) > left) {
    const unit = minimumEach === 1 ? 'bytes' : `items of at least ${minimumEach} bytes`;
    throw new WeightsFormatError(
      cursor.name,
      `${what}: length ${length} ${unit} at offset ${at} runs past the end of the file (${cursor.size} bytes, ${left} left)`,
    );
  }
  return Number(length);
}

/** A u64-length-prefixed string; `strict` decoding for keys and names (see Cursor.text). */
export async function readString(cursor: Cursor, strict: boolean, what: string): Promise<string> {
  const length = await readLength(cursor, 1, what);
  if (!cursor.has(length)) await cursor.fill(length, what);
  return cursor.text(length, strict, what);
}

/** Reads the value-type u32 and checks it is one GGUF defines. */
export async function readValueType(cursor: Cursor, what: string): Promise<number> {
  const at = cursor.pos;
  if (!cursor.has(4)) await cursor.fill(4, `the value type of ${what}`);
  const type = cursor.u32();
  if (!isKnownType(type)) {
    throw new WeightsFormatError(cursor.name, `${what}: unknown metadata value type ${type} at offset ${at}`);
  }
  return type;
}

export interface TypedValue {
  readonly value: GgufValue;
  readonly type: GgufValueTypeInfo;
}

/** One value of a known `type`; `depth` counts the arrays around it. */
export async function readValue(cursor: Cursor, type: number, what: string, depth = 0): Promise<TypedValue> {
  switch (type) {
    case GgufValueType.STRING:
      return { value: await readString(cursor, false, what), type: { type } };
    case GgufValueType.ARRAY:
      return readArray(cursor, what, depth + 1);
    default: {
      const bytes = FIXED_BYTES[type]!;
      if (!cursor.has(bytes)) await cursor.fill(bytes, what);
      return { value: readScalar(cursor, type, what), type: { type } };
    }
  }
}

/** A fixed-size value, already buffered. */
function readScalar(cursor: Cursor, type: number, what: string): number | bigint | boolean {
  switch (type) {
    case GgufValueType.UINT8: return cursor.u8();
    case GgufValueType.INT8: return cursor.i8();
    case GgufValueType.UINT16: return cursor.u16();
    case GgufValueType.INT16: return cursor.i16();
    case GgufValueType.UINT32: return cursor.u32();
    case GgufValueType.INT32: return cursor.i32();
    case GgufValueType.FLOAT32: return cursor.f32();
    case GgufValueType.UINT64: return cursor.u64();
    case GgufValueType.INT64: return cursor.i64();
    case GgufValueType.FLOAT64: return cursor.f64();
    case GgufValueType.BOOL: {
      const at = cursor.pos;
      const byte = cursor.u8();
      // ggml writes exactly 0 or 1; anything else means the bytes are not what they claim.
      if (byte > 1) throw new WeightsFormatError(cursor.name, `${what}: boolean byte ${byte} at offset ${at} is neither 0 nor 1`);
      return byte === 1;
    }
    default:
      throw new Error(`GGUF: readScalar called with type ${type}`);
  }
}

async function readArray(cursor: Cursor, what: string, depth: number): Promise<TypedValue> {
  if (depth > MAX_ARRAY_DEPTH) {
    throw new WeightsFormatError(cursor.name, `${what}: arrays nested more than ${MAX_ARRAY_DEPTH} deep (at offset ${cursor.pos})`);
  }
  const itemType = await readValueType(cursor, `the items of ${what}`);
  const length = await readLength(cursor, minimumValueBytes(itemType), `${what} (array of ${valueTypeName(itemType)})`);
  const values: GgufValue[] = new Array(length);
  if (itemType === GgufValueType.STRING || itemType === GgufValueType.ARRAY) {
    let item: GgufValueTypeInfo | undefined;
    for (let i = 0; i < length; i++) {
      const read = await readValue(cursor, itemType, `${what}[${i}]`, depth);
      values[i] = read.value;
      // Arrays of arrays: items may differ in their own item types; keep the first one's.
      item ??= read.type;
    }
    return { value: values, type: { type: GgufValueType.ARRAY, item: item ?? { type: itemType } } };
  }
  const bytes = FIXED_BYTES[itemType]!;
  for (let i = 0; i < length; i++) {
    if (!cursor.has(bytes)) await cursor.fill(bytes, `${what}[${i}]`);
    values[i] = readScalar(cursor, itemType, `${what}[${i}]`);
  }
  return { value: values, type: { type: GgufValueType.ARRAY, item: { type: itemType } } };
}
