// The demo's engine runs in a worker (WebGPU works there and the page stays responsive);
// the page talks to it through comlink.
import * as Comlink from 'comlink';
import { formatBytes, openDevices } from '../src/index.ts';

export interface DeviceRow {
  readonly name: string;
  readonly adapter: string;
  readonly vendor: string;
  readonly capacity: string;
  readonly maxBufferSize: string;
  readonly shaderF16: boolean | null;
  readonly subgroups: boolean | null;
}

const engine = {
  async listDevices(): Promise<{ rows: DeviceRow[]; warnings: string[] }> {
    const set = await openDevices();
    try {
      const { gpus, cpu, warnings } = set.describe();
      const rows: DeviceRow[] = gpus.map((g) => ({
        name: g.name, adapter: g.adapter, vendor: g.vendor, capacity: `${formatBytes(g.capacity.bytes)} (${g.capacity.source})`,
        maxBufferSize: formatBytes(g.maxBufferSize), shaderF16: g.features.shaderF16, subgroups: g.features.subgroups,
      }));
      rows.push({ name: 'cpu', adapter: `${cpu.cores} cores, wasm simd ${cpu.wasmSimd ? 'yes' : 'no'}, threads ${cpu.wasmThreads ? 'yes' : 'no'}`,
        vendor: '', capacity: `${formatBytes(cpu.capacity.bytes)} (${cpu.capacity.source})`, maxBufferSize: '', shaderF16: null, subgroups: null });
      return { rows, warnings };
    } finally {
      await set.close();
    }
  },
};

export type Engine = typeof engine;
Comlink.expose(engine);
