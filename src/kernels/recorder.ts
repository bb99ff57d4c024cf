import type { GpuDevice, TrackedBuffer } from '../devices/gpu-device.ts';
import { dispatchGrid } from './grid.ts';
import { kernelLimits, type KernelLimits } from './limits.ts';
import { computePipeline } from './pipelines.ts';
import { MAX_PROFILED_DISPATCHES, profilingOn, SubmitProfile } from './profiler.ts';
import type { ShaderDefines, ShaderName } from './shaders.ts';

/** A buffer, or a range of one, bound to a kernel's storage binding. */
export type Binding = GPUBuffer | { readonly buffer: GPUBuffer; readonly offset?: number; readonly size?: number };

interface Recorded {
  readonly pipeline: GPUComputePipeline;
  readonly bindings: readonly Binding[];
  readonly uniformOffset: number | null;
  readonly uniformBytes: number;
  readonly groups: readonly [number, number, number];
  readonly label: string;
}

const UNIFORM_ALIGN = 256;
/** Uniform bytes a pass may lay out before starting over at the top of the kept buffer (a decoding step uses ~90 KiB). */
const UNIFORM_PASS_CAP = 4 * 1024 * 1024;

/** getBindGroupLayout makes a new object on every call; a pipeline's layout never changes. */
const layouts = new WeakMap<GPUComputePipeline, GPUBindGroupLayout>();
const layoutOf = (pipeline: GPUComputePipeline): GPUBindGroupLayout => {
  let layout = layouts.get(pipeline);
  if (!layout) layouts.set(pipeline, (layout = pipeline.getBindGroupLayout(0)));
  return layout;
};

/** Identities for cache keys: never reused, so a key never names a destroyed buffer's successor. */
const ids = new WeakMap<object, number>();
let nextId = 1;
const idOf = (o: object): number => {
  let id = ids.get(o);
  if (id === undefined) ids.set(o, (id = nextId++));
  return id;
};

/** Bind groups a recorder keeps before starting over (a decode step reuses a few hundred). */
const BIND_GROUP_CACHE_LIMIT = 4096;


/**
 * Records kernel dispatches and submits them together, one command buffer per submit().
 * Every kernel declares its storage bindings first and its uniform `params` as the last
 * binding; shapes travel there, never in the shader text, so one pipeline serves every
 * shape. Uniforms of a whole submit share one buffer, allocated through the ledger.
 */
export class KernelRecorder {
  readonly gpu: GpuDevice;
  readonly limits: KernelLimits;
  #recorded: Recorded[] = [];
  #uniforms: Uint8Array[] = [];
  #uniformBytes = 0;

  /**
   * Kept across submits when the recorder is built with `reuseUniforms` (the runtime's, one per
   * backend): queue.writeBuffer is ordered after the submits before it, so rewriting it is safe,
   * and a step then allocates nothing (an allocation's error scopes cost a round trip to the
   * device). Freed by dispose(). Otherwise each submit makes one and frees it.
   */
  #uniformBuffer: TrackedBuffer | null = null;
  readonly #reuseUniforms: boolean;
  /**
   * reuseUniforms: where the next submit's uniforms go in the kept buffer. Submits of one pass
   * follow each other in it and rewind() starts the next pass at the top, so a dispatch's
   * uniform offset depends on its place in the pass, not on how the pass was cut into submits
   * (the runtime holds a step's work back while it waits for another device's values), and
   * its bind group is found again token after token.
   */
  #uniformBase = 0;
  /**
   * Bind groups by pipeline and bound ranges: a decoding step binds the same pooled activation
   * buffers, weights and uniform offsets token after token, and creating a bind group is the
   * largest host cost of a dispatch. Only with reuseUniforms (otherwise the uniform buffer is new
   * on every submit and nothing would hit).
   */
  readonly #bindGroups = new Map<string, GPUBindGroup>();

  constructor(gpu: GpuDevice, options: { reuseUniforms?: boolean } = {}) {
    this.gpu = gpu;
    this.#reuseUniforms = options.reuseUniforms ?? false;
    this.limits = kernelLimits(gpu);
  }

  pipeline(shader: ShaderName, defines: ShaderDefines): Promise<GPUComputePipeline> {
    return computePipeline(this.gpu, shader, defines);
  }

  get pending(): number {
    return this.#recorded.length;
  }

  /** A pass starts: its uniforms are laid out from the top of the kept buffer again (see #uniformBase). */
  rewind(): void {
    this.#uniformBase = 0;
  }

  /** Drops what was recorded and not submitted (the values it would read never came). */
  discard(): void {
    this.#recorded = [];
    this.#uniforms = [];
    this.#uniformBytes = 0;
  }

  /** Dispatches submitted over the recorder's life (the runtime reports them per step). */
  dispatched = 0;
  /** Bind groups it had to create (cache misses): a steady decode step should make none. */
  bindGroupsMade = 0;
  /** Command buffers submitted. */
  submits = 0;

  /**
   * `groups` beyond one dimension's limit are spread over x and y (kernels rebuild the linear
   * workgroup index as wg.x + wg.y * num_workgroups.x).
   */
  dispatch(pipeline: GPUComputePipeline, bindings: readonly Binding[], uniforms: ArrayBufferView | null,
    groups: number | readonly [number, number, number], label = pipeline.label): void {
    let uniformOffset: number | null = null;
    let uniformBytes = 0;
    if (uniforms) {
      const bytes = new Uint8Array(uniforms.buffer, uniforms.byteOffset, uniforms.byteLength);
      uniformOffset = this.#uniformBytes;
      uniformBytes = Math.max(16, Math.ceil(bytes.byteLength / 16) * 16);
      const copy = new Uint8Array(uniformBytes);
      copy.set(bytes);
      this.#uniforms.push(copy);
      this.#uniformBytes += Math.ceil(uniformBytes / UNIFORM_ALIGN) * UNIFORM_ALIGN;
    }
    const grid: [number, number, number] = typeof groups === 'number'
      ? [...dispatchGrid(groups, this.limits.maxComputeWorkgroupsPerDimension), 1]
      : [groups[0], groups[1], groups[2]];
    this.#recorded.push({ pipeline, bindings, uniformOffset, uniformBytes, groups: grid, label });
  }

  /**
   * Encodes and submits what was recorded. By default waits for the GPU to finish; `wait: false`
   * returns once submitted (the runtime orders everything on the one queue, and reads back
   * through mapAsync, which waits for the work before it).
   */
  async submit(options: { wait?: boolean } = {}): Promise<void> {
    const recorded = this.#recorded;
    const uniforms = this.#uniforms;
    const total = this.#uniformBytes;
    this.#recorded = [];
    this.#uniforms = [];
    this.#uniformBytes = 0;
    if (recorded.length === 0) return;
    this.dispatched += recorded.length;
    this.submits++;
    const device = this.gpu.device;
    const uniformBuffer = total > 0 ? await this.#uniformsFor(total) : null;
    const base = this.#reuseUniforms ? this.#uniformBase : 0;
    if (this.#reuseUniforms) this.#uniformBase += total;
    const profile = profilingOn(this.gpu) ? await SubmitProfile.create(this.gpu, recorded.slice(0, MAX_PROFILED_DISPATCHES).map((r) => r.label)) : null;
    // From here to queue.submit nothing awaits: the uniform write and the dispatches that read it
    // reach the queue together, after every earlier submit (which read the buffer's old contents).
    {
      if (uniformBuffer) {
        const staging = new Uint8Array(total);
        let i = 0;
        for (const r of recorded) if (r.uniformOffset !== null) staging.set(uniforms[i++]!, r.uniformOffset);
        device.queue.writeBuffer(uniformBuffer.buffer, base, staging);
      }
      const encoder = device.createCommandEncoder({ label: 'kernels' });
      if (profile) {
        // One pass per dispatch, timed at its ends.
        recorded.forEach((r, i) => {
          const pass = encoder.beginComputePass({ label: r.label, ...(i < profile.labels.length ? { timestampWrites: profile.writes(i) } : {}) });
          this.#encode(pass, r, uniformBuffer, base);
          pass.end();
        });
        profile.encodeResolve(encoder);
      } else {
        const pass = encoder.beginComputePass({ label: 'kernels' });
        for (const r of recorded) this.#encode(pass, r, uniformBuffer, base);
        pass.end();
      }
      device.queue.submit([encoder.finish()]);
    }
    profile?.collectLater();
    // Safe before the work finishes: WebGPU frees a destroyed buffer once submitted work using it completes.
    if (!this.#reuseUniforms) uniformBuffer?.destroy();
    if (options.wait ?? true) await device.queue.onSubmittedWorkDone();
  }

  #encode(pass: GPUComputePassEncoder, r: Recorded, uniformBuffer: TrackedBuffer | null, base: number): void {
    pass.setPipeline(r.pipeline);
    pass.setBindGroup(0, this.#bindGroup(r, uniformBuffer, base));
    pass.dispatchWorkgroups(r.groups[0], r.groups[1], r.groups[2]);
  }

  #bindGroup(r: Recorded, uniformBuffer: TrackedBuffer | null, base: number): GPUBindGroup {
    const entries: GPUBindGroupEntry[] = r.bindings.map((b, binding) => ({
      binding,
      // A GPUBuffer has no `buffer` property; a range does.
      resource: 'buffer' in b ? { buffer: b.buffer, offset: b.offset ?? 0, size: b.size } : { buffer: b },
    }));
    if (r.uniformOffset !== null) entries.push({ binding: r.bindings.length, resource: { buffer: uniformBuffer!.buffer, offset: base + r.uniformOffset, size: r.uniformBytes } });
    const make = () => this.gpu.device.createBindGroup({ label: r.label, layout: layoutOf(r.pipeline), entries });
    if (!this.#reuseUniforms) return make();
    let key = `${idOf(r.pipeline)}`;
    for (const e of entries) {
      const res = e.resource as GPUBufferBinding;
      key += `|${idOf(res.buffer)}:${res.offset ?? 0}:${res.size ?? -1}`;
    }
    let group = this.#bindGroups.get(key);
    if (!group) {
      if (this.#bindGroups.size >= BIND_GROUP_CACHE_LIMIT) this.#bindGroups.clear();
      group = make();
      this.bindGroupsMade++;
      this.#bindGroups.set(key, group);
    }
    return group;
  }

  /** The buffer for a submit's `bytes` of uniforms; with reuseUniforms, room for them at #uniformBase. */
  async #uniformsFor(bytes: number): Promise<TrackedBuffer> {
    const usage = GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST;
    if (!this.#reuseUniforms) return this.gpu.createBuffer({ label: 'kernel uniforms', size: bytes, usage });
    const have = this.#uniformBuffer;
    const end = this.#uniformBase + bytes;
    if (have && have.bytes >= end) return have;
    // A pass longer than the cap starts over at the top: queue writes are ordered after the
    // submits that read the old contents, so any offset is safe; only the cache misses.
    if (end > UNIFORM_PASS_CAP && this.#uniformBase > 0) {
      this.#uniformBase = 0;
      if (have && have.bytes >= bytes) return have;
    }
    // Dispatches already submitted keep the old one alive until they complete.
    have?.destroy();
    this.#uniformBuffer = null;
    this.#bindGroups.clear();
    this.#uniformBuffer = await this.gpu.createBuffer({ label: 'kernel uniforms', size: Math.max(64 * 1024, 2 ** Math.ceil(Math.log2(this.#uniformBase + bytes))), usage });
    return this.#uniformBuffer;
  }

  /** Bytes of the uniform buffer it keeps (reuseUniforms). */
  get heldBytes(): number {
    return this.#uniformBuffer?.bytes ?? 0;
  }

  /** Frees the uniform buffer it keeps. */
  dispose(): void {
    this.#bindGroups.clear();
    this.#uniformBuffer?.destroy();
    this.#uniformBuffer = null;
  }
}
