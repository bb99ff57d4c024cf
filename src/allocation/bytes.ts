import { MultiGpuError } from '../errors.ts';

/** Every unit is 1024-based (SPEC §2): `tb` means terabytes, never bytes. */
export const BYTE_UNITS: Readonly<Record<string, number>> = Object.freeze({
  b: 1,
  k: 1024, kb: 1024, kib: 1024,
  m: 1024 ** 2, mb: 1024 ** 2, mib: 1024 ** 2,
  g: 1024 ** 3, gb: 1024 ** 3, gib: 1024 ** 3,
  t: 1024 ** 4, tb: 1024 ** 4, tib: 1024 ** 4,
});

export class InvalidByteSizeError extends MultiGpuError {
  readonly text: string;
  constructor(text: string, problem: string) {
    super('E_BYTE_SIZE', `"${text}" is not a byte size: ${problem}`, {
      hint: 'write a number with an optional decimal part and a unit, e.g. 24gb, .5gb, 512mib, 1073741824b',
    });
    this.text = text;
  }
}

const SIZE = /^\s*(\d+(?:\.\d*)?|\.\d+)\s*([a-z]*)\s*$/i;

/** Parses "24gb", ".5 GiB", "1024" (bytes) into a whole number of bytes. */
export function parseByteSize(text: string): number {
  const m = SIZE.exec(text);
  if (!m) throw new InvalidByteSizeError(text, 'expected a non-negative number followed by an optional unit');
  const unitText = (m[2] ?? '').toLowerCase();
  const unit = unitText === '' ? 1 : BYTE_UNITS[unitText];
  if (unit === undefined) {
    throw new InvalidByteSizeError(text, `unknown unit "${m[2]}" (known: ${Object.keys(BYTE_UNITS).join(' ')})`);
  }
  const bytes = Math.floor(Number(m[1]) * unit);
  if (!Number.isSafeInteger(bytes)) throw new InvalidByteSizeError(text, 'too large');
  return bytes;
}

/** "1.50 GiB": binary units, three significant figures, for messages and tables. */
export function formatBytes(bytes: number): string {
  const sign = bytes < 0 ? '-' : '';
  let value = Math.abs(bytes);
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (value >= 1024 && i < units.length - 1) {
    value /= 1024;
    i++;
  }
  const text = i === 0 ? String(value) : value >= 100 ? value.toFixed(0) : value >= 10 ? value.toFixed(1) : value.toFixed(2);
  return `${sign}${text} ${units[i]}`;
}
