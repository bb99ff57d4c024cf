import { defineConfig } from 'vite';

// The demo page (web/). `npm run web` serves it, `npm run web:build` writes web-dist/.
export default defineConfig({
  root: 'web',
  build: { outDir: '../web-dist', emptyOutDir: true, target: 'es2022' },
  worker: { format: 'es' },
  server: { fs: { allow: ['..'] } },
});
