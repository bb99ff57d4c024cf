import { wgsl } from 'wgsl-preprocessor/wgsl-preprocessor.js'; // the package declares no main
import { MultiGpuError } from '../errors.ts';
import { SHADER_INCLUDES, SHADER_SOURCES } from './shaders.generated.ts';

export type ShaderName = keyof typeof SHADER_SOURCES;
export type ShaderDefines = Readonly<Record<string, boolean | number | string>>;

export class ShaderDefineError extends MultiGpuError {
  constructor(shader: string, define: string) {
    super('E_SHADER_DEFINE', `shaders/${shader}.wgsl uses \${${define}} but no value was given for it`, {
      hint: 'pass every define the kernel file lists in its header comment',
    });
  }
}

const PLACEHOLDER = /\$\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}/g;

/**
 * A .wgsl file is a wgsl-preprocessor template kept as plain text: `${NAME}` marks a value
 * (after `#if`/`#elif` a condition). We split the text at the placeholders and hand the
 * pieces to the preprocessor's tag function, exactly as a template literal would.
 */
export function preprocessWgsl(shader: string, source: string, defines: ShaderDefines): string {
  const strings: string[] = [];
  const values: unknown[] = [];
  let last = 0;
  for (const match of source.matchAll(PLACEHOLDER)) {
    const name = match[1]!;
    if (!Object.hasOwn(defines, name)) throw new ShaderDefineError(shader, name);
    strings.push(source.slice(last, match.index));
    values.push(defines[name]);
    last = match.index + match[0].length;
  }
  strings.push(source.slice(last));
  return wgsl(strings, ...values);
}

const INCLUDE = /^\/\/ @include (\w+)[ \t]*$/gm;

/**
 * WGSL has no include: a line `// @include name` is replaced by shaders/include/name.wgsl
 * before preprocessing, so the snippet's own `#if ${...}` blocks follow the kernel's defines.
 */
export function expandIncludes(shader: string, source: string): string {
  return source.replace(INCLUDE, (_, name: string) => {
    const snippet = SHADER_INCLUDES[name];
    if (snippet === undefined) throw new RangeError(`shaders/${shader}.wgsl includes "${name}", which is not in shaders/include/`);
    return snippet;
  });
}

export function kernelSource(shader: ShaderName, defines: ShaderDefines): string {
  return preprocessWgsl(shader, expandIncludes(shader, SHADER_SOURCES[shader]), defines);
}
