import type { OpSpec } from './types.ts';

export const ATTENTION_OPS: readonly OpSpec[] = [];
