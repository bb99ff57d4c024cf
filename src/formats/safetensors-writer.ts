import { importNodeBuiltin } from '../devices/runtime.ts';
import { DTYPE_BYTES, isDtype, type Dtype } from './dtypes.ts';
import { WeightsFormatError } from './errors.ts';

export interface TensorToWrite {
  readonly name: string;
  readonly dtype: Dtype;
  readonly shape: readonly number[];
  /** Little-endian element bytes; any typed array's bytes are taken as they are. */
  readonly data: ArrayBufferView;
}

const bytesOf = (view: ArrayBufferView) => new Uint8Array(view.buffer, view.byteOffset, view.byteLength);

/**
 * The header as the reference writer lays it out: compact JSON, `__metadata__` first, then
 * the tensors in the order given (which is also their order in the data), padded with
 * spaces so the data starts 8-byte aligned. Reading a file and writing its tensors back in
 * file order therefore reproduces it bit for bit.
 */
export function encodeHeader(tensors: readonly TensorToWrite[], metadata: ReadonlyMap<string, string> | Record<string, string> = new Map(),
  target = 'safetensors output'): Uint8Array {
  const header: Record<string, unknown> = Object.create(null);
  const meta = metadata instanceof Map ? [...metadata] : Object.entries(metadata);
  if (meta.length > 0) header.__metadata__ = Object.fromEntries(meta);
  let offset = 0;
  for (const t of tensors) {
    if (t.name === '__metadata__' || Object.hasOwn(header, t.name)) throw new WeightsFormatError(target, `tensor name "${t.name}" is used twice or reserved`);
    if (!isDtype(t.dtype)) throw new WeightsFormatError(target, `tensor "${t.name}": unknown dtype ${JSON.stringify(t.dtype)}`);
    const expected = t.shape.reduce((a, b) => a * b, 1) * DTYPE_BYTES[t.dtype];
    if (t.shape.some((d) => !Number.isSafeInteger(d) || d < 0) || expected !== t.data.byteLength) {
      throw new WeightsFormatError(target, `tensor "${t.name}" is ${t.dtype} ${JSON.stringify(t.shape)} (${expected} bytes) but its data has ${t.data.byteLength}`);
    }
    // Own data property even for "__proto__": the object has no prototype to pollute.
    Object.defineProperty(header, t.name, {
      value: { dtype: t.dtype, shape: [...t.shape], data_offsets: [offset, offset + expected] },
      enumerable: true, writable: true, configurable: true,
    });
    offset += expected;
  }
  const json = new TextEncoder().encode(JSON.stringify(header));
  const padded = Math.ceil(json.length / 8) * 8;
  const out = new Uint8Array(8 + padded).fill(0x20, 8 + json.length);
  new DataView(out.buffer).setBigUint64(0, BigInt(padded), true);
  out.set(json, 8);
  return out;
}

/** A whole safetensors file in memory. */
export function encodeSafetensors(tensors: readonly TensorToWrite[], metadata?: ReadonlyMap<string, string> | Record<string, string>): Uint8Array {
  const header = encodeHeader(tensors, metadata);
  const out = new Uint8Array(header.length + tensors.reduce((n, t) => n + t.data.byteLength, 0));
  out.set(header);
  let at = header.length;
  for (const t of tensors) {
    out.set(bytesOf(t.data), at);
    at += t.data.byteLength;
  }
  return out;
}

/** Streams a safetensors file to disk, one tensor at a time (Node and Deno). */
export async function writeSafetensorsFile(path: string, tensors: readonly TensorToWrite[],
  metadata?: ReadonlyMap<string, string> | Record<string, string>): Promise<void> {
  const header = encodeHeader(tensors, metadata, path);
  const fs = await importNodeBuiltin<typeof import('node:fs/promises')>('fs/promises');
  const handle = await fs.open(path, 'w');
  try {
    await handle.write(header);
    for (const t of tensors) await handle.write(bytesOf(t.data));
  } finally {
    await handle.close();
  }
}
