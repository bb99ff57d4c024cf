/**
 * Adapters from `navigator.gpu` (browsers, Deno's own wgpu). The API hands out one adapter
 * per request, so we ask for each kind a page can get and drop repeats: the same adapter
 * comes back as a new object every time, so identity is the adapter's reported facts.
 */
const REQUESTS: ReadonlyArray<GPURequestAdapterOptions | undefined> = [
  { powerPreference: 'high-performance' },
  { powerPreference: 'low-power' },
  undefined,
  { forceFallbackAdapter: true },
];

export function adapterIdentity(adapter: GPUAdapter): string {
  const info = adapter.info;
  const fallback = (info as { isFallbackAdapter?: boolean }).isFallbackAdapter === true;
  return JSON.stringify([info.vendor, info.architecture, info.device, info.description, fallback,
    adapter.limits.maxBufferSize, [...adapter.features].sort()]);
}

export async function listNavigatorAdapters(gpu: GPU): Promise<GPUAdapter[]> {
  const seen = new Set<string>();
  const adapters: GPUAdapter[] = [];
  for (const options of REQUESTS) {
    let adapter: GPUAdapter | null = null;
    try {
      adapter = await gpu.requestAdapter(options);
    } catch {
      continue; // e.g. a browser that rejects forceFallbackAdapter: that kind is simply absent
    }
    if (!adapter) continue;
    const id = adapterIdentity(adapter);
    if (seen.has(id)) continue;
    seen.add(id);
    adapters.push(adapter);
  }
  return adapters;
}

/** A readable name where the browser hides the description (privacy): "nvidia hopper". */
export function navigatorAdapterName(info: GPUAdapterInfo): string {
  return info.description || [info.vendor, info.architecture, info.device].filter(Boolean).join(' ') || 'WebGPU adapter';
}
