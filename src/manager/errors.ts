import { MultiGpuError } from '../errors.ts';

/** No model of that name is managed. */
export class UnknownManagedModelError extends MultiGpuError {
  constructor(name: string, known: readonly string[]) {
    super('E_UNKNOWN_MODEL_NAME', `no model named "${name}" is loaded`, { hint: known.length ? `loaded: ${known.join(', ')}` : 'load it first' });
  }
}

/** A model can't run now: being loaded, used by a run, or lost with its device and not re-plannable. */
export class ModelUnusableError extends MultiGpuError {
  constructor(name: string, why: string, cause?: unknown) {
    super('E_MODEL_UNUSABLE', `model "${name}" can't be used: ${why}`, { cause });
  }
}

/**
 * Memory is short even after evicting every idle model that is not kept: says what was needed
 * where (from the planner's shortfall or the allocation that failed) and what holds the memory.
 */
export class ManagerCapacityError extends MultiGpuError {
  override readonly cause: Error;
  constructor(name: string, cause: Error, holders: ReadonlyArray<{ name: string; keepLoaded: boolean; active: number; devices: readonly string[] }>) {
    const held = holders.map((h) => `${h.name} (${h.active > 0 ? 'running' : h.keepLoaded ? 'kept' : 'idle'}; ${h.devices.join(', ')})`).join(', ');
    const first = cause.message.split('\n')[0];
    super('E_MANAGER_CAPACITY', `model "${name}" does not fit, and no idle model that is not kept is left to free: ${first}${held ? `; loaded: ${held}` : ''}`, {
      cause,
      hint: 'load with a smaller share on the short device (or "cpu,*" last), unload a kept model, or mark models keepLoaded: false so they can be evicted',
    });
    this.cause = cause;
  }
}

