import { MultiGpuError } from '../errors.ts';

/**
 * A weights file that is not what it claims to be: a bad header, offsets that don't add
 * up, an unknown dtype, a truncated file. Always names the file and the problem, and is
 * raised before any of the file's data is used.
 */
export class WeightsFormatError extends MultiGpuError {
  readonly file: string;
  readonly problem: string;

  constructor(file: string, problem: string, options: { hint?: string; cause?: unknown } = {}) {
    super('E_WEIGHTS_FORMAT', `${file}: ${problem}`, {
      hint: options.hint ?? 'the file is corrupt, truncated or not this format: download or convert it again',
      cause: options.cause,
    });
    this.file = file;
    this.problem = problem;
  }
}

/** A tensor, component or file that was asked for but is not there. */
export class WeightsNotFoundError extends MultiGpuError {
  readonly file: string;
  constructor(file: string, what: string, available: readonly string[]) {
    const sample = available.slice(0, 8).join(', ') + (available.length > 8 ? `, … (${available.length} in all)` : '');
    super('E_WEIGHTS_NOT_FOUND', `${file}: no ${what}`, { hint: available.length ? `it has: ${sample}` : 'it is empty' });
    this.file = file;
  }
}
