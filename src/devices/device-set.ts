import { DeviceNotFoundError, DevicesClosedError } from './errors.ts';
import type { CpuDevice } from './cpu-device.ts';
import type { GpuDevice, LostInfo } from './gpu-device.ts';
import { parseDeviceName } from './names.ts';
import type { CpuDescription, GpuDescription, Runtime } from './types.ts';

export type Device = GpuDevice | CpuDevice;

/** Fired on the DeviceSet when a GPU is lost for any reason but the set's own close(). */
export class DeviceLostEvent extends Event {
  static readonly type = 'devicelost';
  readonly device: GpuDevice;
  readonly reason: string;
  readonly detail: string;

  constructor(device: GpuDevice, info: LostInfo) {
    super(DeviceLostEvent.type);
    this.device = device;
    this.reason = info.reason;
    this.detail = info.message;
  }
}

export interface DeviceSetInit {
  readonly runtime: Runtime;
  readonly gpus: readonly GpuDevice[];
  readonly cpu: CpuDevice;
  /** WebGPU instances (Dawn's `create()` results) that must live as long as their devices. */
  readonly instances: readonly GPU[];
  readonly warnings: readonly string[];
  readonly notes: readonly string[];
}

/** The devices one process opened: GPUs numbered gpu:0..N-1, and the cpu. */
export class DeviceSet extends EventTarget {
  readonly runtime: Runtime;
  readonly gpus: readonly GpuDevice[];
  readonly cpu: CpuDevice;
  readonly warnings: readonly string[];
  readonly notes: readonly string[];
  #instances: GPU[];
  #closing = false;
  #closed = false;

  constructor(init: DeviceSetInit) {
    super();
    this.runtime = init.runtime;
    this.gpus = init.gpus;
    this.cpu = init.cpu;
    this.warnings = init.warnings;
    this.notes = init.notes;
    this.#instances = [...init.instances];
    for (const gpu of this.gpus) {
      gpu.onLost((info) => {
        if (!this.#closing) this.dispatchEvent(new DeviceLostEvent(gpu, info));
      });
    }
  }

  get closed(): boolean {
    return this.#closed;
  }

  get devices(): Device[] {
    return [...this.gpus, this.cpu];
  }

  /** "gpu:1", "cuda:1", "CPU", "mps": every alias of SPEC §1. */
  get(name: string): Device {
    if (this.#closed) throw new DevicesClosedError(`get("${name}")`);
    const ref = parseDeviceName(name);
    if (ref.kind === 'cpu') return this.cpu;
    const gpu = this.gpus[ref.index];
    if (!gpu) throw new DeviceNotFoundError(`gpu:${ref.index}`, this.devices.map((d) => d.name));
    return gpu;
  }

  onDeviceLost(listener: (event: DeviceLostEvent) => void): () => void {
    const handler = (event: Event) => listener(event as DeviceLostEvent);
    this.addEventListener(DeviceLostEvent.type, handler);
    return () => this.removeEventListener(DeviceLostEvent.type, handler);
  }

  describe(): { gpus: GpuDescription[]; cpu: CpuDescription; warnings: string[]; notes: string[] } {
    return { gpus: this.gpus.map((g) => g.describe()), cpu: this.cpu.describe(), warnings: [...this.warnings], notes: [...this.notes] };
  }

  /**
   * Destroys every device and drops every WebGPU instance: a live Dawn instance keeps
   * Node from exiting. Idempotent.
   */
  async close(): Promise<void> {
    if (this.#closing) return;
    this.#closing = true;
    await Promise.all(this.gpus.map(async (gpu) => {
      gpu.device.destroy();
      let timer: ReturnType<typeof setTimeout> | undefined;
      await Promise.race([gpu.device.lost, new Promise((resolve) => (timer = setTimeout(resolve, 2000)))]);
      clearTimeout(timer);
    }));
    this.#instances = [];
    this.#closed = true;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}
