/**
 * ggml's tensor types: the id a GGUF tensor info stores, and the block layout that decides
 * how many bytes a tensor occupies. The layout is known for every type ggml defines, so a
 * file's tensor table can be checked (sizes, overlaps, bounds) even for types this reader
 * cannot dequantize; only reading such a tensor as float32 is refused.
 */
export interface GgmlTypeInfo {
  /** The id stored in the file (enum ggml_type). */
  readonly id: number;
  /** ggml's name, upper case (as `ggml_type_name` prints it, e.g. "Q4_K", "BF16"). */
  readonly name: string;
  /** Elements per block (1 for plain types, 32 for Q4_0..Q8_0, 256 for the K-quants). */
  readonly blockSize: number;
  /** Bytes per block. */
  readonly typeSize: number;
  /** Whether `dequantize` handles it. */
  readonly dequantizable: boolean;
}

/** The K-quants' super-block (ggml's QK_K). */
export const QK_K = 256;

function entry(id: number, name: string, blockSize: number, typeSize: number, dequantizable: boolean): GgmlTypeInfo {
  return Object.freeze({ id, name, blockSize, typeSize, dequantizable });
}

/*
 * Sizes follow ggml's block structs (ggml-common.h): e.g. block_q4_0 is one f16 scale and
 * 16 bytes of nibbles for 32 weights (18 bytes); block_q6_K is 128 + 64 + 16 bytes of quants
 * and scales plus one f16 for 256 weights (210 bytes). Ids 4, 5, 31-33 and 36-38 were
 * removed from ggml and are unknown here, as they are to ggml.
 */
const TABLE: readonly GgmlTypeInfo[] = [
  entry(0, 'F32', 1, 4, true),
  entry(1, 'F16', 1, 2, true),
  entry(2, 'Q4_0', 32, 18, true),
  entry(3, 'Q4_1', 32, 20, true),
  entry(6, 'Q5_0', 32, 22, true),
  entry(7, 'Q5_1', 32, 24, true),
  entry(8, 'Q8_0', 32, 34, true),
  entry(9, 'Q8_1', 32, 36, false),
  entry(10, 'Q2_K', QK_K, 84, true),
  entry(11, 'Q3_K', QK_K, 110, true),
  entry(12, 'Q4_K', QK_K, 144, true),
  entry(13, 'Q5_K', QK_K, 176, true),
  entry(14, 'Q6_K', QK_K, 210, true),
  entry(15, 'Q8_K', QK_K, 292, true),
  entry(16, 'IQ2_XXS', QK_K, 66, false),
  entry(17, 'IQ2_XS', QK_K, 74, false),
  entry(18, 'IQ3_XXS', QK_K, 98, false),
  entry(19, 'IQ1_S', QK_K, 50, false),
  entry(20, 'IQ4_NL', 32, 18, false),
  entry(21, 'IQ3_S', QK_K, 110, false),
  entry(22, 'IQ2_S', QK_K, 82, false),
  entry(23, 'IQ4_XS', QK_K, 136, false),
  entry(24, 'I8', 1, 1, true),
  entry(25, 'I16', 1, 2, true),
  entry(26, 'I32', 1, 4, true),
  entry(27, 'I64', 1, 8, true),
  entry(28, 'F64', 1, 8, true),
  entry(29, 'IQ1_M', QK_K, 56, false),
  entry(30, 'BF16', 1, 2, true),
  entry(34, 'TQ1_0', QK_K, 54, false),
  entry(35, 'TQ2_0', QK_K, 66, false),
  entry(39, 'MXFP4', 32, 17, false),
];

const BY_ID = new Map<number, GgmlTypeInfo>(TABLE.map((t) => [t.id, t]));
const BY_NAME = new Map<string, GgmlTypeInfo>(TABLE.map((t) => [t.name, t]));

/** Ids for the types this reader dequantizes, by name (for callers and tests). */
export const GgmlType = Object.freeze({
  F32: 0, F16: 1, Q4_0: 2, Q4_1: 3, Q5_0: 6, Q5_1: 7, Q8_0: 8,
  Q2_K: 10, Q3_K: 11, Q4_K: 12, Q5_K: 13, Q6_K: 14, Q8_K: 15,
  I8: 24, I16: 25, I32: 26, I64: 27, F64: 28, BF16: 30,
} as const);

export type GgmlTypeName = keyof typeof GgmlType;

/** Every type ggml defines, known layout or not dequantizable, in id order. */
export const GGML_TYPES: readonly GgmlTypeInfo[] = TABLE;

/** The type with this id, or undefined for an id ggml does not define. */
export function ggmlTypeById(id: number): GgmlTypeInfo | undefined {
  return BY_ID.get(id);
}

/** The type with this name (ggml's spelling, e.g. "Q4_K"), or undefined. */
export function ggmlTypeByName(name: string): GgmlTypeInfo | undefined {
  return BY_NAME.get(name);
}

/** Bytes that `elements` values of `type` occupy (elements must be a multiple of the block size). */
export function ggmlByteLength(type: GgmlTypeInfo, elements: number): number {
  return (elements / type.blockSize) * type.typeSize;
}
