// The built CLI as a user runs it: output, exit codes, and that the process exits on its own
// (a live Dawn instance would keep it running until the timeout kills it).
import { describe, expect, it } from 'vitest';
import { cli, SWIFTSHADER } from './helpers.ts';

describe('multigpu devices', () => {
  it('lists SwiftShader as gpu:0 and the cpu, then exits by itself with code 0', async () => {
    const r = await cli(['devices'], { timeoutMs: 20_000 });
    expect(r.signal).toBeNull();
    expect(r.code).toBe(0);
    const lines = r.stdout.split('\n');
    expect(lines[0]).toMatch(/^device\s+adapter\s+vendor\s+api\/backend\s+pci\s+capacity\s+source\s+maxBufferSize\s+maxStorageBinding\s+shader-f16\s+subgroups\s+timestamp-query\s+kernel path$/);
    expect(lines.find((l) => l.startsWith('gpu:0'))).toMatch(new RegExp(`^gpu:0\\s+${SWIFTSHADER.replace(/[()]/g, '\\$&')}\\s+google\\s+dawn/vulkan\\s+-\\s+4\\.00 GiB\\s+default\\s+1\\.00 GiB\\s+1\\.00 GiB\\s+no\\s+yes\\s+yes\\s+f32$`));
    expect(lines.find((l) => l.startsWith('cpu'))).toMatch(/^cpu\s+\d+\s+(yes|no)\s+(yes|no)\s+[\d.]+ GiB\s+os$/);
  });

  it('--json carries the same fields, --check adds a passing self-test per GPU', async () => {
    const r = await cli(['devices', '--json', '--check', '--memory', 'gpu:0=24gb', '--adapters', `${SWIFTSHADER};${SWIFTSHADER}`]);
    expect(r.code).toBe(0);
    const out = JSON.parse(r.stdout);
    expect(out.runtime).toBe('node');
    expect(out.gpus).toHaveLength(2);
    expect(out.gpus[0]).toMatchObject({
      index: 0, name: 'gpu:0', adapter: SWIFTSHADER, vendor: 'google', backend: 'vulkan', api: 'dawn', pciBusId: null,
      capacity: { bytes: 24 * 1024 ** 3, source: 'user' }, maxBufferSize: 1024 ** 3, maxStorageBufferBindingSize: 1024 ** 3,
      features: { shaderF16: false, subgroups: true, timestampQuery: true, subgroupMatrix: false },
      kernelPath: 'f32',
      selfTest: { device: 'gpu:0', ok: true, maxError: 0 },
    });
    expect(out.gpus[1]).toMatchObject({ name: 'gpu:1', capacity: { source: 'default' }, selfTest: { ok: true } });
    expect(out.cpu).toMatchObject({ name: 'cpu', capacity: { source: 'os' } });
    expect(out.cpu.cores).toBeGreaterThanOrEqual(1);
  });

  it.each([
    [['devices', '--memory', 'tpu:0=1gb'], '"tpu:0" is not a device name'],
    [['devices', '--memory', 'gpu:0=lots'], '"lots" is not a byte size'],
    [['devices', '--api', 'metal'], '--api must be one of auto, dawn, navigator (got "metal")'],
    [['devices', '--frobnicate'], "Unknown option '--frobnicate'"],
    [['frobnicate'], 'unknown command "frobnicate"'],
    [['bench'], 'bench needs one of: matmul, gemv, attention, cpu-matmul'],
    [['bench', 'fastest'], 'bench needs one of: matmul, gemv, attention, cpu-matmul (got "fastest")'],
  ])('bad input %j: exit code 2 and a one-paragraph message, no stack trace', async (args, message) => {
    const r = await cli(args);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain(`multigpu: ${message}`);
    expect(r.stderr).not.toMatch(/\n\s+at /);
    expect(r.stdout).toBe('');
  });

  it('an adapter that is not there: exit code 1, the message lists what is', async () => {
    const r = await cli(['devices', '--adapters', 'Radeon 9000']);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('multigpu: adapter selector "Radeon 9000": Dawn has no adapter of that name');
    expect(r.stderr).toContain(`hint: available: "${SWIFTSHADER}"`);
  });

  it('help prints the commands', async () => {
    const r = await cli(['help']);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('devices   list the GPUs');
  });
});
