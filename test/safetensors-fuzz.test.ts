// At least 10,000 mutated and truncated copies of fixture files: each either reads back
// the original tensors or throws WeightsFormatError; none takes 1 s, throws anything else,
// or asks the (counting) allocator for more than the file holds.
import fc from 'fast-check';
import { afterAll, describe, expect, it } from 'vitest';
import { CountingAllocator } from '../src/formats/allocator.ts';
import { WeightsFormatError } from '../src/formats/errors.ts';
import { SafetensorsFile } from '../src/formats/safetensors.ts';
import { bytesSource } from '../src/formats/source.ts';
import { fixtureBytes } from './fixtures.ts';

const FILES = [
  ['gpt2-tiny', 'expected.safetensors'],
  ['flux-dit-tiny', 'expected.safetensors'],
  ['t5-encoder-tiny', 'model.bf16.safetensors'],
] as const;

let cases = 0;
const outcomes = { read: 0, rejected: 0 };
afterAll(() => {
  console.log(`safetensors fuzz: ${cases} cases (${outcomes.read} read back, ${outcomes.rejected} rejected with WeightsFormatError)`);
});

interface Original {
  readonly bytes: Uint8Array;
  readonly headerEnd: number;
  readonly tensors: Map<string, Uint8Array>;
}

async function load(folder: string, file: string): Promise<Original> {
  const bytes = fixtureBytes(folder, file);
  const st = await SafetensorsFile.open(bytesSource(bytes));
  const tensors = new Map<string, Uint8Array>();
  for (const name of st.tensors.keys()) tensors.set(name, await st.read(name));
  return { bytes, headerEnd: 8 + Number(new DataView(bytes.buffer, bytes.byteOffset).getBigUint64(0, true)), tensors };
}

/** What a mutation does to a copy of the file. */
type Mutation =
  | { kind: 'truncate'; at: number }
  | { kind: 'bytes'; edits: Array<{ at: number; value: number }> }
  | { kind: 'length'; value: bigint }
  | { kind: 'digits'; at: number; digit: number }
  | { kind: 'splice'; at: number; remove: number; insert: number[] };

function mutationFor(original: Original): fc.Arbitrary<Mutation> {
  const size = original.bytes.length;
  const inHeader = fc.integer({ min: 0, max: original.headerEnd - 1 });
  const anywhere = fc.integer({ min: 0, max: size - 1 });
  return fc.oneof(
    { weight: 2, arbitrary: fc.record({ kind: fc.constant('truncate' as const), at: fc.integer({ min: 0, max: size - 1 }) }) },
    { weight: 4, arbitrary: fc.record({ kind: fc.constant('bytes' as const), edits: fc.array(fc.record({ at: fc.oneof(inHeader, anywhere), value: fc.integer({ min: 0, max: 255 }) }), { minLength: 1, maxLength: 6 }) }) },
    { weight: 1, arbitrary: fc.record({ kind: fc.constant('length' as const), value: fc.oneof(fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }), fc.bigInt({ min: 0n, max: BigInt(size) })) }) },
    { weight: 3, arbitrary: fc.record({ kind: fc.constant('digits' as const), at: inHeader, digit: fc.integer({ min: 0, max: 9 }) }) },
    { weight: 2, arbitrary: fc.record({ kind: fc.constant('splice' as const), at: inHeader, remove: fc.integer({ min: 0, max: 8 }), insert: fc.array(fc.integer({ min: 0x20, max: 0x7e }), { maxLength: 8 }) }) },
  );
}

function apply(original: Original, m: Mutation): Uint8Array {
  const b = original.bytes;
  switch (m.kind) {
    case 'truncate':
      return b.slice(0, m.at);
    case 'bytes': {
      const out = b.slice();
      for (const e of m.edits) out[e.at] = e.value;
      return out;
    }
    case 'length': {
      const out = b.slice();
      new DataView(out.buffer).setBigUint64(0, m.value, true);
      return out;
    }
    case 'digits': {
      // Change the nearest digit at or after `at`: shapes and offsets, the numbers that matter.
      const out = b.slice();
      for (let i = Math.max(8, m.at); i < original.headerEnd; i++) {
        if (out[i]! >= 0x30 && out[i]! <= 0x39) {
          out[i] = 0x30 + m.digit;
          break;
        }
      }
      return out;
    }
    case 'splice':
      return new Uint8Array([...b.subarray(0, m.at), ...m.insert, ...b.subarray(m.at + m.remove)]);
  }
}

async function check(original: Original, mutated: Uint8Array): Promise<void> {
  cases++;
  const allocator = new CountingAllocator();
  const started = performance.now();
  try {
    const file = await SafetensorsFile.open(bytesSource(mutated, 'fuzz.safetensors'), { allocator });
    const headerIntact = mutated.length >= original.headerEnd &&
      Buffer.compare(Buffer.from(mutated.subarray(0, original.headerEnd)), Buffer.from(original.bytes.subarray(0, original.headerEnd))) === 0;
    for (const info of file.tensors.values()) {
      const bytes = await file.read(info.name);
      // Whatever the header says, a tensor is exactly the bytes it points at...
      expect(Buffer.compare(Buffer.from(bytes), Buffer.from(mutated.subarray(info.offset, info.offset + info.byteLength)))).toBe(0);
      // ...and with the header and the data untouched, it is the original tensor.
      if (headerIntact && Buffer.compare(Buffer.from(mutated), Buffer.from(original.bytes)) === 0) {
        expect(Buffer.compare(Buffer.from(bytes), Buffer.from(original.tensors.get(info.name)!))).toBe(0);
      }
    }
    if (headerIntact && mutated.length === original.bytes.length) expect(file.tensors.size).toBe(original.tensors.size);
    outcomes.read++;
  } catch (error) {
    if (!(error instanceof WeightsFormatError)) throw new Error(`untyped error: ${(error as Error)?.stack ?? error}`);
    expect(error.file).toBe('fuzz.safetensors');
    outcomes.rejected++;
  }
  expect(performance.now() - started).toBeLessThan(1000);
  expect(allocator.largest).toBeLessThanOrEqual(mutated.length);
  // Header length, header and each tensor once: never more than the file holds.
  expect(allocator.total).toBeLessThanOrEqual(mutated.length);
}

describe('safetensors fuzzing', () => {
  it.each(FILES)('%s/%s: 4,000 mutated and truncated copies', async (folder, file) => {
    const original = await load(folder, file);
    await fc.assert(fc.asyncProperty(mutationFor(original), async (m) => check(original, apply(original, m))), { numRuns: 4000 });
  });

  it('every truncation of a small file is rejected with a typed error', async () => {
    const original = await load('flux-dit-tiny', 'expected.safetensors');
    const before = outcomes.rejected;
    let tried = 0;
    for (let at = 0; at < original.bytes.length; at += 7, tried++) {
      await check(original, original.bytes.slice(0, at));
    }
    expect(outcomes.rejected - before).toBe(tried);
  });
});
