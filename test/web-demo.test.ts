// The demo page end to end (issue 10): built with Vite into a temporary folder, served by
// `vite preview` with the repository's config (COOP/COEP and the CSP header), driven in
// headless Chromium (WebGPU on SwiftShader): pick llama-tiny's folder, then its files with a
// tokenizer.json, type an allocation, check the placement picture against the library's
// planner, type a bad allocation and check the error and its caret, run the fixture's prompt
// and compare the tokens with transformers' greedy_tokens (and their text with the library
// tokenizer's). No page error, no CSP violation (page or worker), cross-origin isolated with
// cpu threads, and every request the page makes is one of the built files on its own origin.
// Leaves a screenshot in test-results/web-demo.png.
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { build, preview, type PreviewServer } from 'vite';
import type { Browser } from 'playwright-core';
import { launchChromium } from './browser-launch.ts';
import { ROOT } from './helpers.ts';
import { fixturePath } from './fixtures.ts';
import { AllocationError, blockMapOf, openWeights, parseAllocation, plan } from '../src/index.ts';
import { readHostTensors } from '../src/runtime/host-tensors.ts';
import { loadTokenizer } from '../src/text/tokenizer.ts';

const CONFIG = join(ROOT, 'vite.config.ts');
const SCREENSHOT = join(ROOT, 'test-results', 'web-demo.png');
const ALLOCATION = 'gpu:0,50%;cpu,*';
const BAD = 'gpu:0,4zb;cpu,*';

function filesUnder(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true, recursive: true }).filter((e) => e.isFile()).map((e) => relative(dir, join(e.parentPath, e.name)));
}

describe('the demo page, built and served', () => {
  let out: string;
  let server: PreviewServer;
  let url: string;
  let browser: Browser;
  let assets: Set<string>;

  beforeAll(async () => {
    out = mkdtempSync(join(tmpdir(), 'web-demo-'));
    await build({ configFile: CONFIG, logLevel: 'silent', build: { outDir: out, emptyOutDir: true } });
    assets = new Set(filesUnder(out).map((f) => `/${f.split('\\').join('/')}`));
    server = await preview({ configFile: CONFIG, logLevel: 'silent', build: { outDir: out }, preview: { host: '127.0.0.1', port: 0, strictPort: false, open: false } });
    const address = server.httpServer.address() as { port: number };
    url = `http://127.0.0.1:${address.port}/`;
    browser = await launchChromium();
  }, 120_000);

  afterAll(async () => {
    await browser?.close();
    await server?.close();
    if (out) rmSync(out, { recursive: true, force: true });
  });

  it('picks llama-tiny, shows the placement and allocation errors, generates the reference tokens', async () => {
    const page = await browser.newPage({ viewport: { width: 1200, height: 900 } });
    const errors: string[] = [];
    const requests: string[] = [];
    page.on('pageerror', (e) => errors.push(`pageerror: ${String(e)}`));
    page.on('console', (m) => {
      if (m.type() === 'error') errors.push(`console: ${m.text()}`);
    });
    page.on('request', (r) => requests.push(r.url()));
    await page.addInitScript(() => {
      const w = window as unknown as { cspViolations: string[] };
      w.cspViolations = [];
      document.addEventListener('securitypolicyviolation', (e) => w.cspViolations.push(`${e.effectiveDirective} ${e.blockedURI}`));
    });

    const response = await page.goto(url);
    expect(response!.headers()['content-security-policy']).toContain("'wasm-unsafe-eval'");
    await expect.poll(() => page.locator('#device-status').textContent(), { timeout: 60_000 }).toMatch(/opened in a worker/);
    expect(await page.evaluate(() => self.crossOriginIsolated)).toBe(true);
    await expect.poll(() => page.locator('#isolation').getAttribute('data-cpu-threads')).toBe('true');
    expect(await page.locator('#devices tbody tr').evaluateAll((rows) => rows.map((r) => (r as HTMLElement).dataset.device))).toEqual(['gpu:0', 'cpu']);

    // A folder: its top level is read, model.safetensors chosen, the variants offered.
    await page.locator('#pick-folder').setInputFiles(fixturePath('llama-tiny'));
    await expect.poll(() => page.locator('#model-info').textContent(), { timeout: 30_000 }).toMatch(/^llama-tiny: llama \(safetensors, model\.safetensors\)/);
    expect(await page.locator('#variant option').allTextContents()).toEqual(expect.arrayContaining(['model.safetensors', 'model.f16.safetensors', 'model.bf16.safetensors']));

    // Files: config.json, the f32 weights and a tokenizer.json (the test tokenizer sized to llama-tiny's vocabulary).
    const tokenizerJson = fixturePath('tokenizers', 'llama-tiny', 'tokenizer.json');
    await page.locator('#pick-files').setInputFiles([fixturePath('llama-tiny', 'config.json'), fixturePath('llama-tiny', 'model.safetensors'), tokenizerJson]);
    await expect.poll(() => page.locator('#model-info').textContent(), { timeout: 30_000 }).toMatch(/^picked files: llama \(safetensors, model\.safetensors\), 7 blocks.*tokenizer: yes/);
    expect(await page.locator('#variant-row').isHidden()).toBe(true);
    // A text prompt: the ids shown as it is typed are the library tokenizer's.
    const tokenizer = await loadTokenizer(readFileSync(tokenizerJson, 'utf8'));
    expect(await page.locator('#prompt-as').inputValue()).toBe('text');
    await page.locator('#prompt').fill('Hello world');
    await expect.poll(() => page.locator('#prompt-ids').getAttribute('data-ids')).toBe(tokenizer.encode('Hello world').join(','));

    // The allocation, typed: the picture shows what the library's planner says.
    await page.locator('#allocation').fill('');
    await page.locator('#allocation').pressSequentially(ALLOCATION);
    await page.locator(`#placement[data-allocation="${ALLOCATION}"]`).waitFor({ timeout: 30_000 });
    const bars = await page.locator('#placement .device').evaluateAll((rows) => rows.map((r) => ({
      device: (r as HTMLElement).dataset.device!,
      capacity: Number((r as HTMLElement).dataset.capacity),
      blocks: [...r.querySelectorAll<HTMLElement>('.block')].map((b) => `${b.dataset.block}:${b.dataset.exec}`),
    })));
    const weights = await openWeights(fixturePath('llama-tiny', 'model.safetensors'));
    const expected = plan(blockMapOf(weights), { allocation: ALLOCATION, mode: 'auto', hiddenSize: 64, devices: bars.map((b) => ({ name: b.device, capacity: b.capacity })) });
    await weights.close();
    expect(bars.map((b) => b.device)).toEqual(['gpu:0', 'cpu']);
    for (const bar of bars) {
      expect(bar.blocks).toEqual(expected.blocks.filter((b) => b.device === bar.device).map((b) => `${b.name}:${b.exec}`));
    }
    expect(bars.every((b) => b.blocks.length > 0)).toBe(true); // 50%: both hold blocks

    // A bad one: the grammar's message, and the caret under the character it names.
    await page.locator('#allocation').fill(BAD);
    await page.locator('#alloc-error').waitFor({ state: 'visible' });
    let problem: AllocationError | undefined;
    try {
      parseAllocation(BAD, { devices: ['gpu:0', 'cpu'] });
    } catch (error) {
      problem = error as AllocationError;
    }
    expect(problem).toBeInstanceOf(AllocationError);
    expect(problem!.position).toBe(7); // the "z"
    expect(await page.locator('#alloc-message').textContent()).toBe(problem!.problem);
    expect(await page.locator('#alloc-caret').textContent()).toBe(`${' '.repeat(7)}^`);
    expect(await page.locator('#alloc-error mark').textContent()).toBe('z');
    expect(await page.locator('#alloc-error').getAttribute('data-position')).toBe('7');
    expect(await page.locator('#run').isDisabled()).toBe(true);

    await page.locator('#allocation').fill(ALLOCATION);
    await page.locator('#alloc-error').waitFor({ state: 'hidden' });
    await page.locator('#placement:not(.stale)').waitFor();

    // Run: the fixture's prompt, 8 new tokens.
    const reference = await readHostTensors(fixturePath('llama-tiny', 'expected.safetensors'));
    const ids = reference.get('input_ids')!;
    const prompt = [...ids.data.subarray(0, ids.shape[ids.shape.length - 1]!)];
    const greedy = [...reference.get('greedy_tokens')!.data];
    await page.locator('#prompt-as').selectOption('ids');
    await page.locator('#prompt').fill(prompt.join(', '));
    await page.locator('#steps').fill(String(greedy.length));
    await page.locator('#run').click();
    await page.locator('#output[data-tokens]').waitFor({ timeout: 150_000 });
    expect((await page.locator('#output').getAttribute('data-tokens'))!.split(',').map(Number)).toEqual(greedy);
    const stream = tokenizer.decodeStream(prompt);
    for (const t of greedy) stream.push(t);
    stream.end();
    expect(await page.locator('#output').getAttribute('data-text')).toBe(stream.text);
    expect(await page.locator('#speed').textContent()).toMatch(/tokens\/s/);
    const memory = await page.locator('#memory-table tbody tr').evaluateAll((rows) => rows.map((r) => ({
      device: (r as HTMLElement).dataset.device, used: Number((r as HTMLElement).dataset.used), model: Number((r as HTMLElement).dataset.model),
      wasmUsed: Number((r as HTMLElement).dataset.wasmUsed ?? 0),
      cells: [...r.querySelectorAll('td')].map((td) => td.textContent),
    })));
    expect(memory.map((m) => m.device)).toEqual(['gpu:0', 'cpu']);
    expect(memory[0]!.model).toBeGreaterThan(0);
    for (const m of memory) expect(m.cells[3]).not.toBe(''); // ledger after load
    for (const m of memory) expect(m.cells[4]).not.toBe(''); // after run
    // cpu: the blocks the plan put there, in host-visible buffers (its ledger) or WebAssembly memory.
    expect(memory[1]!.used + memory[1]!.wasmUsed).toBeGreaterThan(0);

    mkdirSync(join(ROOT, 'test-results'), { recursive: true });
    await page.screenshot({ path: SCREENSHOT, fullPage: true });
    console.log(`web demo screenshot: ${SCREENSHOT}`);

    await page.locator('#unload').click();
    await expect.poll(() => page.locator('#run-status').textContent()).toBe('unloaded');
    const after = await page.locator('#memory-table tbody tr').evaluateAll((rows) => rows.map((r) => (r as HTMLElement).dataset));
    expect(after.map((d) => Number(d.model))).toEqual([0, 0]);
    // What stays is the device's own (attention's 16-byte dummy bindings live as long as the device).
    expect(Number(after[0]!.used)).toBeLessThan(1024);
    expect(Number(after[1]!.used)).toBe(0);
    expect(Number(after[1]!.wasmUsed)).toBe(0);

    expect(await page.locator('#problems li').allTextContents()).toEqual([]);
    expect(await page.evaluate(() => (window as unknown as { cspViolations: string[] }).cspViolations)).toEqual([]);
    expect(errors).toEqual([]);
    // Only the built files, from the page's own origin (Blob URLs are the cpu device's threads).
    const origin = new URL(url).origin;
    const strays = requests.filter((r) => {
      if (r.startsWith(`blob:${origin}/`)) return false;
      const u = new URL(r);
      return u.origin !== origin || !(u.pathname === '/' || assets.has(u.pathname));
    });
    expect(strays).toEqual([]);
    expect(requests.some((r) => /\/assets\/worker-[\w-]+\.js$/.test(r))).toBe(true);
  }, 240_000);
});
