// The registry is the truth about the kernel library: docs/ops.md is generated from it, and
// every shader and CPU reference it names must exist.
import { existsSync, readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { OPS, opsMarkdown } from '../../src/kernels/registry.ts';
import { expandIncludes } from '../../src/kernels/shaders.ts';
import { ROOT } from '../helpers.ts';

describe('kernel registry', () => {
  it('docs/ops.md is up to date (run `npm run docs`)', () => {
    expect(readFileSync(`${ROOT}docs/ops.md`, 'utf8')).toBe(opsMarkdown());
  });

  it.each(OPS.map((o) => [o.name, o]))('%s: its shaders and its CPU reference exist', async (_name, op) => {
    for (const shader of op.shaders) expect(existsSync(`${ROOT}shaders/${shader}.wgsl`), `shaders/${shader}.wgsl`).toBe(true);
    const [file, exported] = op.reference.split('#');
    const module = await import(`../../src/kernels/${file}`);
    expect(typeof module[exported!], op.reference).toBe('function');
    expect(op.paths).toContain('f32');
  });

  it('`// @include name` pulls in shaders/include/name.wgsl, and an unknown name is an error', () => {
    const expanded = expandIncludes('k', 'a\n// @include workgroup_reduce\nb');
    expect(expanded).toContain('fn reduce_sum(');
    expect(expanded).not.toMatch(/^\/\/ @include /m);
    expect(() => expandIncludes('k', '// @include nothing_here')).toThrow('shaders/k.wgsl includes "nothing_here", which is not in shaders/include/');
  });

  it('op names are unique', () => {
    expect(new Set(OPS.map((o) => o.name)).size).toBe(OPS.length);
  });
});
