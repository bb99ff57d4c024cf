/**
 * Every buffer a reader fills from a file comes from an allocator, so tests can count what a
 * (possibly corrupt) file makes the reader ask for, and a host can pool or cap host memory.
 */
export interface ByteAllocator {
  allocate(bytes: number, purpose: string): Uint8Array;
}

export const defaultAllocator: ByteAllocator = {
  allocate: (bytes) => new Uint8Array(bytes),
};

/** Counts requests: the total, the largest single one, and how many. */
export class CountingAllocator implements ByteAllocator {
  total = 0;
  largest = 0;
  count = 0;

  allocate(bytes: number, _purpose: string): Uint8Array {
    this.total += bytes;
    this.largest = Math.max(this.largest, bytes);
    this.count++;
    return new Uint8Array(bytes);
  }
}
