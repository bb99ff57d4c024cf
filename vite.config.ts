import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vite';

// The demo page (web/). `npm run web` serves it, `npm run web:build` writes web-dist/ and
// `npx vite preview` serves that.

const here = (path: string) => fileURLToPath(new URL(path, import.meta.url));

/** The page's content security policy, as its <meta> tag in web/index.html states it. */
export function pageCsp(): string {
  const html = readFileSync(here('./web/index.html'), 'utf8');
  const m = /<meta http-equiv="Content-Security-Policy" content="([^"]+)"/.exec(html);
  if (!m) throw new Error('web/index.html has no Content-Security-Policy meta tag');
  return m[1]!;
}

/**
 * Cross-origin isolation (SharedArrayBuffer, so the cpu device gets threads), and the page's
 * policy as a header too: a <meta> policy covers the page only, a header also the workers.
 */
export const pageHeaders: Readonly<Record<string, string>> = {
  'Cross-Origin-Opener-Policy': 'same-origin',
  'Cross-Origin-Embedder-Policy': 'require-corp',
  'Content-Security-Policy': pageCsp(),
};

export default defineConfig({
  root: here('./web'),
  // Relative asset URLs: the built page works from any folder of any static server.
  base: './',
  build: { outDir: here('./web-dist'), emptyOutDir: true, target: 'es2022' },
  worker: { format: 'es' },
  server: { fs: { allow: [here('.')] }, headers: pageHeaders },
  preview: { headers: pageHeaders },
});
