/** Left-aligned text columns, numbers right-aligned: what a terminal table needs, no more. */
export function formatTable(header: readonly string[], rows: ReadonlyArray<readonly string[]>): string {
  const numeric = header.map((_, c) => rows.length > 0 && rows.every((r) => /^[\d.,]+( [KMGT]?i?B)?$/.test(r[c] ?? '')));
  const widths = header.map((h, c) => Math.max(h.length, ...rows.map((r) => (r[c] ?? '').length)));
  const line = (cells: readonly string[]) =>
    cells.map((cell, c) => (numeric[c] ? cell.padStart(widths[c]!) : cell.padEnd(widths[c]!))).join('  ').trimEnd();
  return [line(header), line(widths.map((w) => '-'.repeat(w))), ...rows.map(line)].join('\n');
}
