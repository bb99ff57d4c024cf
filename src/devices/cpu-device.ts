import { simd, threads } from 'wasm-feature-detect';
import { cpuCapacity, type MemoryOverrides } from './capacity.ts';
import { ByteLedger } from './ledger.ts';
import { importNodeBuiltin } from './runtime.ts';
import type { Capacity, CpuDescription, Runtime } from './types.ts';

/**
 * The host: WebAssembly kernels on worker threads, weights in host memory. Its ledger also
 * counts the host-visible GPU buffers that stream mode keeps for blocks stored on `cpu`.
 */
export class CpuDevice {
  readonly kind = 'cpu' as const;
  readonly name = 'cpu' as const;
  readonly cores: number;
  readonly wasmSimd: boolean;
  readonly wasmThreads: boolean;
  readonly capacity: Capacity;
  readonly ledger = new ByteLedger();

  constructor(init: { cores: number; wasmSimd: boolean; wasmThreads: boolean; capacity: Capacity }) {
    this.cores = init.cores;
    this.wasmSimd = init.wasmSimd;
    this.wasmThreads = init.wasmThreads;
    this.capacity = init.capacity;
  }

  describe(): CpuDescription {
    return { name: 'cpu', cores: this.cores, wasmSimd: this.wasmSimd, wasmThreads: this.wasmThreads, capacity: this.capacity };
  }
}

async function coreCount(runtime: Runtime): Promise<number> {
  if (runtime !== 'browser') {
    const os = await importNodeBuiltin<typeof import('node:os')>('os');
    return typeof os.availableParallelism === 'function' ? os.availableParallelism() : os.cpus().length;
  }
  return globalThis.navigator?.hardwareConcurrency ?? 1;
}

export async function openCpuDevice(runtime: Runtime, overrides: MemoryOverrides): Promise<CpuDevice> {
  const [cores, wasmSimd, wasmThreads, capacity] = await Promise.all([
    coreCount(runtime),
    simd(),
    // In a browser, threads also need a cross-origin-isolated page (SharedArrayBuffer).
    threads().then((ok) => ok && typeof SharedArrayBuffer !== 'undefined'),
    cpuCapacity(runtime, overrides),
  ]);
  return new CpuDevice({ cores, wasmSimd, wasmThreads, capacity });
}
