import type { Runtime } from './types.ts';

/** Deno first: it also defines `process` for Node compatibility. */
export function detectRuntime(): Runtime {
  const g = globalThis as { Deno?: unknown; process?: { versions?: { node?: string } } };
  if (g.Deno !== undefined) return 'deno';
  if (g.process?.versions?.node !== undefined) return 'node';
  return 'browser';
}

/**
 * Imports a Node built-in (also served by Deno) without letting a browser bundler follow
 * the import: the specifier is built at run time, so Vite leaves it alone.
 */
export function importNodeBuiltin<T>(name: string): Promise<T> {
  const specifier = `node:${name}`;
  return import(/* @vite-ignore */ specifier) as Promise<T>;
}
