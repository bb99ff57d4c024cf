/** Where a device's capacity figure came from (SPEC §1), in the order they are tried. */
export type CapacitySource =
  | 'user' // --memory gpu:0=24gb / the `memory` option
  | 'nvidia-smi' // memory.total of the GPU at the same PCI bus id
  | 'sysfs' // /sys/bus/pci/devices/<id>/mem_info_vram_total (amdgpu)
  | 'os' // host memory, for the cpu device under Node and Deno
  | 'navigator.deviceMemory' // the browser's rounded figure, for the cpu device
  | 'default'; // a documented default: see DEFAULT_CAPACITY

export interface Capacity {
  readonly bytes: number;
  readonly source: CapacitySource;
}

/** Which WebGPU implementation opened a GPU. */
export type GpuApi = 'dawn' | 'navigator';

/** The JavaScript host the library runs in. */
export type Runtime = 'node' | 'deno' | 'browser';

/** What `multigpu devices` shows for one GPU, and its `--json` form. */
export interface GpuDescription {
  readonly index: number;
  readonly name: string; // gpu:N
  readonly adapter: string; // the adapter's own name
  readonly vendor: string;
  readonly architecture: string;
  readonly backend: string; // vulkan, metal, d3d12, ... or the browser's
  readonly api: GpuApi;
  readonly pciBusId: string | null;
  readonly fallback: boolean;
  readonly capacity: Capacity;
  readonly maxBufferSize: number;
  readonly maxStorageBufferBindingSize: number;
  readonly features: {
    readonly shaderF16: boolean;
    readonly subgroups: boolean;
    readonly timestampQuery: boolean;
    readonly subgroupMatrix: boolean;
  };
}

export interface CpuDescription {
  readonly name: 'cpu';
  readonly cores: number;
  readonly wasmSimd: boolean;
  readonly wasmThreads: boolean;
  readonly capacity: Capacity;
}
