// The npm package as a user gets it: `npm pack` of the built tree (npm test builds first), what
// the tarball holds, then a fresh project that installs it and uses it — from Node (an ESM
// script that runs the bundled model, a strict nodenext type-check against the package's own
// types, the `multigpu` bin) and from Deno through an `npm:` specifier resolved in that
// project's node_modules (--node-modules-dir=manual: no registry, an empty DENO_DIR).
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ROOT } from './helpers.ts';

interface Exit {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly stdout: string;
  readonly stderr: string;
  readonly ms: number;
}

/** `npm test` hands its npm_* settings (prefix, config) to children; the fresh project must not see them. */
function cleanEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!/^npm_/i.test(k)) env[k] = v;
  return {
    ...env,
    NO_COLOR: '1',
    DENO_NO_UPDATE_CHECK: '1',
    VK_ICD_FILENAMES: '/usr/lib/chromium/vk_swiftshader_icd.json',
    XDG_RUNTIME_DIR: process.env.XDG_RUNTIME_DIR ?? '/tmp',
  };
}

function exec(command: string, args: readonly string[], cwd: string, timeoutMs: number, env: NodeJS.ProcessEnv = {}): Promise<Exit> {
  const start = performance.now();
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { cwd, env: { ...cleanEnv(), ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('error', reject);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr, ms: performance.now() - start });
    });
  });
}

function ok(r: Exit): string {
  expect(r.signal, r.stdout + r.stderr).toBeNull();
  expect(r.code, r.stdout + r.stderr).toBe(0);
  return r.stdout;
}

interface PackResult {
  readonly filename: string;
  readonly size: number;
  readonly unpackedSize: number;
  readonly entryCount: number;
  readonly files: ReadonlyArray<{ readonly path: string; readonly size: number }>;
}

const DENO = join(ROOT, 'node_modules/.bin/deno');
const TSC = join(ROOT, 'node_modules/typescript/bin/tsc');

/** An ESM user: the bundled model split over gpu:0 and the cpu device, its greedy tokens against the reference. */
const USE_SCRIPT = (from: string) => `
import { loadModel, openDevices, openSafetensors, openWeights, parseAllocation } from '${from}';
const folder = ARGS[0];
const allocation = 'gpu:0,50%;cpu,*';
const entries = parseAllocation(allocation).entries.map((e) => e.device).join(',');
const ref = await openSafetensors(folder + '/expected.safetensors');
const ids = ref.tensors.get('input_ids');
const prompt = [...await ref.readF32('input_ids')].slice(0, ids.shape[1]);
const want = [...await ref.readF32('greedy_tokens')];
await ref.close();
const devices = await openDevices();
const weights = await openWeights(folder);
try {
  const model = await loadModel(devices, weights, { allocation, mode: 'pipeline' });
  try {
    const { tokens } = await model.generate(prompt, want.length);
    const runs = [...new Set(model.plan.blocks.map((b) => b.execDevice))].join(',');
    console.log('runtime ' + devices.runtime + ', gpu:0 on ' + devices.gpus[0].api + ', allocation ' + entries + ', blocks run on ' + runs);
    console.log('generated ' + tokens.join(' '));
    console.log(tokens.join() === want.join() ? 'tokens identical' : 'tokens DIFFERENT from ' + want.join(' '));
  } finally {
    await model.unload();
  }
} finally {
  await weights.close();
  await devices.close();
}
`;

/** A TypeScript user: the public types, strict; the @ts-expect-error lines prove they are not `any`. */
const TYPED_SOURCE = (from: string) => `
import { AllocationError, loadModel, openDevices, openWeights, parseAllocation, type DeviceSet, type GenerateResult,
  type LoadedModel, type LoadOptions, type ParsedAllocation } from '${from}';

export async function tokens(folder: string, allocation: string): Promise<number[]> {
  const parsed: ParsedAllocation = parseAllocation(allocation);
  const first: string | undefined = parsed.entries[0]?.device;
  void first;
  const devices: DeviceSet = await openDevices({ memory: { cpu: '8gb' } });
  const weights = await openWeights(folder);
  const options: LoadOptions = { allocation, mode: 'pipeline' };
  const model: LoadedModel = await loadModel(devices, weights, options);
  const result: GenerateResult = await model.generate([1, 2, 3], 4);
  const device: GPUDevice | undefined = devices.gpus[0]?.device;
  void device;
  // @ts-expect-error mode is 'stream' | 'pipeline' | 'auto'
  await loadModel(devices, weights, { allocation, mode: 'fastest' });
  // @ts-expect-error generate takes token ids
  await model.generate('hello', 4);
  await model.unload();
  await weights.close();
  await devices.close();
  return result.tokens;
}

export function errorPosition(text: string): number | null {
  try {
    parseAllocation(text);
    return null;
  } catch (error) {
    return error instanceof AllocationError ? error.position : null;
  }
}
`;

describe('the npm package', () => {
  let work = '';
  let project = '';
  let pack: PackResult;
  let installMs = 0;

  beforeAll(async () => {
    expect(existsSync(join(ROOT, 'dist/src/index.js')), 'dist/ is missing: run `npm run build` first (npm test does)').toBe(true);
    work = mkdtempSync(join(tmpdir(), 'multigpu-pack-'));
    const out = ok(await exec('npm', ['pack', '--json', '--pack-destination', work], ROOT, 60_000));
    pack = (JSON.parse(out) as PackResult[])[0]!;
    project = join(work, 'project');
    mkdirSync(project);
    writeFileSync(join(project, 'package.json'), JSON.stringify({ name: 'fresh-project', private: true, type: 'module' }, null, 2));
    const install = await exec('npm', ['install', '--no-audit', '--no-fund', join(work, pack.filename)], project, 240_000);
    ok(install);
    installMs = install.ms;
    console.log(`npm pack: ${pack.filename}, ${pack.entryCount} files, ${(pack.size / 1e6).toFixed(2)} MB packed, ${(pack.unpackedSize / 1e6).toFixed(2)} MB unpacked; npm install of it: ${(installMs / 1000).toFixed(1)} s`);
    writeFileSync(join(project, 'use.mjs'), USE_SCRIPT('multigpu-web').replace('ARGS', 'process.argv.slice(2)'));
    writeFileSync(join(project, 'use-deno.ts'), USE_SCRIPT('npm:multigpu-web').replace('ARGS', 'Deno.args'));
    writeFileSync(join(project, 'typed.ts'), TYPED_SOURCE('multigpu-web'));
    writeFileSync(join(project, 'typed-deno.ts'), TYPED_SOURCE('npm:multigpu-web'));
    writeFileSync(join(project, 'tsconfig.json'), JSON.stringify({
      compilerOptions: { strict: true, module: 'nodenext', moduleResolution: 'nodenext', target: 'es2022', noEmit: true, skipLibCheck: false, types: [] },
      files: ['typed.ts'],
    }, null, 2));
  }, 300_000);

  afterAll(() => {
    if (work) rmSync(work, { recursive: true, force: true });
  });

  const installed = () => join(project, 'node_modules/multigpu-web');

  it('npm pack holds the built entry, its types, the wasm, the shaders and the bundled model; no sources, tests or work files', () => {
    const paths = pack.files.map((f) => f.path);
    for (const want of ['package.json', 'README.md', 'dist/src/index.js', 'dist/src/index.d.ts', 'dist/src/cli/main.js',
      'dist/wasm/cpu-kernels-mt.wasm', 'dist/wasm/cpu-kernels-st.wasm', 'shaders/matmul.wgsl',
      'models/llama-tiny/config.json', 'models/llama-tiny/model.safetensors', 'models/llama-tiny/expected.safetensors']) {
      expect(paths, want).toContain(want);
    }
    const unwanted = paths.filter((p) => /^(test|scratch|gpu-work|src|web|web-dist|bench|scripts|docs|deno|node_modules|\.ci|\.git)\//.test(p)
      || (p.endsWith('.ts') && !p.endsWith('.d.ts')));
    expect(unwanted).toEqual([]);
    // Sources are not shipped, so each source map carries its source (stack traces and debuggers show the TypeScript).
    const maps = paths.filter((p) => p.endsWith('.js.map'));
    expect(maps.length).toBeGreaterThan(50);
    const index = JSON.parse(readFileSync(join(installed(), 'dist/src/index.js.map'), 'utf8')) as { sources: string[]; sourcesContent?: string[] };
    expect(index.sourcesContent?.length).toBe(index.sources.length);
    expect(index.sourcesContent![0]).toContain('export');
    expect(pack.size, 'packed bytes').toBeLessThan(4e6);
    expect(pack.unpackedSize, 'unpacked bytes').toBeLessThan(10e6);
    expect(pack.entryCount).toBeLessThan(1000);
  });

  it('in a fresh Node project, `import from "multigpu-web"` runs the packaged llama-tiny (gpu:0 + cpu, pipeline) to the reference tokens', async () => {
    const out = ok(await exec(process.execPath, ['use.mjs', join(installed(), 'models/llama-tiny')], project, 120_000));
    expect(out).toContain('runtime node, gpu:0 on dawn, allocation gpu:0,cpu, blocks run on gpu:0,cpu');
    expect(out).toContain('tokens identical');
  }, 130_000);

  it('tsc (strict, moduleResolution nodenext) type-checks a user\'s file against the package\'s types', async () => {
    const r = await exec(process.execPath, [TSC, '-p', 'tsconfig.json'], project, 120_000);
    expect(r.stdout + r.stderr).toBe('');
    expect(r.code).toBe(0);
  }, 130_000);

  it('the `multigpu` bin runs from the installed package', async () => {
    const out = ok(await exec('npx', ['--no-install', 'multigpu', 'devices'], project, 60_000));
    expect(out).toMatch(/^gpu:0 .*dawn\/vulkan/m);
    expect(out).toMatch(/^cpu +\d+ +yes/m);
  }, 70_000);

  it('Deno imports it as `npm:multigpu-web` from that node_modules (no registry), runs the same model and type-checks the same file', async () => {
    const env = { DENO_DIR: join(work, 'deno-dir') };
    const out = ok(await exec(DENO, ['run', '--allow-all', '--node-modules-dir=manual', 'use-deno.ts', join(installed(), 'models/llama-tiny')], project, 150_000, env));
    expect(out).toContain('runtime deno, gpu:0 on dawn, allocation gpu:0,cpu, blocks run on gpu:0,cpu');
    expect(out).toContain('tokens identical');
    ok(await exec(DENO, ['check', '--node-modules-dir=manual', 'typed-deno.ts'], project, 120_000, env));
  }, 280_000);
});
