// Runs the Deno suite (test/deno/*.deno.ts) with the npm package's deno binary, so the Deno
// runtime is exercised by the same test command as everything else.
import { expect, it } from 'vitest';
import { run } from './helpers.ts';

it('the device layer (on Deno\'s navigator.gpu and on Dawn through npm:webgpu) and the formats pass under Deno', async () => {
  const r = await run('node_modules/.bin/deno', ['test', '--allow-all', '--no-check', 'test/deno/devices.deno.ts', 'test/deno/formats.deno.ts'], {
    timeoutMs: 90_000,
    // SwiftShader for Deno's own wgpu too (else it takes whatever GL or Vulkan driver is around).
    env: { NO_COLOR: '1', DENO_NO_UPDATE_CHECK: '1', VK_ICD_FILENAMES: process.env.VK_ICD_FILENAMES ?? '/usr/lib/chromium/vk_swiftshader_icd.json' },
  });
  expect(r.signal, r.stdout + r.stderr).toBeNull();
  expect(r.code, r.stdout + r.stderr).toBe(0);
  expect(r.stdout).toContain('devices on navigator: open, compute, ledger, typed errors, lost event, close ... ok');
  expect(r.stdout).toContain('devices on dawn: open, compute, ledger, typed errors, lost event, close ... ok');
  expect(r.stdout).toContain('safetensors under Deno: a model folder reads, and writes back bit for bit ... ok');
  expect(r.stdout).toMatch(/ok \| 3 passed \| 0 failed/);
}, 120_000);
