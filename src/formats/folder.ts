import { importNodeBuiltin } from '../devices/runtime.ts';
import { defaultAllocator, type ByteAllocator } from './allocator.ts';
import { WeightsFormatError, WeightsNotFoundError } from './errors.ts';
import { blobSource, fileSource, type ByteSource } from './source.ts';

/**
 * The files of one model folder, wherever they are: a directory on disk, the files a user
 * picked in a browser, or a base URL. Shard names from an index are resolved here, and only
 * here, so an index can never reach outside its folder.
 */
export interface FileProvider {
  readonly name: string;
  list(): Promise<string[]>;
  open(file: string): Promise<ByteSource>;
}

/** Small JSON side files (config.json, *.index.json) are read whole, but never above this. */
export const MAX_JSON_BYTES = 64 * 1024 * 1024;

export function checkPlainName(provider: FileProvider, referrer: string, file: string): void {
  if (typeof file !== 'string' || file === '' || /[\\/]/.test(file) || file === '.' || file === '..') {
    throw new WeightsFormatError(`${provider.name}/${referrer}`, `names file ${JSON.stringify(file)}, which is not a plain file name in this folder`);
  }
}

export async function nodeFolder(path: string): Promise<FileProvider> {
  const fs = await importNodeBuiltin<typeof import('node:fs/promises')>('fs/promises');
  const { join } = await importNodeBuiltin<typeof import('node:path')>('path');
  return {
    name: path,
    list: async () => (await fs.readdir(path, { withFileTypes: true })).filter((e) => e.isFile()).map((e) => e.name).sort(),
    open: (file) => fileSource(join(path, file)),
  };
}

/** Files picked in a browser (an <input type=file multiple> or a folder drop). */
export function blobFolder(name: string, files: ReadonlyMap<string, Blob> | readonly File[]): FileProvider {
  const byName = files instanceof Map ? new Map(files) : new Map((files as readonly File[]).map((f) => [f.name, f as Blob]));
  return {
    name,
    list: async () => [...byName.keys()].sort(),
    open: async (file) => {
      const blob = byName.get(file);
      if (!blob) throw new WeightsNotFoundError(name, `file "${file}"`, [...byName.keys()]);
      return blobSource(blob, `${name}/${file}`);
    },
  };
}

/** Reads a JSON object file of the folder, with a size limit and typed errors. */
export async function readJsonObject(provider: FileProvider, file: string, allocator: ByteAllocator = defaultAllocator): Promise<Record<string, unknown>> {
  const source = await provider.open(file);
  try {
    if (source.size > MAX_JSON_BYTES) throw new WeightsFormatError(source.name, `is ${source.size} bytes, over the ${MAX_JSON_BYTES}-byte limit for a JSON side file`);
    const bytes = allocator.allocate(source.size, file);
    await source.readInto(0, bytes);
    let parsed: unknown;
    try {
      parsed = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes));
    } catch (cause) {
      throw new WeightsFormatError(source.name, `is not valid JSON (${(cause as Error).message})`, { cause });
    }
    if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) throw new WeightsFormatError(source.name, 'is not a JSON object');
    return parsed as Record<string, unknown>;
  } finally {
    await source.close();
  }
}
