import { MultiGpuError } from '../errors.ts';

/** A model's math asked an op for shapes that don't fit: a bug in a model definition, or a checkpoint that isn't what its config says. */
export class RuntimeShapeError extends MultiGpuError {
  constructor(message: string) {
    super('E_RUNTIME_SHAPE', message, { hint: 'the checkpoint does not match its config.json, or the model family is wrong (--family)' });
  }
}

export function elementsOf(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

export function normalizeAxis(op: string, axis: number, rank: number): number {
  const ax = axis < 0 ? axis + rank : axis;
  if (!Number.isInteger(ax) || ax < 0 || ax >= rank) throw new RuntimeShapeError(`${op}: axis ${axis} is outside a rank-${rank} tensor`);
  return ax;
}

export function checkSlice(shape: readonly number[], axis: number, start: number, length: number): void {
  if (!Number.isInteger(start) || !Number.isInteger(length) || start < 0 || length < 1 || start + length > shape[axis]!) {
    throw new RuntimeShapeError(`slice: [${start}, ${start + length}) is outside axis ${axis} of [${shape.join(', ')}]`);
  }
}

/** NumPy broadcasting of two shapes. */
export function broadcastShape(op: string, a: readonly number[], b: readonly number[]): number[] {
  const rank = Math.max(a.length, b.length);
  const out: number[] = [];
  for (let i = 0; i < rank; i++) {
    const x = a[a.length - rank + i] ?? 1;
    const y = b[b.length - rank + i] ?? 1;
    if (x !== y && x !== 1 && y !== 1) throw new RuntimeShapeError(`${op}: [${a.join(', ')}] and [${b.join(', ')}] do not broadcast`);
    out.push(x === 1 ? y : x);
  }
  return out;
}
