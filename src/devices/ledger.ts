/**
 * The bytes the runtime itself has allocated on one device. WebGPU cannot report free
 * memory, so this ledger is the only truth the planner and the manager have: every
 * allocation adds an entry, every free removes exactly that entry.
 */
export interface LedgerEntry {
  readonly id: number;
  readonly label: string;
  readonly bytes: number;
}

export class ByteLedger {
  #entries = new Map<number, LedgerEntry>();
  #nextId = 1;
  #used = 0;
  #peak = 0;

  /** Bytes currently allocated. */
  get used(): number {
    return this.#used;
  }

  /** The highest `used` since the ledger was created (or last reset). */
  get peak(): number {
    return this.#peak;
  }

  /** Number of live allocations. */
  get count(): number {
    return this.#entries.size;
  }

  entries(): LedgerEntry[] {
    return [...this.#entries.values()];
  }

  add(label: string, bytes: number): LedgerEntry {
    if (!Number.isSafeInteger(bytes) || bytes < 0) throw new RangeError(`ledger: byte count must be a non-negative integer, got ${bytes}`);
    const entry: LedgerEntry = Object.freeze({ id: this.#nextId++, label, bytes });
    this.#entries.set(entry.id, entry);
    this.#used += bytes;
    this.#peak = Math.max(this.#peak, this.#used);
    return entry;
  }

  /** Removes the entry; returns false when it was already released (so frees are idempotent). */
  release(entry: LedgerEntry): boolean {
    if (!this.#entries.delete(entry.id)) return false;
    this.#used -= entry.bytes;
    return true;
  }

  /** Everything at once: a lost or destroyed device has freed all of its memory. */
  releaseAll(): void {
    this.#entries.clear();
    this.#used = 0;
  }

  resetPeak(): void {
    this.#peak = this.#used;
  }
}
