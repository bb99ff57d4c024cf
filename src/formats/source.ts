import { importNodeBuiltin } from '../devices/runtime.ts';
import { WeightsFormatError } from './errors.ts';

/**
 * Random access to the bytes of one file, wherever it lives: readers never load a whole
 * file, they read exactly the ranges they need into buffers they allocated.
 */
export interface ByteSource {
  /** For messages: a path, a File's name or a URL. */
  readonly name: string;
  readonly size: number;
  /** Fills `target` with the bytes at [offset, offset + target.length); throws if the file is shorter. */
  readInto(offset: number, target: Uint8Array): Promise<void>;
  close(): Promise<void>;
}

function checkRange(source: { name: string; size: number }, offset: number, length: number): void {
  if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0 || offset + length > source.size) {
    throw new WeightsFormatError(source.name, `read of ${length} bytes at offset ${offset} is past the end of the file (${source.size} bytes)`);
  }
}

/** Bytes already in memory (tests, fetched files, generated data). */
export function bytesSource(bytes: Uint8Array, name = 'memory'): ByteSource {
  return {
    name,
    size: bytes.byteLength,
    async readInto(offset, target) {
      checkRange(this, offset, target.length);
      target.set(bytes.subarray(offset, offset + target.length));
    },
    async close() {},
  };
}

/** A file on disk, through one file handle (Node, and Deno's node:fs). */
export async function fileSource(path: string): Promise<ByteSource> {
  const fs = await importNodeBuiltin<typeof import('node:fs/promises')>('fs/promises');
  let handle: import('node:fs/promises').FileHandle;
  try {
    handle = await fs.open(path, 'r');
  } catch (cause) {
    throw new WeightsFormatError(path, `cannot open: ${(cause as Error).message}`, { cause, hint: 'check the path and its permissions' });
  }
  const size = (await handle.stat()).size;
  const source: ByteSource = {
    name: path,
    size,
    async readInto(offset, target) {
      checkRange(source, offset, target.length);
      let done = 0;
      while (done < target.length) {
        const { bytesRead } = await handle.read(target, done, target.length - done, offset + done);
        if (bytesRead === 0) throw new WeightsFormatError(path, `the file ended at ${offset + done} bytes while reading (it changed on disk?)`);
        done += bytesRead;
      }
    },
    async close() {
      await handle.close();
    },
  };
  return source;
}

/** A browser File or Blob, read by slices. */
export function blobSource(blob: Blob, name = (blob as File).name ?? 'blob'): ByteSource {
  return {
    name,
    size: blob.size,
    async readInto(offset, target) {
      checkRange(this, offset, target.length);
      target.set(new Uint8Array(await blob.slice(offset, offset + target.length).arrayBuffer()));
    },
    async close() {},
  };
}

/** A URL served with HTTP Range support (Hugging Face, any static server). */
export async function httpSource(url: string, fetchImpl: typeof fetch = fetch): Promise<ByteSource> {
  const head = await fetchImpl(url, { headers: { Range: 'bytes=0-0' } });
  const total = head.headers.get('content-range')?.match(/\/(\d+)$/)?.[1];
  await head.body?.cancel();
  if (head.status !== 206 || total === undefined) {
    throw new WeightsFormatError(url, `the server does not answer range requests (HTTP ${head.status})`, {
      hint: 'serve the file from a server that supports HTTP Range, or pick the file locally',
    });
  }
  const source: ByteSource = {
    name: url,
    size: Number(total),
    async readInto(offset, target) {
      checkRange(source, offset, target.length);
      if (target.length === 0) return;
      const response = await fetchImpl(url, { headers: { Range: `bytes=${offset}-${offset + target.length - 1}` } });
      const body = new Uint8Array(await response.arrayBuffer());
      if (response.status !== 206 || body.length !== target.length) {
        throw new WeightsFormatError(url, `range ${offset}+${target.length}: HTTP ${response.status} with ${body.length} bytes`);
      }
      target.set(body);
    },
    async close() {},
  };
  return source;
}
