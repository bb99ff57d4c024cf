declare module 'wgsl-preprocessor/wgsl-preprocessor.js' {
  /** Template tag: `#if ${cond}` / `#elif ${cond}` / `#else` / `#endif`, other values interpolated. */
  export function wgsl(strings: TemplateStringsArray | readonly string[], ...values: unknown[]): string;
}
