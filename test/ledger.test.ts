import { describe, expect, it } from 'vitest';
import { ByteLedger } from '../src/devices/ledger.ts';

describe('ByteLedger', () => {
  it('counts exactly, tracks the peak, and frees each entry once', () => {
    const ledger = new ByteLedger();
    const a = ledger.add('a', 100);
    const b = ledger.add('b', 28);
    expect([ledger.used, ledger.peak, ledger.count]).toEqual([128, 128, 2]);
    expect(ledger.release(a)).toBe(true);
    expect(ledger.release(a)).toBe(false);
    expect([ledger.used, ledger.peak, ledger.count]).toEqual([28, 128, 1]);
    expect(ledger.entries().map((e) => e.label)).toEqual(['b']);
    ledger.release(b);
    expect(ledger.used).toBe(0);
    ledger.resetPeak();
    expect(ledger.peak).toBe(0);
  });

  it('refuses byte counts that are not non-negative integers', () => {
    const ledger = new ByteLedger();
    for (const bad of [-1, 1.5, Number.NaN, 2 ** 60]) expect(() => ledger.add('x', bad)).toThrow(RangeError);
    expect(ledger.used).toBe(0);
  });

  it('releaseAll empties it (a lost device has freed everything)', () => {
    const ledger = new ByteLedger();
    const entry = ledger.add('a', 5);
    ledger.add('b', 7);
    ledger.releaseAll();
    expect([ledger.used, ledger.count]).toEqual([0, 0]);
    expect(ledger.release(entry)).toBe(false);
  });
});
