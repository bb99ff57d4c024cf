/** GGUF: a validating, streaming reader (header by buffered chunks, tensors by range) and ggml's dequantizers. */
export { GgufFile, openGguf, type GgufOpenOptions } from './file.ts';
export { DEFAULT_ALIGNMENT, MAX_DIMS, MIN_TENSOR_INFO_BYTES, type GgufTensorInfo } from './header.ts';
export { GgufValueType, MAX_ARRAY_DEPTH, MIN_KV_BYTES, valueTypeName, type GgufValue, type GgufValueTypeInfo } from './metadata.ts';
export { canDequantize, dequantize } from './dequantize.ts';
export {
  GGML_TYPES, GgmlType, ggmlByteLength, ggmlTypeById, ggmlTypeByName, QK_K,
  type GgmlTypeInfo, type GgmlTypeName,
} from './types.ts';
export { CHUNK_BYTES } from './cursor.ts';
