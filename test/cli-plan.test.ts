// `multigpu plan`: every fixture model with each seed string, the JSON contract, and errors
// a user can act on (exit code 2, one paragraph, no stack trace).
import { describe, expect, it } from 'vitest';
import { planCommand } from '../src/cli/plan.ts';
import { cli } from './helpers.ts';
import { FIXTURE_FOLDERS, fixturePath } from './fixtures.ts';

const SEED = ['cuda:0,2.5gb;cpu,*', 'cuda:0,500mb;cuda:1,3.0g;cpu,5gb*', 'cuda:0,25%;cpu,75%', 'cuda:0,8%;cuda:1,8%;cpu,4%',
  'cuda:0,0.1;cpu,0.5', 'cuda:0,4gb;cuda:1,2gb;cpu,*', 'cuda:0,60%;cuda:1,30%;cpu,10%'];
const MODELS = FIXTURE_FOLDERS.filter((f) => f !== 'gguf-quant-vectors');
const MEMORY = 'gpu:0=24gb,gpu:1=24gb,cpu=64gb';

describe('every fixture model with each seed string', () => {
  it.each(MODELS.flatMap((m) => SEED.map((s) => [m, s])))('%s with "%s"', async (model, alloc) => {
    const out = JSON.parse(await planCommand({ model: fixturePath(model), alloc, memory: MEMORY, offline: true, json: true }));
    expect(out.blocks.length).toBeGreaterThan(3);
    // every block placed once, on a device the string names (or cpu, or the compute device)
    expect(new Set(out.blocks.map((b: { name: string }) => b.name)).size).toBe(out.blocks.length);
    for (const b of out.blocks) expect(['gpu:0', 'gpu:1', 'cpu']).toContain(b.device);
    const stored = Object.values(out.devices as Record<string, { bytes: number }>).reduce((a, d) => a + d.bytes, 0);
    expect(stored).toBe(out.totalBytes);
    // the pinned blocks are on the compute device
    for (const b of out.blocks.filter((x: { pinned: string | null }) => x.pinned)) expect(b.device).toBe('gpu:0');
    const text = await planCommand({ model: fixturePath(model), alloc, memory: MEMORY, offline: true });
    expect(text.split('\n')[0]).toContain(`blocks`);
    expect(text).toMatch(/^block\s+bytes\s+device\s+exec\s+on\s+storage\s+why$/m);
  });
});

describe('the CLI', () => {
  it('--json has the contract\'s fields, and the process exits by itself', async () => {
    const r = await cli(['plan', '--model', fixturePath('llama-tiny'), '--alloc', 'cuda:0,25%;cuda:1,25%;cpu,*', '--memory', MEMORY, '--mode', 'pipeline', '--json']);
    expect(r.signal).toBeNull();
    expect(r.code, r.stderr).toBe(0);
    const out = JSON.parse(r.stdout);
    for (const b of out.blocks) expect(Object.keys(b)).toEqual(expect.arrayContaining(['name', 'bytes', 'device', 'exec']));
    expect(out.devices['gpu:1']).toMatchObject({ capacity: 24 * 1024 ** 3 });
    expect(Object.keys(out.devices['gpu:0'])).toEqual(expect.arrayContaining(['bytes', 'capacity']));
    expect(out.blocks.find((b: { name: string }) => b.name === 'layers.3')).toMatchObject({ device: 'cpu', exec: 'pipeline' });
  });

  it('opens this machine\'s devices when not offline (SwiftShader as gpu:0; gpu:1 declared)', async () => {
    const r = await cli(['plan', '--model', fixturePath('gpt2-tiny'), '--alloc', 'gpu:0,50%;gpu:1,*', '--memory', 'gpu:1=8gb']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^gpu:0\s+[\d.]+ KiB\s+[\d.]+ KiB\s+4\.00 GiB/m);
    expect(r.stdout).toMatch(/^gpu:1\s+[\d.]+ KiB\s+the rest\s+8\.00 GiB/m);
  });

  it('simple mode: --virtual-vram with --donors', async () => {
    const r = await cli(['plan', '--model', fixturePath('unet-tiny'), '--alloc', '', '--virtual-vram', '1mb', '--donors', 'cpu', '--memory', MEMORY, '--offline']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain('(simple mode)');
    expect(r.stdout).toMatch(/^cpu\s+[\d.]+ MiB/m);
  });

  it.each([
    [['--alloc', 'cuda:0,4zb;cpu,*'], 'unknown unit "zb" in entry "cuda:0,4zb"'],
    [['--alloc', 'cuda:0,1,5gb;cpu,*'], 'cuda:0,1,5gb'],
    [['--alloc', 'gpu:0,1gb;gpu:0,2gb'], 'gpu:0'],
    [['--alloc', 'gpu:7,1gb;cpu,*'], 'gpu:7'],
    [['--alloc', 'gpu:0,50%;cpu,1gb'], 'mode'],
    [['--alloc', 'gpu:0,*', '--memory', 'gpu:0=500kb,cpu=64gb'], 'allocation "gpu:0,*" cannot hold the model: gpu:0 would hold 850 KiB but has 450 KiB free: 400 KiB (409856 bytes) short'],
    [['--alloc', 'gpu:0,*', '--mode', 'fast'], '--mode must be stream, pipeline or auto (got "fast")'],
    [['--alloc', 'gpu:0,*', '--reserve', 'lots'], '"lots" is not a byte size'],
  ])('bad input %j: exit 2, one paragraph naming the problem, no stack', async (args, message) => {
    const memory = args.includes('--memory') ? [] : ['--memory', MEMORY];
    const r = await cli(['plan', '--model', fixturePath('llama-tiny'), ...args, ...memory, '--offline']);
    expect(r.code, r.stdout + r.stderr).toBe(2);
    expect(r.stderr).toContain(message);
    expect(r.stderr).toMatch(/^multigpu: /);
    expect(r.stderr).not.toMatch(/\n\s+at /);
  });

  it.each([
    [['--model', '/no/such/model', '--alloc', 'cpu,*'], 'cannot open'],
    [['--model', fixturePath('llama-tiny', 'config.json'), '--alloc', 'cpu,*'], 'is not a .safetensors, .safetensors.index.json or .gguf file'],
    [['--model', fixturePath('gguf-quant-vectors'), '--alloc', 'cpu,*'], 'no known model family'],
    [['--alloc', 'cpu,*'], 'plan needs --model'],
  ])('bad model %j: exit 2 and what to do', async (args, message) => {
    const r = await cli(['plan', ...args, '--offline']);
    expect(r.code, r.stderr).toBe(2);
    expect(r.stderr).toContain(message);
    expect(r.stderr).not.toMatch(/\n\s+at /);
  });
});
