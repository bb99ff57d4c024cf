import { parseAllocation } from '../allocation/grammar.ts';

/**
 * The allocation string without the entries of lost devices: the remaining entries as written;
 * when the lost device was the one that took the remainder, cpu takes it instead ("cpu,*"), so
 * the re-plan still places every block. An empty (simple-mode) string stays as it is.
 */
export function allocationWithout(text: string, lost: ReadonlySet<string>): string {
  const parsed = parseAllocation(text);
  if (lost.size === 0 || parsed.mode === 'simple') return text;
  const kept = parsed.entries.filter((e) => !lost.has(e.device));
  if (parsed.wildcard !== null && !lost.has(parsed.wildcard)) return kept.map((e) => e.written).join(';');
  const parts = kept.filter((e) => e.device !== 'cpu').map((e) => e.written);
  parts.push('cpu,*');
  return parts.join(';');
}
