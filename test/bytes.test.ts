import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { BYTE_UNITS, formatBytes, InvalidByteSizeError, parseByteSize } from '../src/allocation/bytes.ts';

describe('parseByteSize', () => {
  it.each([
    ['1024', 1024],
    ['1k', 1024],
    ['1.5kb', 1536],
    ['.5gb', 512 * 1024 ** 2],
    ['0.5GB', 512 * 1024 ** 2],
    ['2.5 gb', Math.floor(2.5 * 1024 ** 3)],
    ['24GiB', 24 * 1024 ** 3],
    ['1tb', 1024 ** 4],
    ['3 MiB', 3 * 1024 ** 2],
    ['7b', 7],
  ])('%s = %d bytes', (text, bytes) => {
    expect(parseByteSize(text)).toBe(bytes);
  });

  it('reads tb as terabytes, never bytes (a DisTorch2 defect)', () => {
    expect(parseByteSize('2tb')).toBe(2 * 1024 ** 4);
  });

  it.each([
    ['', 'expected a non-negative number'],
    ['gb', 'expected a non-negative number'],
    ['-1gb', 'expected a non-negative number'],
    ['1,5gb', 'expected a non-negative number'],
    ['4 zb', 'unknown unit "zb"'],
    ['1e3', 'expected a non-negative number'],
  ])('rejects %j with a typed error that says why', (text, why) => {
    const attempt = () => parseByteSize(text);
    expect(attempt).toThrow(InvalidByteSizeError);
    expect(attempt).toThrow(why);
  });

  it('every unit, any amount and any spacing or case parses to amount × unit (fuzzed)', () => {
    fc.assert(fc.property(
      fc.integer({ min: 0, max: 4096 }), fc.constantFrom(...Object.keys(BYTE_UNITS)), fc.boolean(), fc.boolean(),
      (amount, unit, upper, spaced) => {
        const text = `${amount}${spaced ? ' ' : ''}${upper ? unit.toUpperCase() : unit}`;
        expect(parseByteSize(text)).toBe(amount * BYTE_UNITS[unit]!);
      }), { numRuns: 2000 });
  });

  it('any string either parses to a safe integer or throws InvalidByteSizeError (fuzzed)', () => {
    fc.assert(fc.property(fc.string({ maxLength: 20 }), (text) => {
      try {
        expect(Number.isSafeInteger(parseByteSize(text))).toBe(true);
      } catch (error) {
        expect(error).toBeInstanceOf(InvalidByteSizeError);
      }
    }), { numRuns: 5000 });
  });
});

describe('formatBytes', () => {
  it.each([
    [0, '0 B'],
    [1023, '1023 B'],
    [1024, '1.00 KiB'],
    [1.5 * 1024 ** 3, '1.50 GiB'],
    [140 * 1024 ** 3, '140 GiB'],
    [-2048, '-2.00 KiB'],
  ])('%d → %s', (bytes, text) => {
    expect(formatBytes(bytes)).toBe(text);
  });
});
