import type { ByteAllocator } from '../allocator.ts';
import { WeightsFormatError } from '../errors.ts';
import type { ByteSource } from '../source.ts';

/** How much of the file one refill reads: large enough that a header costs a few reads. */
export const CHUNK_BYTES = 64 * 1024;

/**
 * A forward-reading, little-endian cursor over a ByteSource. It holds one window of the
 * file; `fill(n)` rereads the window from the current position when fewer than `n` bytes
 * are buffered. The window buffer is reused while it is large enough and grows (doubling,
 * never beyond what is left of the file) only when a single item needs more, so a header
 * costs about its own size in reads and at most twice the file in allocations, whatever
 * the file claims.
 *
 * Usage: `if (!cursor.has(n)) await cursor.fill(n, what)` before the synchronous getters,
 * so the common case (bytes already buffered) costs no promise.
 */
export class Cursor {
  readonly size: number;
  readonly #source: ByteSource;
  readonly #allocator: ByteAllocator;
  #buffer: Uint8Array = new Uint8Array(0);
  #view: DataView = new DataView(new ArrayBuffer(0));
  /** File offset of #buffer[0]. */
  #start = 0;
  /** Valid bytes in #buffer. */
  #length = 0;
  #pos = 0;
  readonly #decoder = new TextDecoder('utf-8', { fatal: true });
  readonly #lenientDecoder = new TextDecoder('utf-8');

  constructor(source: ByteSource, allocator: ByteAllocator) {
    this.#source = source;
    this.#allocator = allocator;
    this.size = source.size;
  }

  get name(): string {
    return this.#source.name;
  }

  /** The file offset of the next byte to read. */
  get pos(): number {
    return this.#pos;
  }

  /** Bytes between the position and the end of the file. */
  get remaining(): number {
    return this.size - this.#pos;
  }

  /** Whether `n` bytes from the position are buffered. */
  has(n: number): boolean {
    return this.#pos + n <= this.#start + this.#length;
  }

  /** Makes `n` bytes from the position available; `what` names the item for the error when the file is too short. */
  async fill(n: number, what: string): Promise<void> {
    if (this.has(n)) return;
    if (n > this.remaining) {
      throw new WeightsFormatError(this.name, `the file ends at ${this.size} bytes, inside ${what} (at offset ${this.#pos}, ${n} bytes needed)`);
    }
    const want = Math.min(Math.max(n, CHUNK_BYTES), this.remaining);
    if (this.#buffer.length < want) {
      // Grow geometrically so a run of growing items costs O(largest), never past the file.
      const size = Math.min(Math.max(want, this.#buffer.length * 2), this.remaining);
      this.#buffer = this.#allocator.allocate(size, 'GGUF header');
      this.#view = new DataView(this.#buffer.buffer, this.#buffer.byteOffset, this.#buffer.byteLength);
    }
    const length = Math.min(this.#buffer.length, this.remaining);
    await this.#source.readInto(this.#pos, this.#buffer.subarray(0, length));
    this.#start = this.#pos;
    this.#length = length;
  }

  #at(n: number): number {
    // A programming error (a getter without fill), not a file problem: fail loudly.
    if (!this.has(n)) throw new Error(`GGUF cursor: ${n} bytes at ${this.#pos} are not buffered`);
    const at = this.#pos - this.#start;
    this.#pos += n;
    return at;
  }

  u8(): number {
    return this.#buffer[this.#at(1)]!;
  }
  i8(): number {
    return this.#view.getInt8(this.#at(1));
  }
  u16(): number {
    return this.#view.getUint16(this.#at(2), true);
  }
  i16(): number {
    return this.#view.getInt16(this.#at(2), true);
  }
  u32(): number {
    return this.#view.getUint32(this.#at(4), true);
  }
  i32(): number {
    return this.#view.getInt32(this.#at(4), true);
  }
  u64(): bigint {
    return this.#view.getBigUint64(this.#at(8), true);
  }
  i64(): bigint {
    return this.#view.getBigInt64(this.#at(8), true);
  }
  f32(): number {
    return this.#view.getFloat32(this.#at(4), true);
  }
  f64(): number {
    return this.#view.getFloat64(this.#at(8), true);
  }
  /** Raw bytes (a view into the window: copy before the next fill if they must outlive it). */
  bytes(n: number): Uint8Array {
    const at = this.#at(n);
    return this.#buffer.subarray(at, at + n);
  }

  /**
   * `n` bytes as UTF-8. Strict (a WeightsFormatError on invalid UTF-8) for names and keys,
   * which must match exactly; lenient (U+FFFD) for string values, because real tokenizer
   * vocabularies sometimes hold byte fragments that are not valid UTF-8 on their own.
   */
  text(n: number, strict: boolean, what: string): string {
    const at = this.#pos;
    const bytes = this.bytes(n);
    if (!strict) return this.#lenientDecoder.decode(bytes);
    try {
      return this.#decoder.decode(bytes);
    } catch (cause) {
      throw new WeightsFormatError(this.name, `${what} at offset ${at} is not valid UTF-8`, { cause });
    }
  }
}
