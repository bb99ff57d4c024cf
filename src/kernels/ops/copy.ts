import type { KernelRecorder } from '../recorder.ts';
import { storedBytes, type GpuTensor } from '../tensor.ts';
import { groupsFor, Uniforms, WORKGROUP_SIZE } from './elementwise-common.ts';

const ALIGN = 256;
/** Byte offsets in the kernel are i32: keep every window under 1 GiB. */
const MAX_WINDOW = 1 << 30;

/**
 * Copies `byteLength` bytes from src at `srcOffset` to dst at `dstOffset`, any offsets and any
 * length: WebGPU's copyBufferToBuffer moves whole 4-byte words, so an f16 tensor of odd length
 * or a slice starting mid-word needs this kernel. Destination bytes outside the range keep
 * their values. Ranges larger than one binding are copied in windows (one dispatch each) whose
 * bindings start on minStorageBufferOffsetAlignment. src and dst must be different buffers.
 */
export async function copyBytes(rec: KernelRecorder, src: GpuTensor, srcOffset: number, dst: GpuTensor, dstOffset: number,
  byteLength: number): Promise<void> {
  const op = 'copy';
  for (const [what, v] of [['srcOffset', srcOffset], ['dstOffset', dstOffset], ['byteLength', byteLength]] as const) {
    if (!Number.isInteger(v) || v < 0) throw new RangeError(`${op}: ${what} ${v} must be a non-negative integer`);
  }
  if (srcOffset + byteLength > src.byteLength) throw new RangeError(`${op}: bytes [${srcOffset}, ${srcOffset + byteLength}) are outside the ${src.byteLength}-byte source`);
  if (dstOffset + byteLength > dst.byteLength) throw new RangeError(`${op}: bytes [${dstOffset}, ${dstOffset + byteLength}) are outside the ${dst.byteLength}-byte destination`);
  if (src.buffer === dst.buffer) throw new RangeError(`${op}: source and destination are one buffer; WebGPU cannot bind it for reading and writing at once`);
  if (src.gpu !== rec.gpu || dst.gpu !== rec.gpu) throw new RangeError(`${op}: both tensors must live on ${rec.gpu.name}`);
  if (byteLength === 0) return;
  const limits = rec.limits;
  const align = Math.max(ALIGN, limits.minStorageBufferOffsetAlignment);
  // A window's bindings start up to `align` bytes before its data and end up to 4 bytes after it.
  const window = Math.floor((Math.min(limits.maxStorageBufferBindingSize, MAX_WINDOW) - 2 * align - 8) / align) * align;
  if (window < align) throw new RangeError(`${op}: bindings of ${limits.maxStorageBufferBindingSize} bytes are too small to copy through`);
  const pipeline = await rec.pipeline('copy', { WORKGROUP_SIZE });
  const delta = srcOffset - dstOffset;
  const end = dstOffset + byteLength;
  for (let d = dstOffset; d < end;) {
    const dstStart = Math.floor(d / align) * align;
    const windowEnd = Math.min(dstStart + window, end);
    const dstSize = Math.ceil(windowEnd / 4) * 4 - dstStart;
    const srcStart = Math.floor((d + delta) / align) * align;
    const srcSize = Math.min(Math.ceil((windowEnd + delta) / 4) * 4 + 4, src.buffer.size) - srcStart;
    const firstWord = Math.floor((d - dstStart) / 4);
    const words = dstSize / 4 - firstWord;
    const u = new Uniforms(5).u32(words, firstWord, d - dstStart, windowEnd - dstStart).i32(dstStart + delta - srcStart);
    rec.dispatch(pipeline, [{ buffer: src.buffer, offset: srcStart, size: srcSize }, { buffer: dst.buffer, offset: dstStart, size: dstSize }],
      u.bytes, groupsFor(words), `${op} ${windowEnd - d} bytes`);
    d = windowEnd;
  }
}

/**
 * Copies `count` elements (default: all of src) from src at element `srcOffset` into dst at
 * element `dstOffset`; both tensors of one dtype. Any dtype: offsets and counts of GGUF block
 * types must be whole blocks.
 */
export function copy(rec: KernelRecorder, src: GpuTensor, dst: GpuTensor,
  options: { readonly srcOffset?: number; readonly dstOffset?: number; readonly count?: number } = {}): Promise<void> {
  if (src.dtype !== dst.dtype) throw new RangeError(`copy: src is ${src.dtype}, dst is ${dst.dtype}`);
  const srcOffset = options.srcOffset ?? 0;
  const dstOffset = options.dstOffset ?? 0;
  const count = options.count ?? src.elements - srcOffset;
  const bytes = (elements: number) => storedBytes(src.dtype, elements);
  return copyBytes(rec, src, bytes(srcOffset), dst, bytes(dstOffset), bytes(count));
}
