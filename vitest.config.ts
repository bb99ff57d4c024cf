import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // Dawn is a native addon: one process per file keeps each file's instances its own.
    pool: 'forks',
    // The soak test reads RSS after a full collection.
    execArgv: ['--expose-gc'],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    env: {
      // SwiftShader asks for a Wayland runtime dir it never uses; this keeps its log quiet.
      XDG_RUNTIME_DIR: process.env.XDG_RUNTIME_DIR ?? '/tmp',
    },
  },
});
