/**
 * The root of every error a user of MultiGPU-Web can meet. Each one carries a stable
 * `code` (for programs), a message that says what was wrong and where, and a `hint`
 * that says what to do about it (for people).
 */
export class MultiGpuError extends Error {
  readonly code: string;
  readonly hint: string | undefined;

  constructor(code: string, message: string, options: { hint?: string; cause?: unknown } = {}) {
    super(options.hint ? `${message}\n  hint: ${options.hint}` : message, { cause: options.cause });
    this.name = new.target.name;
    this.code = code;
    this.hint = options.hint;
  }
}

/** Bad input from the command line or an option object: the CLI exits with code 2. */
export class UsageError extends MultiGpuError {
  constructor(message: string, options: { hint?: string; cause?: unknown } = {}) {
    super('E_USAGE', message, options);
  }
}
