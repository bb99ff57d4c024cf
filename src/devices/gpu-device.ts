import {
  BufferTooLargeError,
  CapacityExceededError,
  DeviceLostError,
  GpuOutOfMemoryError,
  GpuValidationError,
} from './errors.ts';
import { ByteLedger, type LedgerEntry } from './ledger.ts';
import type { Capacity, GpuApi, GpuDescription } from './types.ts';

/** What discovery knows about a device when it hands it over. */
export type GpuDeviceInit = Pick<GpuDevice,
  'index' | 'adapterName' | 'vendor' | 'architecture' | 'backend' | 'api' | 'pciBusId' | 'fallback' | 'capacity' | 'device' | 'adapterInfo'>;

export interface BufferRequest {
  readonly label: string;
  readonly size: number;
  readonly usage: GPUBufferUsageFlags;
  readonly mappedAtCreation?: boolean;
  /**
   * Another ledger to count it on, checked against that device's capacity instead: host-visible
   * buffers (MAP_WRITE | COPY_SRC) live in host memory, so they count on the cpu device's.
   */
  readonly account?: { readonly ledger: ByteLedger; readonly name: string; readonly capacity: number; readonly source: string };
}

export interface LostInfo {
  readonly reason: string;
  readonly message: string;
}

/** A GPU buffer whose bytes are on a device's ledger until destroy(). */
export class TrackedBuffer {
  readonly buffer: GPUBuffer;
  readonly device: GpuDevice;
  readonly #entry: LedgerEntry;
  readonly #ledger: ByteLedger;

  constructor(device: GpuDevice, buffer: GPUBuffer, entry: LedgerEntry, ledger: ByteLedger = device.ledger) {
    this.device = device;
    this.buffer = buffer;
    this.#entry = entry;
    this.#ledger = ledger;
  }

  get bytes(): number {
    return this.#entry.bytes;
  }

  get label(): string {
    return this.#entry.label;
  }

  /** Idempotent: the second call neither double-frees nor double-counts. */
  destroy(): void {
    if (this.#ledger.release(this.#entry)) this.buffer.destroy();
  }
}

/** One opened WebGPU device: its adapter's facts, its capacity, its ledger, its lost state. */
export class GpuDevice {
  readonly kind = 'gpu' as const;
  readonly index: number;
  readonly name: string;
  readonly adapterName: string;
  readonly vendor: string;
  readonly architecture: string;
  readonly backend: string;
  readonly api: GpuApi;
  readonly pciBusId: string | null;
  readonly fallback: boolean;
  readonly capacity: Capacity;
  readonly device: GPUDevice;
  /** The adapter's own info: Dawn lists subgroup-matrix configurations there, not on the device. */
  readonly adapterInfo: GPUAdapterInfo;
  readonly ledger = new ByteLedger();
  #lost: LostInfo | null = null;
  readonly #lostListeners = new Set<(info: LostInfo) => void>();

  constructor(init: GpuDeviceInit) {
    this.index = init.index;
    this.name = `gpu:${init.index}`;
    this.adapterName = init.adapterName;
    this.vendor = init.vendor;
    this.architecture = init.architecture;
    this.backend = init.backend;
    this.api = init.api;
    this.pciBusId = init.pciBusId;
    this.fallback = init.fallback;
    this.capacity = init.capacity;
    this.device = init.device;
    this.adapterInfo = init.adapterInfo;
    void this.device.lost.then((info) => {
      this.#lost = { reason: info.reason, message: info.message };
      this.ledger.releaseAll();
      for (const listener of this.#lostListeners) listener(this.#lost);
    });
  }

  get lost(): LostInfo | null {
    return this.#lost;
  }

  get limits(): GPUSupportedLimits {
    return this.device.limits;
  }

  /** Read once: Dawn builds a new features object on every `device.features` access. */
  #features: ReadonlySet<string> | null = null;

  hasFeature(feature: string): boolean {
    this.#features ??= new Set(this.device.features);
    return this.#features.has(feature);
  }

  /** Called once when the device is lost, whatever the cause. */
  onLost(listener: (info: LostInfo) => void): () => void {
    this.#lostListeners.add(listener);
    return () => this.#lostListeners.delete(listener);
  }

  /**
   * The one way the runtime allocates GPU memory: checks the adapter limit and the
   * capacity ledger first, then wraps createBuffer in out-of-memory and validation
   * error scopes so a failure is a typed error rather than an invalid buffer.
   */
  async createBuffer(request: BufferRequest): Promise<TrackedBuffer> {
    const { label, size } = request;
    this.#throwIfLost();
    if (size > this.limits.maxBufferSize) throw new BufferTooLargeError(this.name, label, size, this.limits.maxBufferSize);
    const account = request.account ?? { ledger: this.ledger, name: this.name, capacity: this.capacity.bytes, source: this.capacity.source };
    const ledger = account.ledger;
    if (ledger.used + size > account.capacity) {
      throw new CapacityExceededError(account.name, label, size, ledger.used, account.capacity, account.source);
    }
    // Counted before the awaits, so concurrent allocations cannot both pass the capacity check.
    const entry = ledger.add(label, size);
    const device = this.device;
    device.pushErrorScope('out-of-memory');
    device.pushErrorScope('validation');
    let buffer: GPUBuffer | undefined;
    let thrown: unknown;
    try {
      buffer = device.createBuffer({ label, size, usage: request.usage, mappedAtCreation: request.mappedAtCreation ?? false });
    } catch (error) {
      thrown = error; // mappedAtCreation of an unallocatable size throws RangeError synchronously
    }
    const validation = await device.popErrorScope();
    const oom = await device.popErrorScope();
    if (buffer && !validation && !oom && thrown === undefined) return new TrackedBuffer(this, buffer, entry, ledger);
    ledger.release(entry);
    buffer?.destroy();
    this.#throwIfLost();
    if (oom || thrown instanceof RangeError) {
      throw new GpuOutOfMemoryError(this.name, label, size, oom?.message || String((thrown as Error).message));
    }
    throw new GpuValidationError(this.name, label, size, validation?.message || String(thrown));
  }

  #throwIfLost(): void {
    const lost = this.#lost;
    if (lost) throw new DeviceLostError(this.name, lost.reason, lost.message);
  }

  describe(): GpuDescription {
    const limits = this.limits;
    return {
      index: this.index,
      name: this.name,
      adapter: this.adapterName,
      vendor: this.vendor,
      architecture: this.architecture,
      backend: this.backend,
      api: this.api,
      pciBusId: this.pciBusId,
      fallback: this.fallback,
      capacity: this.capacity,
      maxBufferSize: limits.maxBufferSize,
      maxStorageBufferBindingSize: limits.maxStorageBufferBindingSize,
      features: {
        shaderF16: this.hasFeature('shader-f16'),
        subgroups: this.hasFeature('subgroups'),
        timestampQuery: this.hasFeature('timestamp-query'),
        subgroupMatrix: this.hasFeature('chromium-experimental-subgroup-matrix'),
      },
    };
  }
}
