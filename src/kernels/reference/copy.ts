/** CPU reference of ops/copy.ts: dst with bytes [dstOffset, dstOffset + length) replaced from src at srcOffset. */
export function copyBytesReference(src: Uint8Array, srcOffset: number, dst: Uint8Array, dstOffset: number, byteLength: number): Uint8Array {
  const out = dst.slice();
  out.set(src.subarray(srcOffset, srcOffset + byteLength), dstOffset);
  return out;
}
