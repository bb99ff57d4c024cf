import type { GpuDevice, TrackedBuffer } from '../devices/gpu-device.ts';
import { dispatchGrid } from './grid.ts';
import { kernelLimits, type KernelLimits } from './limits.ts';
import { computePipeline } from './pipelines.ts';
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
    const device = this.gpu.device;
    const uniformBuffer = total > 0 ? await this.#uniformsFor(total) : null;
    // From here to queue.submit nothing awaits: the uniform write and the dispatches that read it
    // reach the queue together, after every earlier submit (which read the buffer's old contents).
    {
      if (uniformBuffer) {
        const staging = new Uint8Array(total);
        let i = 0;
        for (const r of recorded) if (r.uniformOffset !== null) staging.set(uniforms[i++]!, r.uniformOffset);
        device.queue.writeBuffer(uniformBuffer.buffer, 0, staging);
      }
      const encoder = device.createCommandEncoder({ label: 'kernels' });
      const pass = encoder.beginComputePass({ label: 'kernels' });
      for (const r of recorded) {
        const entries: GPUBindGroupEntry[] = r.bindings.map((b, binding) => ({
          binding,
          // A GPUBuffer has no `buffer` property; a range does.
          resource: 'buffer' in b ? { buffer: b.buffer, offset: b.offset ?? 0, size: b.size } : { buffer: b },
        }));
        if (r.uniformOffset !== null) entries.push({ binding: r.bindings.length, resource: { buffer: uniformBuffer!.buffer, offset: r.uniformOffset, size: r.uniformBytes } });
        pass.setPipeline(r.pipeline);
        pass.setBindGroup(0, device.createBindGroup({ label: r.label, layout: r.pipeline.getBindGroupLayout(0), entries }));
        pass.dispatchWorkgroups(r.groups[0], r.groups[1], r.groups[2]);
      }
      pass.end();
      device.queue.submit([encoder.finish()]);
    }
    // Safe before the work finishes: WebGPU frees a destroyed buffer once submitted work using it completes.
    if (!this.#reuseUniforms) uniformBuffer?.destroy();
    if (options.wait ?? true) await device.queue.onSubmittedWorkDone();
  }

  async #uniformsFor(bytes: number): Promise<TrackedBuffer> {
    const usage = GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST;
    if (!this.#reuseUniforms) return this.gpu.createBuffer({ label: 'kernel uniforms', size: bytes, usage });
    const have = this.#uniformBuffer;
    if (have && have.bytes >= bytes) return have;
    // Dispatches already submitted keep the old one alive until they complete.
    have?.destroy();
    this.#uniformBuffer = null;
    this.#uniformBuffer = await this.gpu.createBuffer({ label: 'kernel uniforms', size: Math.max(64 * 1024, 2 ** Math.ceil(Math.log2(bytes))), usage });
    return this.#uniformBuffer;
  }

  /** Bytes of the uniform buffer it keeps (reuseUniforms). */
  get heldBytes(): number {
    return this.#uniformBuffer?.bytes ?? 0;
  }

  /** Frees the uniform buffer it keeps. */
  dispose(): void {
    this.#uniformBuffer?.destroy();
    this.#uniformBuffer = null;
  }
}
