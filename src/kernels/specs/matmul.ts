import type { OpSpec } from './types.ts';

export const MATMUL_OPS: readonly OpSpec[] = [];
