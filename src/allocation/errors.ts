import { MultiGpuError } from '../errors.ts';

/**
 * Typed errors of the allocation string (SPEC §2). Every one names the problem, the entry
 * and the character, shows the string with a caret under that character, and carries a
 * concrete fix in `hint`:
 *
 * ```
 * unknown unit "zb" in entry "cuda:0,4zb" at character 9
 *   cuda:0,4zb;cpu,*
 *          ^
 *   hint: ...
 * ```
 *
 * `position` is 0-based (a string index); the message counts characters from 1, as an
 * editor's column does, so "at character 9" is `position` 8.
 */

/** The three modes an allocation string can be in, plus simple mode (an empty string). */
export type AllocationMode = 'bytes' | 'ratio' | 'fraction';

/** A place in the string: an entry as typed and the 0-based index of a character. */
export interface AllocationPlace {
  readonly entry: string;
  readonly position: number;
}

const SNIPPET_WIDTH = 100;

/** JSON quoting: shows control characters and quotes unambiguously. */
export function quote(text: string): string {
  return JSON.stringify(text);
}

const tidyPercent = (n: number): number => Number(n.toPrecision(12));

/** "at character N" with N counted from 1. */
export function characterAt(position: number): string {
  return `at character ${position + 1}`;
}

/**
 * The string on one line (control characters shown as spaces so the columns stay put) with a
 * caret under `position`; long strings are cut to a window around the caret.
 */
export function caretSnippet(text: string, position: number): string {
  let shown = text.replace(/[\u0000-\u001f\u007f-\u009f\u2028\u2029]/g, ' ');
  let column = Math.max(0, Math.min(position, shown.length));
  if (shown.length > SNIPPET_WIDTH) {
    const start = Math.max(0, Math.min(column - SNIPPET_WIDTH / 2, shown.length - SNIPPET_WIDTH));
    const end = Math.min(shown.length, start + SNIPPET_WIDTH);
    const head = start > 0 ? '…' : '';
    shown = head + shown.slice(start, end) + (end < shown.length ? '…' : '');
    column = column - start + head.length;
  }
  return `  ${shown}\n  ${' '.repeat(column)}^`;
}

/** Base of every error in an allocation string or a donor list. */
export abstract class AllocationError extends MultiGpuError {
  /** The whole string that was parsed. */
  readonly text: string;
  /** The entry as typed (trimmed), or the whole string for problems of the whole string. */
  readonly entry: string;
  /** 0-based index in `text` of the character where the problem is. */
  readonly position: number;
  /** The message's first line: what is wrong, in which entry, at which character. */
  readonly problem: string;

  protected constructor(code: string, problem: string, place: { text: string; entry: string; position: number; hint: string }) {
    super(code, `${problem}\n${caretSnippet(place.text, place.position)}`, { hint: place.hint });
    this.text = place.text;
    this.entry = place.entry;
    this.position = place.position;
    this.problem = problem;
  }
}

type Place = { text: string; entry: string; position: number };

/** A device name that is none of cpu, gpu:N or their aliases (or no name at all). */
export class AllocationUnknownDeviceError extends AllocationError {
  /** The device as typed (trimmed). */
  readonly device: string;
  constructor(place: Place, device: string, hint: string) {
    const problem = device === ''
      ? `missing device in entry ${quote(place.entry)} ${characterAt(place.position)}`
      : `unknown device ${quote(device)} in entry ${quote(place.entry)} ${characterAt(place.position)}`;
    super('E_ALLOC_UNKNOWN_DEVICE', problem, { ...place, hint });
    this.device = device;
  }
}

/** A well-formed device name this machine does not have (with `options.devices` given). */
export class AllocationDeviceNotPresentError extends AllocationError {
  /** The canonical name, e.g. "gpu:3". */
  readonly device: string;
  readonly present: readonly string[];
  constructor(place: Place, device: string, written: string, present: readonly string[], hint: string) {
    const as = written.replace(/\s+/g, '').toLowerCase() === device ? '' : ` (written ${quote(written)})`;
    super('E_ALLOC_DEVICE_NOT_PRESENT',
      `device ${device}${as} is not present on this machine, in entry ${quote(place.entry)} ${characterAt(place.position)}`,
      { ...place, hint });
    this.device = device;
    this.present = present;
  }
}

/** An entry with no comma between the device and the amount. */
export class AllocationMissingCommaError extends AllocationError {
  constructor(place: Place, hint: string) {
    super('E_ALLOC_MISSING_COMMA',
      `no comma between device and amount in entry ${quote(place.entry)} ${characterAt(place.position)}`,
      { ...place, hint });
  }
}

/** Why an amount is not a number. */
export type BadNumberReason =
  | 'empty' // nothing after the comma
  | 'negative' // "-4gb": amounts can't be negative
  | 'sign' // "+4gb"
  | 'no-digits' // "gb", ".", "abc"
  | 'decimal-comma' // "1,5gb" (DisTorch2 reads 1 byte)
  | 'exponent' // "1e3"
  | 'two-points' // "1.2.3gb"
  | 'too-large' // beyond what a double holds exactly
  | 'unexpected'; // anything after a complete amount

/** An amount that is not a (non-negative, plainly written) number, or has junk after it. */
export class AllocationBadNumberError extends AllocationError {
  readonly reason: BadNumberReason;
  /** The amount as typed (trimmed). */
  readonly amount: string;
  /**
   * `detail` says what is wrong with `amount`; for 'unexpected' it is the whole problem
   * ("unexpected "," after the amount "4gb""), for 'empty' it is not shown.
   */
  constructor(place: Place, reason: BadNumberReason, amount: string, detail: string, hint: string) {
    const at = `in entry ${quote(place.entry)} ${characterAt(place.position)}`;
    let problem: string;
    if (reason === 'empty') problem = `missing amount ${at}`;
    else if (reason === 'unexpected') problem = `${detail} ${at}`;
    else problem = `${reason === 'negative' ? 'negative amount' : 'bad number'} ${quote(amount)} ${at}: ${detail}`;
    super('E_ALLOC_BAD_NUMBER', problem, { ...place, hint });
    this.reason = reason;
    this.amount = amount;
  }
}

/** Letters after a number that are not one of the byte units. */
export class AllocationUnknownUnitError extends AllocationError {
  readonly unit: string;
  constructor(place: Place, unit: string, hint: string) {
    super('E_ALLOC_UNKNOWN_UNIT',
      `unknown unit ${quote(unit)} in entry ${quote(place.entry)} ${characterAt(place.position)}`,
      { ...place, hint });
    this.unit = unit;
  }
}

/** Two amounts of different modes (bytes, ratio, fraction) in one string. */
export class AllocationMixedModesError extends AllocationError {
  readonly mode: AllocationMode;
  /** The earlier entry that set the string's mode. */
  readonly first: AllocationPlace & { readonly mode: AllocationMode };
  constructor(place: Place, mode: AllocationMode, first: AllocationPlace & { mode: AllocationMode }, hint: string) {
    super('E_ALLOC_MIXED_MODES',
      `mixed modes: entry ${quote(place.entry)} (${mode}) ${characterAt(place.position)} ` +
      `follows entry ${quote(first.entry)} (${first.mode}) ${characterAt(first.position)}`,
      { ...place, hint });
    this.mode = mode;
    this.first = first;
  }
}

/** One device listed twice, also through aliases (`cuda:0` and `gpu:0`). */
export class AllocationDuplicateDeviceError extends AllocationError {
  /** The canonical name both entries mean. */
  readonly device: string;
  readonly first: AllocationPlace;
  constructor(place: Place, device: string, first: AllocationPlace, hint: string) {
    super('E_ALLOC_DUPLICATE_DEVICE',
      `duplicate device ${device}: entry ${quote(place.entry)} ${characterAt(place.position)} ` +
      `repeats entry ${quote(first.entry)} ${characterAt(first.position)}`,
      { ...place, hint });
    this.device = device;
    this.first = first;
  }
}

/** A second "*": only one device can take what is left. */
export class AllocationTwoWildcardsError extends AllocationError {
  readonly first: AllocationPlace;
  constructor(place: Place, first: AllocationPlace, hint: string) {
    super('E_ALLOC_TWO_WILDCARDS',
      `two wildcards: entry ${quote(place.entry)} ${characterAt(place.position)} ` +
      `and entry ${quote(first.entry)} ${characterAt(first.position)} both take what is left`,
      { ...place, hint });
    this.first = first;
  }
}

/** Ratio mode where every share is 0% and no wildcard takes the rest. */
export class AllocationAllZeroRatiosError extends AllocationError {
  constructor(place: Place, hint: string) {
    super('E_ALLOC_ALL_ZERO_RATIOS',
      `every ratio is 0% in ${quote(place.entry)} ${characterAt(place.position)}: no device gets a share`,
      { ...place, hint });
  }
}

/** Ratio mode with a wildcard, where the other shares add up to more than 100%. */
export class AllocationRatioOverflowError extends AllocationError {
  /** The sum of the written shares, in percent. */
  readonly total: number;
  constructor(place: Place, total: number, hint: string) {
    super('E_ALLOC_RATIO_OVER_100',
      `ratios add up to ${total}% before the wildcard in entry ${quote(place.entry)} ${characterAt(place.position)}: ` +
      `it would get ${tidyPercent(100 - total)}%`,
      { ...place, hint });
    this.total = total;
  }
}

/** A fraction of a GPU's capacity above 1. */
export class AllocationFractionAboveOneError extends AllocationError {
  readonly device: string;
  readonly value: number;
  constructor(place: Place, device: string, value: number, hint: string) {
    super('E_ALLOC_FRACTION_ABOVE_ONE',
      `fraction ${value} is above 1 for ${device} in entry ${quote(place.entry)} ${characterAt(place.position)}`,
      { ...place, hint });
    this.device = device;
    this.value = value;
  }
}

/** Nothing (or only spaces) between two separators, or before the first one. */
export class AllocationEmptyEntryError extends AllocationError {
  constructor(place: Place, hint: string) {
    super('E_ALLOC_EMPTY_ENTRY', `empty entry in ${quote(place.entry)} ${characterAt(place.position)}`, { ...place, hint });
  }
}
