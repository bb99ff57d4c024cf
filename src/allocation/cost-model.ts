/**
 * What auto mode weighs, per block stored off the compute device: copying its weights to the
 * compute device every pass (stream) against running it where it is stored and moving only
 * activations (pipeline).
 *
 * The default figures are written-down estimates, used by `multigpu plan` (which runs nothing);
 * `loadModel` in auto mode replaces them with figures measured on the devices it loads onto
 * (src/runtime/measure.ts). Bandwidths in bytes/s, throughputs in FLOP/s.
 */
export interface CostModel {
  /** Host-visible (pinned) buffer → GPU, a DMA over the link. PCIe 4.0 x16 in practice. */
  readonly hostToGpuBytesPerSecond: number;
  /** GPU → GPU without peer-to-peer: GPU → host, then host → GPU, with a JavaScript copy between. */
  readonly gpuToGpuBytesPerSecond: number;
  /** Sustained matrix throughput of a GPU on our kernels (f32). */
  readonly gpuFlopsPerSecond: number;
  /** WebAssembly SIMD on worker threads. */
  readonly cpuFlopsPerSecond: number;
  /** Fixed cost of a hop between devices (submit, map, await). */
  readonly hopSeconds: number;
  /** The work one pass does per block: tokens (LM) or latent positions (diffusion). */
  readonly tokensPerPass: number;
}

export const DEFAULT_COST_MODEL: CostModel = Object.freeze({
  hostToGpuBytesPerSecond: 12e9,
  gpuToGpuBytesPerSecond: 5e9,
  gpuFlopsPerSecond: 20e12,
  cpuFlopsPerSecond: 100e9,
  hopSeconds: 200e-6,
  tokensPerPass: 512,
});

export interface CostInput {
  readonly storedOn: string; // gpu:N or cpu
  readonly compute: string;
  readonly bytes: number;
  readonly parameters: number;
  /** Activation bytes that cross a device boundary per pass (hidden size × tokens × 4). */
  readonly activationBytes: number;
}

export interface CostEstimate {
  readonly streamSeconds: number;
  readonly pipelineSeconds: number;
  readonly choice: 'stream' | 'pipeline';
  readonly reason: string;
}

const ms = (s: number) => `${(s * 1000).toFixed(s < 0.01 ? 3 : 1)} ms`;

export function estimate(model: CostModel, input: CostInput): CostEstimate {
  const fromCpu = input.storedOn === 'cpu';
  const link = fromCpu ? model.hostToGpuBytesPerSecond : model.gpuToGpuBytesPerSecond;
  const flops = 2 * input.parameters * model.tokensPerPass;
  // Stream: copy the weights, then compute on the compute GPU (the compute itself is paid
  // either way on some device, so it appears on both sides).
  const computeOnGpu = flops / model.gpuFlopsPerSecond;
  const streamSeconds = model.hopSeconds + input.bytes / link + computeOnGpu;
  // Pipeline: compute where stored; activations go there and come back.
  const computeThere = flops / (fromCpu ? model.cpuFlopsPerSecond : model.gpuFlopsPerSecond);
  const activationLink = fromCpu ? model.hostToGpuBytesPerSecond : model.gpuToGpuBytesPerSecond;
  const pipelineSeconds = 2 * model.hopSeconds + (2 * input.activationBytes) / activationLink + computeThere;
  const choice = streamSeconds <= pipelineSeconds ? 'stream' : 'pipeline';
  const reason = choice === 'stream'
    ? `stream: copying it takes ${ms(streamSeconds)} a pass, running it on ${input.storedOn} ${ms(pipelineSeconds)}`
    : `pipeline: running it on ${input.storedOn} takes ${ms(pipelineSeconds)} a pass, copying it ${ms(streamSeconds)}`;
  return { streamSeconds, pipelineSeconds, choice, reason };
}
