// Writes docs/ops.md from the kernel registry (run after `npm run build`).
import { writeFileSync } from 'node:fs';
const { opsMarkdown } = await import('../dist/src/kernels/registry.js');
writeFileSync(new URL('../docs/ops.md', import.meta.url), opsMarkdown());
