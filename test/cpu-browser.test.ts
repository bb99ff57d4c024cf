// The CPU device in headless Chromium: on a cross-origin-isolated page (COOP + COEP headers)
// its kernels run on Web Workers with a shared memory, waiting asynchronously on the page's
// main thread (Atomics.wait is not allowed there); on a page without isolation it falls
// back to one thread and says so. Both compare linear and softmax with the references.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createServer, type ViteDevServer } from 'vite';
import type { Browser } from 'playwright-core';
import { launchChromium } from './browser-launch.ts';
import { ROOT } from './helpers.ts';

const PAGE = `<!doctype html><meta charset="utf-8"><script type="module">
import { CpuKernels } from '/@fs${ROOT}src/cpu/index.ts';
import { linearReference, dequantizeWeight } from '/@fs${ROOT}src/kernels/reference/matmul.ts';
import { randomValues, randomWeightBytes } from '/@fs${ROOT}src/kernels/reference/matmul-data.ts';
import { softmaxReference } from '/@fs${ROOT}src/kernels/reference/softmax.ts';
try {
  const cpu = await CpuKernels.create();
  const [m, n, k] = [5, 37, 96];
  const bytes = randomWeightBytes('q4_0', n, k, 3);
  const w = await cpu.loadWeight(bytes, [n, k], 'q4_0');
  const x = randomValues(m * k, 4);
  const got = await cpu.linear(x, m, w);
  const want = linearReference(x, dequantizeWeight('q4_0', bytes, n * k), m, n, k);
  const linearError = Math.max(...got.map((v, i) => Math.abs(v - want[i])));
  const s = randomValues(3 * 50, 5, 4);
  const sm = await cpu.softmax(s, 3, 50);
  const sref = softmaxReference(s, 3, 50);
  const softmaxError = Math.max(...sm.map((v, i) => Math.abs(v - sref[i])));
  window.cpuResult = { threads: cpu.threads, note: cpu.note, isolated: self.crossOriginIsolated, linearError, softmaxError };
  await cpu.close();
} catch (error) {
  window.cpuResult = { error: String(error && error.stack || error) };
}
</script>`;

async function serve(root: string, isolated: boolean): Promise<{ server: ViteDevServer; url: string }> {
  const headers: Record<string, string> = isolated
    ? { 'Cross-Origin-Opener-Policy': 'same-origin', 'Cross-Origin-Embedder-Policy': 'require-corp' }
    : {};
  const server = await createServer({
    configFile: false, root, logLevel: 'silent',
    server: { host: '127.0.0.1', port: 0, fs: { allow: [ROOT, root] }, headers },
  });
  await server.listen();
  const address = server.httpServer!.address() as { port: number };
  return { server, url: `http://127.0.0.1:${address.port}/` };
}

describe('the CPU device in headless Chromium', () => {
  let browser: Browser;
  let dir: string;
  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'cpu-browser-'));
    writeFileSync(join(dir, 'index.html'), PAGE);
    browser = await launchChromium();
  });
  afterAll(async () => {
    await browser?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  async function run(isolated: boolean): Promise<Record<string, unknown>> {
    const { server, url } = await serve(dir, isolated);
    try {
      const page = await browser.newPage();
      await page.goto(url);
      await page.waitForFunction(() => (window as unknown as { cpuResult?: unknown }).cpuResult !== undefined, null, { timeout: 60_000 });
      return await page.evaluate(() => (window as unknown as { cpuResult: Record<string, unknown> }).cpuResult);
    } finally {
      await server.close();
    }
  }

  it('cross-origin isolated: Web Workers, every core', async () => {
    const r = await run(true);
    expect(r.error).toBeUndefined();
    expect(r.isolated).toBe(true);
    expect(r.threads).toBeGreaterThanOrEqual(2);
    expect(r.note).toBeNull();
    expect(r.linearError).toBeLessThan(1e-4);
    expect(r.softmaxError).toBeLessThan(1e-6);
  });

  it('not isolated: one thread, and a note that says why', async () => {
    const r = await run(false);
    expect(r.error).toBeUndefined();
    expect(r.isolated).toBe(false);
    expect(r.threads).toBe(1);
    expect(String(r.note)).toMatch(/cross-origin isolated/);
    expect(r.linearError).toBeLessThan(1e-4);
    expect(r.softmaxError).toBeLessThan(1e-6);
  });
});
