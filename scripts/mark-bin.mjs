// tsc drops nothing but the executable bit: give the CLI entry its shebang's mode.
import { chmodSync } from 'node:fs';
chmodSync(new URL('../dist/src/cli/main.js', import.meta.url), 0o755);
