import type { OpSpec } from './types.ts';

export const ELEMENTWISE_OPS: readonly OpSpec[] = [
  {
    name: 'add', summary: 'out = a + b, element-wise', shaders: ['add'], paths: ['f32', 'f16'], variants: ['f16 (Deno on lavapipe)'],
    reference: 'reference/add.ts#addReference',
  },
];
