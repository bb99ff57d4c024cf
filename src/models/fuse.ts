import type { WeightSet } from '../formats/weights.ts';
import type { CanonicalTensor } from './program.ts';

/** A canonical tensor's dtype and shape as it will be read (after its cut). */
function formOf(weights: WeightSet, c: CanonicalTensor): { dtype: string; shape: readonly number[] } | null {
  if (c.parts || c.transpose) return null;
  const t = weights.tensors.get(c.source);
  if (!t) return null;
  return { dtype: t.dtype, shape: c.rows ? [c.rows.count, ...t.shape.slice(1)] : t.shape };
}

/** The canonical entries of `names` if they can be stacked along their first dimension: same dtype, same trailing shape. */
export function stackable(index: ReadonlyMap<string, CanonicalTensor>, weights: WeightSet, names: readonly string[]): CanonicalTensor[] | null {
  const entries = names.map((n) => index.get(n) ?? (weights.tensors.has(n) ? { source: n } : null));
  if (entries.some((e) => e === null)) return null;
  const forms = (entries as CanonicalTensor[]).map((e) => formOf(weights, e));
  const first = forms[0];
  if (!first || forms.some((f) => !f || f.dtype !== first.dtype || f.shape.slice(1).join() !== first.shape.slice(1).join())) return null;
  return entries as CanonicalTensor[];
}

/**
 * Replaces projections that read the same input (Llama's q/k/v, gate/up) by one canonical
 * tensor stacking them, so one kernel runs them all (one dispatch, the input read once); the
 * model splits the output (Backend.linearParts). Each group is all or nothing: when one of
 * them can't be stacked (a GGUF file that quantized v differently from q and k), the group
 * stays as it was and the model runs the projections one by one.
 */
export function fuseRows(index: Map<string, CanonicalTensor>, weights: WeightSet, groups: ReadonlyArray<{ readonly name: string; readonly parts: readonly string[] }>): boolean {
  const stacks = groups.map((g) => stackable(index, weights, g.parts));
  if (stacks.some((s) => s === null)) return false;
  groups.forEach((g, i) => {
    const parts = stacks[i]!;
    for (const n of g.parts) index.delete(n);
    index.set(g.name, { source: parts[0]!.source, parts });
  });
  return true;
}
