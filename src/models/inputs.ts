import type { HostTensor } from './program.ts';

/** [batch, length] of the input_ids a text model was given (a RangeError names what came instead). */
export function inputIdsShape(inputs: ReadonlyMap<string, HostTensor>): [number, number] {
  const ids = inputs.get('input_ids');
  if (!ids || ids.shape.length !== 2) throw new RangeError(`input_ids must be [batch, length], got ${ids ? `[${ids.shape.join(', ')}]` : 'nothing'}`);
  return [ids.shape[0]!, ids.shape[1]!];
}
