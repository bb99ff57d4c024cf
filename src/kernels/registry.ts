import { ATTENTION_OPS } from './specs/attention.ts';
import { ELEMENTWISE_OPS } from './specs/elementwise.ts';
import { MATMUL_OPS } from './specs/matmul.ts';
import type { OpSpec } from './specs/types.ts';

/** Every op of the WGSL library, for the runners, the tests and docs/ops.md. */
export const OPS: readonly OpSpec[] = Object.freeze([...MATMUL_OPS, ...ATTENTION_OPS, ...ELEMENTWISE_OPS]);

export function opSpec(name: string): OpSpec {
  const spec = OPS.find((o) => o.name === name);
  if (!spec) throw new RangeError(`no op named "${name}" (ops: ${OPS.map((o) => o.name).join(', ')})`);
  return spec;
}

/** The devices docs/ops.md describes, and the path each gets. */
export const DOC_DEVICES = [
  { device: 'SwiftShader (CI, Dawn)', paths: ['f32'] },
  { device: 'lavapipe (Deno\'s wgpu)', paths: ['f32', 'f16'] },
  { device: 'NVIDIA H100/H200 (Dawn, Vulkan)', paths: ['f32', 'f16', 'subgroup-matrix'] },
] as const;

/** docs/ops.md: op × weight dtype × device × path, generated from the registry. */
export function opsMarkdown(): string {
  const lines = [
    '# Kernel ops',
    '',
    'Generated from `src/kernels/registry.ts` by `npm run docs`; a test fails when this file is stale.',
    '',
    '| op | what | weight dtypes | paths | variants tested | shaders | CPU reference |',
    '|---|---|---|---|---|---|---|',
    ...OPS.map((o) => `| ${o.name} | ${o.summary} | ${o.weightDtypes?.join(', ') ?? '—'} | ${o.paths.join(', ')} | ${o.variants.join('; ') || '—'} | ${o.shaders.map((s) => `\`${s}.wgsl\``).join(', ')} | \`${o.reference}\` |`),
    '',
    '## Paths by device',
    '',
    '| device | paths | ops per path |',
    '|---|---|---|',
    ...DOC_DEVICES.map((d) => `| ${d.device} | ${d.paths.join(', ')} | ${d.paths.map((p) => `${p}: ${OPS.filter((o) => o.paths.includes(p)).length}`).join(', ')} |`),
    '',
    'Each op runs on the best path its device offers (`src/kernels/paths.ts`): subgroup-matrix where Dawn exposes',
    '`chromium-experimental-subgroup-matrix`, else f16 where it has `shader-f16`, else f32.',
    '',
  ];
  return lines.join('\n');
}
