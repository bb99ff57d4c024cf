// The same smoke test in headless Chromium (Playwright), served by Vite's dev server, and
// the demo page under the dev server (test/web-demo.test.ts runs the built page end to end).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createServer, type ViteDevServer } from 'vite';
import type { Browser } from 'playwright-core';
import { launchChromium } from './browser-launch.ts';
import { ROOT } from './helpers.ts';
import { fixturePath } from './fixtures.ts';
import { openSafetensors } from '../src/formats/safetensors.ts';

async function serve(root: string): Promise<{ server: ViteDevServer; url: string }> {
  const server = await createServer({
    configFile: false, root, logLevel: 'silent',
    server: { host: '127.0.0.1', port: 0, fs: { allow: [ROOT] } },
  });
  await server.listen();
  const address = server.httpServer!.address() as { port: number };
  return { server, url: `http://127.0.0.1:${address.port}/` };
}

describe('headless Chromium', () => {
  let browser: Browser;
  beforeAll(async () => {
    browser = await launchChromium();
  });
  afterAll(async () => {
    await browser?.close();
  });

  it('opens navigator.gpu adapters without duplicates, computes, keeps the ledger, types errors, reports loss; reads weights by HTTP Range', async () => {
    const { server, url } = await serve(`${ROOT}test/browser`);
    try {
      const page = await browser.newPage();
      const errors: string[] = [];
      page.on('pageerror', (e) => errors.push(String(e)));
      const fixture = `/@fs${ROOT}test/fixtures/gpt2-tiny/expected.safetensors`;
      await page.goto(`${url}?fixture=${encodeURIComponent(fixture)}`);
      await page.waitForFunction(() => (window as unknown as { smokeResult?: unknown }).smokeResult !== undefined, null, { timeout: 60_000 });
      const result = await page.evaluate(() => (window as unknown as { smokeResult: Record<string, unknown> }).smokeResult);
      expect(result.error).toBeUndefined();
      expect(errors).toEqual([]);
      expect(result.runtime).toBe('browser');
      // high-performance, low-power, default and fallback all answer SwiftShader: one device.
      expect(result.gpus).toHaveLength(1);
      expect((result.gpus as Array<Record<string, unknown>>)[0]).toMatchObject({ name: 'gpu:0', api: 'navigator', vendor: 'google', fallback: true });
      expect(result.check).toMatchObject({ ok: true, maxError: 0 });
      expect(result).toMatchObject({ usedWhileHeld: 1 << 20, usedAfterFree: 0, tooLarge: 'E_BUFFER_TOO_LARGE', lostReason: 'destroyed', closed: true });
      expect((result.cpu as { cores: number }).cores).toBeGreaterThanOrEqual(1);
      // The browser read the fixture by HTTP Range: the same values as the file handle here.
      const disk = await openSafetensors(fixturePath('gpt2-tiny', 'expected.safetensors'));
      const sums: Record<string, number> = {};
      for (const name of disk.tensors.keys()) sums[name] = (await disk.readF32(name)).reduce((a, b) => a + b, 0);
      await disk.close();
      expect(result.fixtureSums).toEqual(sums);
    } finally {
      await server.close();
    }
  });

  it('the demo page under the dev server (the repository\'s config): cross-origin isolated, its CSP kept, devices listed', async () => {
    const server = await createServer({ configFile: `${ROOT}vite.config.ts`, logLevel: 'silent', server: { host: '127.0.0.1', port: 0 } });
    await server.listen();
    try {
      const url = `http://127.0.0.1:${(server.httpServer!.address() as { port: number }).port}/`;
      const page = await browser.newPage();
      const errors: string[] = [];
      page.on('pageerror', (e) => errors.push(String(e)));
      page.on('console', (m) => {
        if (m.type() === 'error') errors.push(m.text());
      });
      const response = await page.goto(url);
      expect(response!.headers()).toMatchObject({
        'cross-origin-opener-policy': 'same-origin', 'cross-origin-embedder-policy': 'require-corp', 'content-security-policy': expect.stringContaining("'wasm-unsafe-eval'"),
      });
      await expect.poll(() => page.locator('#device-status').textContent(), { timeout: 60_000 }).toMatch(/^1 GPU and the cpu opened in a worker/);
      expect(await page.locator('#devices tbody tr td:first-child').allTextContents()).toEqual(['gpu:0', 'cpu']);
      expect(await page.evaluate(() => self.crossOriginIsolated)).toBe(true);
      expect(Number(await page.locator('#isolation').getAttribute('data-kernel-threads'))).toBeGreaterThanOrEqual(2);
      expect(await page.locator('#problems li').allTextContents()).toEqual([]);
      expect(errors).toEqual([]);
    } finally {
      await server.close();
    }
  });
});
