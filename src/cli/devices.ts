import { formatBytes } from '../allocation/bytes.ts';
import { openDevices, type OpenDevicesOptions } from '../devices/open.ts';
import type { DeviceSet } from '../devices/device-set.ts';
import { selfTest, type SelfTestResult } from '../kernels/self-test.ts';
import { bestPath } from '../kernels/paths.ts';
import { formatTable } from './table.ts';

export interface DevicesCommandOptions extends OpenDevicesOptions {
  readonly json?: boolean;
  readonly check?: boolean;
}

const yesNo = (b: boolean) => (b ? 'yes' : 'no');

export function renderDevices(set: DeviceSet, checks: readonly SelfTestResult[] = []): string {
  const { gpus, cpu, warnings, notes } = set.describe();
  const gpuRows = gpus.map((g, i) => {
    const row = [g.name, g.adapter, g.vendor, `${g.api}/${g.backend}`, g.pciBusId ?? '-', formatBytes(g.capacity.bytes), g.capacity.source,
      formatBytes(g.maxBufferSize), formatBytes(g.maxStorageBufferBindingSize),
      yesNo(g.features.shaderF16), yesNo(g.features.subgroups), yesNo(g.features.timestampQuery), bestPath(set.gpus[i]!)];
    const check = checks.find((c) => c.device === g.name);
    return check ? [...row, check.ok ? `ok ${check.ms.toFixed(0)} ms` : `FAILED (max error ${check.maxError})`] : row;
  });
  const header = ['device', 'adapter', 'vendor', 'api/backend', 'pci', 'capacity', 'source', 'maxBufferSize',
    'maxStorageBinding', 'shader-f16', 'subgroups', 'timestamp-query', 'kernel path', ...(checks.length ? ['self-test'] : [])];
  const lines = [
    gpus.length ? formatTable(header, gpuRows) : 'no GPU adapters',
    '',
    formatTable(['device', 'cores', 'wasm-simd', 'wasm-threads', 'capacity', 'source'],
      [[cpu.name, String(cpu.cores), yesNo(cpu.wasmSimd), yesNo(cpu.wasmThreads), formatBytes(cpu.capacity.bytes), cpu.capacity.source]]),
  ];
  for (const note of notes) lines.push(`note: ${note}`);
  for (const warning of warnings) lines.push(`warning: ${warning}`);
  return lines.join('\n');
}

export function devicesJson(set: DeviceSet, checks: readonly SelfTestResult[] = []): string {
  const described = set.describe();
  const gpus = described.gpus.map((g, i) => ({ ...g, kernelPath: bestPath(set.gpus[i]!), selfTest: checks.find((c) => c.device === g.name) }));
  return JSON.stringify({ runtime: set.runtime, ...described, gpus }, null, 2);
}

/** `multigpu devices`: returns the text to print and whether every self-test passed. */
export async function devicesCommand(options: DevicesCommandOptions): Promise<{ output: string; ok: boolean }> {
  const set = await openDevices(options);
  try {
    const checks: SelfTestResult[] = [];
    if (options.check) for (const gpu of set.gpus) checks.push(await selfTest(gpu));
    const output = options.json ? devicesJson(set, checks) : renderDevices(set, checks);
    return { output, ok: checks.every((c) => c.ok) };
  } finally {
    await set.close();
  }
}
