/**
 * The allocation string of SPEC §2:
 *
 * ```
 * allocation := entry ( ";" entry )*          an empty string means "simple mode"
 * entry      := device "," amount
 * amount     := number unit | number "%" | number | "*" | number unit "*"
 * number     := digits with an optional decimal part (".5", "0.5", "5.")
 * ```
 *
 * A hand-written scanner rather than one regular expression, so every error can say which
 * character is wrong and what to write instead. Differences from DisTorch2 (each a defect
 * there): `.5gb` parses, `tb` is terabytes, `1,5gb` is an error, the mode comes from the
 * amounts and never from letters in device names, duplicates are an error, `*` works in
 * ratio mode, unknown devices are a clear error.
 */
import { BYTE_UNITS } from './bytes.ts';
import {
  AllocationAllZeroRatiosError,
  AllocationBadNumberError,
  AllocationDeviceNotPresentError,
  AllocationDuplicateDeviceError,
  AllocationEmptyEntryError,
  AllocationFractionAboveOneError,
  AllocationMissingCommaError,
  AllocationMixedModesError,
  AllocationRatioOverflowError,
  AllocationTwoWildcardsError,
  AllocationUnknownDeviceError,
  AllocationUnknownUnitError,
  quote,
  type AllocationMode,
  type BadNumberReason,
} from './errors.ts';
import { canonicalDeviceName, GPU_ALIASES, parseDeviceName, UnknownDeviceError } from '../devices/names.ts';

export type { AllocationMode } from './errors.ts';

export type AllocationAmount =
  | { kind: 'bytes'; bytes: number }
  | { kind: 'ratio'; percent: number }
  | { kind: 'fraction'; value: number }
  | { kind: 'wildcard' };

export interface AllocationEntry {
  /** Canonical: "gpu:N" or "cpu". */
  device: string;
  /** The entry as typed, without the spaces around it. */
  written: string;
  /** 0-based index in the string of the entry's first character. */
  position: number;
  amount: AllocationAmount;
}

export interface ParsedAllocation {
  text: string;
  /** 'simple' for an empty string; a string of wildcards only is 'bytes'. */
  mode: AllocationMode | 'simple';
  entries: AllocationEntry[];
  /** Canonical device that takes what is left, when a "*" was written; else null. */
  wildcard: string | null;
  warnings: string[];
}

export interface ParseAllocationOptions {
  /** Canonical names of the devices on this machine; a device not among them is an error. */
  devices?: readonly string[];
}

/** Example amounts used in hints, one per mode. */
const EXAMPLE: Readonly<Record<AllocationMode, string>> = { bytes: '4gb', ratio: '50%', fraction: '0.5' };

const UNIT_LIST = 'b, k, kb, kib, m, mb, mib, g, gb, gib, t, tb, tib (1024-based)';
const DEVICE_LIST = `devices are cpu and gpu:N (N as \`multigpu devices\` numbers them), also written ${
  GPU_ALIASES.filter((a) => a !== 'gpu').map((a) => `${a}:N`).join(', ')} or mps (= gpu:0)`;

const isSpace = (ch: string | undefined): boolean => ch !== undefined && /\s/.test(ch);
const isDigit = (ch: string | undefined): boolean => ch !== undefined && ch >= '0' && ch <= '9';
const isLetter = (ch: string | undefined): boolean => ch !== undefined && /^[A-Za-z]$/.test(ch);

/** Rounds away binary noise (0.1 + 0.2) for sums shown to people. */
const tidy = (n: number): number => Number(n.toPrecision(12));

interface Piece {
  /** Index of the piece's first character (just after the separator before it). */
  start: number;
  /** Index just past the piece's last character (the next separator, or the end). */
  end: number;
  /** First non-space character; equals `end` for a blank piece. */
  lead: number;
  /** Just past the last non-space character. */
  trail: number;
}

/**
 * Splits on `separator`, keeping positions. A blank piece is an error, except one after the
 * last separator (a trailing ";" or "," is tolerated).
 */
function splitPieces(text: string, separator: string): Piece[] {
  const pieces: Piece[] = [];
  let start = 0;
  for (;;) {
    const at = text.indexOf(separator, start);
    const end = at === -1 ? text.length : at;
    let lead = start;
    while (lead < end && isSpace(text[lead])) lead++;
    let trail = end;
    while (trail > lead && isSpace(text[trail - 1])) trail--;
    pieces.push({ start, end, lead, trail });
    if (at === -1) break;
    start = at + 1;
  }
  const kept: Piece[] = [];
  pieces.forEach((piece, i) => {
    if (piece.lead < piece.trail) {
      kept.push(piece);
      return;
    }
    if (i === pieces.length - 1 && i > 0) return; // a trailing separator
    const fixed = i === 0
      ? text.slice(piece.end + 1)
      : text.slice(0, piece.start - 1) + text.slice(piece.end);
    throw new AllocationEmptyEntryError({ text, entry: text, position: piece.start },
      `remove the extra ${quote(separator)}: ${quote(fixed)}`);
  });
  return kept;
}

/** The canonical name, or null if `device` is no device name. */
function resolveDevice(device: string): string | null {
  try {
    return canonicalDeviceName(parseDeviceName(device));
  } catch (error) {
    if (error instanceof UnknownDeviceError) return null;
    throw error;
  }
}

/** A likely meant device name for a wrong one ("cuda0" → "cuda:0"), or null. */
function guessDevice(device: string): string | null {
  const t = device.toLowerCase().replace(/\s+/g, '');
  let m = /^([a-z]+):?(\d+)$/.exec(t);
  if (m) {
    const name = m[1]!;
    const index = m[2]!;
    if (GPU_ALIASES.includes(name)) return `${name}:${Number(index)}`;
    if (name === 'mps') return Number(index) === 0 ? 'mps' : `gpu:${Number(index)}`;
    if (name === 'cpu') return 'cpu';
    return `gpu:${Number(index)}`;
  }
  m = /^([a-z]+):?$/.exec(t);
  if (m && GPU_ALIASES.includes(m[1]!)) return `${m[1]}:0`;
  return null;
}

function unknownDeviceHint(device: string, rest: string): string {
  const guess = guessDevice(device);
  if (device === '') return `write a device before the comma, e.g. ${quote(`gpu:0${rest}`)}`;
  if (guess !== null) return `did you mean ${quote(`${guess}${rest}`)}? ${DEVICE_LIST}`;
  return `${DEVICE_LIST}: e.g. ${quote(`gpu:0${rest}`)}`;
}

/** Normalises `options.devices` to canonical names (lenient about spelling). */
function presentDevices(options: ParseAllocationOptions | undefined): string[] | null {
  if (!options?.devices) return null;
  return options.devices.map((d) => resolveDevice(d) ?? d.trim().toLowerCase());
}

function notPresentError(text: string, entry: string, position: number, device: string, written: string,
  present: readonly string[], used: ReadonlySet<string>, rest: string): AllocationDeviceNotPresentError {
  const spare = present.find((d) => !used.has(d)) ?? present[0];
  const have = present.length > 0 ? `this machine has ${present.join(', ')}` : 'this machine has no devices';
  const fix = spare !== undefined ? `: use one of those, e.g. ${quote(`${spare}${rest}`)}` : '';
  return new AllocationDeviceNotPresentError({ text, entry, position }, device, written, present,
    `${have} (see \`multigpu devices\`)${fix}`);
}

/** One scanned amount, before the mode checks. */
interface Amount {
  kind: AllocationMode | 'wildcard';
  /** For bytes/ratio/fraction: the parsed number in its own unit (bytes, percent, fraction). */
  value: number;
  /** Index of the amount's first character. */
  position: number;
  /** The amount as typed. */
  text: string;
  /** The seed's "5gb*": a number and unit before "*", ignored. */
  ignored: { kind: AllocationMode; text: string } | null;
}

/**
 * Scans the amount in text[from, to) (to is just past the entry's last non-space character).
 * `device` is the device as typed, used in hints; `mode` the string's mode so far.
 */
function scanAmount(text: string, entry: string, device: string, from: number, to: number,
  mode: AllocationMode | null): Amount {
  let i = from;
  while (i < to && isSpace(text[i])) i++;
  const position = i;
  const amountText = text.slice(position, to);
  const example = EXAMPLE[mode ?? 'bytes'];
  const bad = (reason: BadNumberReason, at: number, detail: string, hint: string): AllocationBadNumberError =>
    new AllocationBadNumberError({ text, entry, position: at }, reason, amountText, detail, hint);
  const generic = `an amount is a byte size (4gb), a ratio (50%), a fraction (0.5) or * for whatever is left`;

  if (i >= to) {
    throw bad('empty', i, '', `write an amount after the comma, e.g. ${quote(`${device},${example}`)} or ${quote(`${device},*`)}`);
  }
  const first = text[i];
  if (first === '-') {
    const rest = text.slice(i + 1, to).trim();
    const fixed = /^(\d+(\.\d*)?|\.\d+)\s*([a-z]*|%)\s*\*?$/i.test(rest) ? rest : example;
    throw bad('negative', i, 'amounts can\'t be negative', `write 0 or more, e.g. ${quote(`${device},${fixed}`)}`);
  }
  if (first === '+') {
    throw bad('sign', i, 'an amount takes no sign', `write ${quote(`${device},${text.slice(i + 1, to).trim()}`)}`);
  }
  if (first === '*') {
    i++;
    while (i < to && isSpace(text[i])) i++;
    if (i < to) {
      throw bad('unexpected', i, `unexpected ${quote(text[i]!)} after the amount "*"`, `write ${quote(`${device},*`)}`);
    }
    return { kind: 'wildcard', value: 0, position, text: amountText, ignored: null };
  }

  while (isDigit(text[i])) i++;
  if (text[i] === '.') {
    i++;
    while (isDigit(text[i])) i++;
  }
  const numberText = text.slice(position, i);
  if (!/\d/.test(numberText)) {
    let j = i;
    while (isLetter(text[j])) j++;
    const letters = text.slice(i, j).toLowerCase();
    const fix = letters !== '' && BYTE_UNITS[letters] !== undefined && j === to ? `4${text.slice(i, j)}`
      : text[i] === '%' ? '50%' : example;
    throw bad('no-digits', position, 'the amount has no number', `${generic}: e.g. ${quote(`${device},${fix}`)}`);
  }
  if (text[i] === '.') {
    throw bad('two-points', i, 'a number has at most one decimal point',
      `write one decimal point, e.g. ${quote(`${device},1.5${mode === 'ratio' ? '%' : mode === 'fraction' ? '' : 'gb'}`)}`);
  }
  if ((text[i] === 'e' || text[i] === 'E') &&
    (isDigit(text[i + 1]) || ((text[i + 1] === '+' || text[i + 1] === '-') && isDigit(text[i + 2])))) {
    let j = i + 2;
    while (isDigit(text[j])) j++;
    const value = Number(text.slice(position, j));
    const tail = text.slice(j, to).trim();
    const written = String(value);
    const hint = Number.isFinite(value) && !/e/i.test(written)
      ? `write the number out: ${quote(`${device},${written}${tail}`)}`
      : `write the number out in digits, e.g. ${quote(`${device},${example}`)}`;
    throw bad('exponent', i, 'exponents are not accepted', hint);
  }

  let j = i;
  while (j < to && isSpace(text[j])) j++;
  if (text[j] === ',') {
    let k = j + 1;
    while (k < to && isSpace(text[k])) k++;
    if (isDigit(text[k])) {
      const fixed = `${numberText}.${text.slice(k, to)}`;
      throw bad('decimal-comma', j, '"," is not a decimal point', `write ${quote(`${device},${fixed}`)}`);
    }
  }

  let kind: AllocationMode;
  let unit = 1;
  if (isLetter(text[j])) {
    let k = j;
    while (isLetter(text[k])) k++;
    const unitText = text.slice(j, k);
    const known = BYTE_UNITS[unitText.toLowerCase()];
    if (known === undefined) {
      throw new AllocationUnknownUnitError({ text, entry, position: j }, unitText,
        `units are ${UNIT_LIST}: e.g. ${quote(`${device},${numberText}gb`)}`);
    }
    kind = 'bytes';
    unit = known;
    j = k;
  } else if (text[j] === '%') {
    kind = 'ratio';
    j++;
  } else {
    kind = 'fraction';
    j = i; // spaces after a bare number belong to what follows
  }
  const valueEnd = j;
  while (j < to && isSpace(text[j])) j++;
  let star = false;
  if (text[j] === '*') {
    star = true;
    j++;
    while (j < to && isSpace(text[j])) j++;
  }
  if (j < to) {
    const ch = text[j]!;
    let hint: string;
    if (ch === ',' && !star) {
      hint = `separate entries with ";": ${quote(`${text.slice(0, j)};${text.slice(j + 1)}`)}`;
    } else {
      hint = `write ${quote(`${device},${text.slice(position, star ? j : valueEnd).trim()}`)}`; // drop what follows
    }
    const valid = text.slice(position, star ? j : valueEnd).trim();
    throw bad('unexpected', j, `unexpected ${quote(ch)} after the amount ${quote(valid)}`, hint);
  }

  const number = Number(numberText);
  const value = kind === 'bytes' ? Math.floor(number * unit) : number;
  if (!Number.isFinite(value) || (kind === 'bytes' && !Number.isSafeInteger(value))) {
    throw bad('too-large', position, 'too large',
      `write a smaller number, e.g. ${quote(`${device},${kind === 'bytes' ? '8000tb' : kind === 'ratio' ? '100%' : '1'}`)}`);
  }
  if (star) {
    return {
      kind: 'wildcard', value: 0, position, text: amountText,
      ignored: { kind, text: text.slice(position, valueEnd).trim() },
    };
  }
  return { kind, value, position, text: amountText, ignored: null };
}

/** A byte count as the shortest amount that parses back to exactly it ("3.5gb", else "123b"). */
function bytesAmount(bytes: number): string {
  for (const unit of ['tb', 'gb', 'mb', 'kb']) {
    const size = BYTE_UNITS[unit]!;
    if (bytes < size) continue;
    const shown = tidy(Number((bytes / size).toFixed(3)));
    if (Math.floor(shown * size) === bytes) return `${shown}${unit}`;
  }
  return `${bytes}b`;
}

interface Seen {
  entry: string;
  position: number;
  device: string;
  deviceText: string;
  amount: Amount;
}

/**
 * Parses an allocation string (SPEC §2). Throws an `AllocationError` subclass on any
 * problem; returns mode 'simple' with no entries for an empty or blank string.
 */
export function parseAllocation(text: string, options?: ParseAllocationOptions): ParsedAllocation {
  const warnings: string[] = [];
  if (text.trim() === '') return { text, mode: 'simple', entries: [], wildcard: null, warnings };
  const present = presentDevices(options);
  const pieces = splitPieces(text, ';');

  const seen: Seen[] = [];
  const byDevice = new Map<string, Seen>();
  let modeSetter: Seen | null = null;
  let wildcard: Seen | null = null;

  for (const piece of pieces) {
    const entry = text.slice(piece.lead, piece.trail);
    const position = piece.lead;
    const comma = text.indexOf(',', position);
    if (comma === -1 || comma >= piece.trail) throw missingComma(text, entry, position);

    const deviceText = text.slice(position, comma).trim();
    const rest = `,${text.slice(comma + 1, piece.trail).trim()}`; // ",amount", for hints
    const device = resolveDevice(deviceText);
    if (device === null) {
      throw new AllocationUnknownDeviceError({ text, entry, position }, deviceText, unknownDeviceHint(deviceText, rest));
    }
    if (present !== null && !present.includes(device)) {
      throw notPresentError(text, entry, position, device, deviceText, present, new Set(byDevice.keys()), rest);
    }
    const earlier = byDevice.get(device);
    if (earlier) throw duplicate(text, entry, position, piece, device, earlier, comma);

    const mode = modeSetter ? modeOf(modeSetter.amount) : null;
    const amount = scanAmount(text, entry, deviceText, comma + 1, piece.trail, mode);
    const current: Seen = { entry, position, device, deviceText, amount };

    const kind = amount.kind === 'wildcard' ? amount.ignored?.kind ?? null : amount.kind;
    if (kind !== null) {
      if (modeSetter === null) {
        modeSetter = current;
      } else {
        const firstMode = modeOf(modeSetter.amount);
        if (kind !== firstMode) {
          throw new AllocationMixedModesError({ text, entry, position: amount.position }, kind,
            { entry: modeSetter.entry, position: modeSetter.amount.position, mode: firstMode },
            `one string uses one mode, and ${quote(modeSetter.entry)} made it ${firstMode}: write ${
              quote(`${deviceText},${EXAMPLE[firstMode]}`)} or ${quote(`${deviceText},*`)} for whatever is left`);
        }
      }
    }

    if (amount.kind === 'wildcard') {
      if (wildcard !== null) {
        const example = EXAMPLE[modeSetter ? modeOf(modeSetter.amount) : 'bytes'];
        throw new AllocationTwoWildcardsError({ text, entry, position: amount.position },
          { entry: wildcard.entry, position: wildcard.amount.position },
          `only one device can take whatever is left: give ${deviceText} an amount, e.g. ${quote(`${deviceText},${example}`)}`);
      }
      wildcard = current;
      if (amount.ignored) {
        warnings.push(`entry ${quote(entry)}: the amount ${amount.ignored.text} before "*" is ignored; "*" takes ` +
          `whatever is left (write ${quote(`${deviceText},*`)})`);
      }
    }

    if (amount.kind === 'fraction' && amount.value > 1) {
      if (device !== 'cpu') {
        throw new AllocationFractionAboveOneError({ text, entry, position: amount.position }, device, amount.value,
          `a fraction is a share of the GPU's capacity, at most 1: write ${quote(`${deviceText},1`)} for all of it`);
      }
      warnings.push(`entry ${quote(entry)}: ${amount.value} is more than the host's whole memory`);
    }

    seen.push(current);
    byDevice.set(device, current);
  }

  const mode: AllocationMode = modeSetter ? modeOf(modeSetter.amount) : 'bytes';
  if (mode === 'ratio') {
    const ratios = seen.filter((s) => s.amount.kind === 'ratio');
    const total = tidy(ratios.reduce((sum, s) => sum + s.amount.value, 0));
    if (wildcard === null && ratios.length > 0 && total === 0) {
      const last = ratios[ratios.length - 1]!;
      const fixed = `${text.slice(0, last.amount.position)}*${text.slice(last.amount.position + last.amount.text.length)}`;
      throw new AllocationAllZeroRatiosError({ text, entry: text, position: ratios[0]!.amount.position },
        `give a device a share above 0%, or let one take whatever is left: ${quote(fixed)}`);
    }
    if (wildcard !== null && total > 100) {
      throw new AllocationRatioOverflowError({ text, entry: wildcard.entry, position: wildcard.amount.position }, total,
        `with "*" the wildcard gets 100% minus the others: make the others add up to 100% or less, or give ${
          wildcard.deviceText} a share instead of "*" (shares without "*" are normalised by their sum), e.g. ${
          quote(`${wildcard.deviceText},10%`)}`);
    }
  }

  return {
    text,
    mode,
    entries: seen.map((s) => ({ device: s.device, written: s.entry, position: s.position, amount: publicAmount(s.amount) })),
    wildcard: wildcard?.device ?? null,
    warnings,
  };
}

function modeOf(amount: Amount): AllocationMode {
  if (amount.kind !== 'wildcard') return amount.kind;
  if (amount.ignored) return amount.ignored.kind;
  throw new Error('unreachable: a plain wildcard sets no mode');
}

function publicAmount(amount: Amount): AllocationAmount {
  switch (amount.kind) {
    case 'bytes': return { kind: 'bytes', bytes: amount.value };
    case 'ratio': return { kind: 'ratio', percent: amount.value };
    case 'fraction': return { kind: 'fraction', value: amount.value };
    case 'wildcard': return { kind: 'wildcard' };
  }
}

/** An entry without a comma: points where the comma belongs when that is clear. */
function missingComma(text: string, entry: string, position: number): AllocationMissingCommaError {
  const place = { text, entry, position };
  const m = /^(cpu|mps|[a-z]+\s*:\s*\d+)(\s*[:=]\s*|\s+)(\S.*)$/is.exec(entry);
  if (m && resolveDevice(m[1]!) !== null) {
    const gap = m[2]!;
    const at = position + m[1]!.length + (/[:=]/.test(gap) ? gap.search(/[:=]/) : 0);
    return new AllocationMissingCommaError({ ...place, position: at },
      `put a comma between the device and the amount: ${quote(`${m[1]},${m[3]}`)}`);
  }
  if (resolveDevice(entry) !== null) {
    return new AllocationMissingCommaError({ ...place, position: position + entry.length },
      `add a comma and an amount: ${quote(`${entry},4gb`)}, or ${quote(`${entry},*`)} for whatever is left`);
  }
  return new AllocationMissingCommaError(place,
    `write the device, a comma, then the amount, e.g. "gpu:0,4gb" (entries are separated by ";")`);
}

/** The duplicate error, with a merged entry as the fix where the two amounts add up. */
function duplicate(text: string, entry: string, position: number, piece: Piece, device: string,
  earlier: Seen, comma: number): AllocationDuplicateDeviceError {
  let merged: string | null = null;
  try {
    const amount = scanAmount(text, entry, earlier.deviceText, comma + 1, piece.trail, null);
    const a = earlier.amount;
    if (amount.kind === a.kind) {
      const sum = a.value + amount.value;
      if (a.kind === 'bytes') merged = bytesAmount(sum);
      else if (a.kind === 'ratio') merged = `${tidy(sum)}%`;
      else if (a.kind === 'fraction' && (device === 'cpu' || tidy(sum) <= 1)) merged = `${tidy(sum)}`;
    }
  } catch {
    merged = null; // the second amount is itself wrong: suggest removing the entry instead
  }
  const removed = piece.start === 0
    ? text.slice(piece.end + 1)
    : text.slice(0, piece.start - 1) + text.slice(piece.end);
  const hint = merged !== null
    ? `list each device once: merge the two into ${quote(`${earlier.deviceText},${merged}`)}`
    : `list each device once: ${quote(removed.trim())}`;
  return new AllocationDuplicateDeviceError({ text, entry, position }, device,
    { entry: earlier.entry, position: earlier.position }, hint);
}

/**
 * Parses simple mode's donor list ("cpu", "gpu:1,cpu"): devices separated by commas, in
 * order. An empty string gives []; the default donor (cpu) is the caller's business.
 */
export function parseDonors(text: string, options?: ParseAllocationOptions): string[] {
  if (text.trim() === '') return [];
  const present = presentDevices(options);
  const donors: string[] = [];
  const where = new Map<string, { entry: string; position: number }>();
  for (const piece of splitPieces(text, ',')) {
    const entry = text.slice(piece.lead, piece.trail);
    const position = piece.lead;
    const device = resolveDevice(entry);
    if (device === null) {
      let hint: string;
      if (entry.includes(';')) {
        hint = `separate donors with ",": ${quote(text.replaceAll(';', ','))}`;
      } else if (/^[\d.*+-]/.test(entry)) {
        hint = `donors take no amounts (the bytes to move are virtualVram): ${quote(text.slice(0, piece.start).replace(/,\s*$/, '') || 'cpu')}`;
      } else {
        hint = unknownDeviceHint(entry, '');
      }
      throw new AllocationUnknownDeviceError({ text, entry, position }, entry, hint);
    }
    if (present !== null && !present.includes(device)) {
      throw notPresentError(text, entry, position, device, entry, present, new Set(donors), '');
    }
    const earlier = where.get(device);
    if (earlier) {
      const removed = text.slice(0, piece.start - 1) + text.slice(piece.end);
      throw new AllocationDuplicateDeviceError({ text, entry, position }, device, earlier,
        `list each donor once: ${quote(removed.trim())}`);
    }
    donors.push(device);
    where.set(device, { entry, position });
  }
  return donors;
}
