// The CPU memories' allocator (src/cpu/memory.ts): random alloc/free sequences never hand out
// overlapping ranges, stay 64-byte aligned and under the limit, account every byte, reuse
// freed ranges, and a memory emptied of allocations gives its top back.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { CpuMemory, PAGE } from '../src/cpu/memory.ts';

describe('CPU memory allocator', () => {
  it('random alloc/free: disjoint, aligned, under the limit, accounted, reused', () => {
    fc.assert(fc.property(
      fc.array(fc.oneof(fc.record({ alloc: fc.integer({ min: 1, max: 200_000 }) }), fc.record({ free: fc.nat() })), { minLength: 1, maxLength: 80 }),
      (steps) => {
        const limit = 24 * PAGE;
        const mem = new CpuMemory(0, 1024, 2, limit, false);
        const live: Array<{ at: number; size: number }> = [];
        for (const s of steps) {
          if ('alloc' in s) {
            const at = mem.alloc(s.alloc);
            if (at === null) continue; // no contiguous room left under the limit
            expect(at % 64).toBe(0);
            expect(at + s.alloc).toBeLessThanOrEqual(limit);
            expect(at + s.alloc).toBeLessThanOrEqual(mem.committedBytes);
            for (const l of live) expect(at + s.alloc <= l.at || l.at + l.size <= at).toBe(true);
            live.push({ at, size: s.alloc });
          } else if (live.length > 0) {
            const [gone] = live.splice(s.free % live.length, 1);
            mem.release(gone!.at);
          }
          expect(mem.liveAllocations).toBe(live.length);
          expect(mem.used).toBe(live.reduce((t, l) => t + Math.ceil(l.size / 64) * 64, 0));
        }
        for (const l of live.splice(0)) mem.release(l.at);
        expect(mem.used).toBe(0);
        // Everything freed: the whole heap is one range again.
        const again = mem.alloc(mem.available);
        expect(again).not.toBeNull();
      },
    ), { numRuns: 200, seed: 7 });
  });

  it('rejects double frees and never grows past its limit', () => {
    const mem = new CpuMemory(0, 1024, 1, 8 * PAGE, false);
    const a = mem.alloc(1000)!;
    mem.release(a);
    expect(() => mem.release(a)).toThrow(/not allocated/);
    expect(mem.alloc(8 * PAGE)).toBeNull();
    expect(mem.committedBytes).toBeLessThanOrEqual(8 * PAGE);
  });
});
