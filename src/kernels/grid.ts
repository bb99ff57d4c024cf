/**
 * Spreads `groups` workgroups over x and y, since one dimension is capped (65535 by default).
 * Kernels rebuild the linear index as gid.x + gid.y * num_workgroups.x * WORKGROUP_SIZE and
 * skip indices past their end.
 */
export function dispatchGrid(groups: number, maxPerDimension: number): [number, number] {
  if (groups <= maxPerDimension) return [Math.max(1, groups), 1];
  const y = Math.ceil(groups / maxPerDimension);
  return [Math.ceil(groups / y), y];
}
