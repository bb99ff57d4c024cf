import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ROOT } from './helpers.ts';

export const FIXTURES = join(ROOT, 'test/fixtures');

/** Every model folder under test/fixtures (copied unchanged from the team's shared fixtures). */
export const FIXTURE_FOLDERS = readdirSync(FIXTURES, { withFileTypes: true }).filter((e) => e.isDirectory() && e.name !== 'tokenizers').map((e) => e.name).sort();

export function fixturePath(...parts: string[]): string {
  return join(FIXTURES, ...parts);
}

export function fixtureFiles(suffix: string): string[] {
  return FIXTURE_FOLDERS.flatMap((folder) => readdirSync(join(FIXTURES, folder)).filter((f) => f.endsWith(suffix)).map((f) => join(folder, f)));
}

export function fixtureBytes(...parts: string[]): Uint8Array<ArrayBuffer> {
  return new Uint8Array(readFileSync(fixturePath(...parts)));
}
