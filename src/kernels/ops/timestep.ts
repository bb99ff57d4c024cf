import type { KernelRecorder } from '../recorder.ts';
import type { GpuTensor } from '../tensor.ts';
import { activationDtype, groupsFor, WORKGROUP_SIZE } from './elementwise-common.ts';

/** diffusers' get_timestep_embedding options (its defaults), plus FLUX's timestep multiplier. */
export interface TimestepEmbeddingOptions {
  /** [cos, sin] instead of [sin, cos] (the SD UNet and FLUX set it). Default false. */
  readonly flipSinToCos?: boolean;
  /** Frequencies exp(-ln(maxPeriod)·j / (half − shift)). Default 1; the SD UNet (freq_shift) and FLUX use 0. */
  readonly downscaleFreqShift?: number;
  /** Multiplies the angles. Default 1. */
  readonly scale?: number;
  /** Default 10000. */
  readonly maxPeriod?: number;
  /** Multiplies the timesteps first, in f32 as the model does (FLUX: `timestep.to(dtype) * 1000`). Default 1. */
  readonly timestepMultiplier?: number;
  /**
   * Whose f32 rounding of `exponent / (half − shift)` to reproduce: PyTorch on CUDA multiplies by
   * the divisor's f32 reciprocal (its div kernel does so for a scalar divisor), on the CPU it
   * divides. The angles can differ in their last bit (up to 6e-5 rad at t = 999, dim 320).
   * Default 'cuda', as the reference fixtures were computed on a GPU.
   */
  readonly pytorchDevice?: 'cuda' | 'cpu';
}

const f32 = Math.fround;
/** Values the kernel's uniform table holds per dispatch (4095 vec4s). */
const TABLE = 4095 * 4;

/**
 * The embedding table [timesteps.length, dim] on the host. The rounding follows PyTorch's f32
 * steps (exponents, frequencies, t·freq and the angle scale are f32 there, so they are f32
 * here), and sin and cos are taken in f64 of those f32 angles: exact to the last f32 bit, at
 * every angle. (WGSL's sin and cos are specified only on [−π, π] and the angles reach 1000
 * rad.) PyTorch's own exp may differ from the correctly rounded one here by an ulp.
 */
export function timestepTable(timesteps: ArrayLike<number>, dim: number, options: TimestepEmbeddingOptions = {}): Float32Array {
  if (!Number.isInteger(dim) || dim < 1) throw new RangeError(`timestep_embedding: dim ${dim} must be a positive integer`);
  const half = Math.floor(dim / 2);
  const shift = options.downscaleFreqShift ?? 1;
  const maxPeriod = options.maxPeriod ?? 10000;
  const scale = f32(options.scale ?? 1);
  const multiplier = f32(options.timestepMultiplier ?? 1);
  const logPeriod = f32(-Math.log(maxPeriod));
  const divisor = f32(half - shift);
  const reciprocal = f32(1 / divisor);
  const cuda = (options.pytorchDevice ?? 'cuda') === 'cuda';
  if (half > 0 && divisor === 0) throw new RangeError(`timestep_embedding: dim ${dim} with downscaleFreqShift ${shift} divides by zero (PyTorch would give NaN)`);
  const freqs = new Float64Array(half);
  for (let j = 0; j < half; j++) {
    const e = f32(logPeriod * j);
    freqs[j] = f32(Math.exp(cuda ? f32(e * reciprocal) : f32(e / divisor)));
  }
  const out = new Float32Array(timesteps.length * dim);
  const flip = options.flipSinToCos ?? false;
  for (let b = 0; b < timesteps.length; b++) {
    const t = f32(f32(timesteps[b]!) * multiplier);
    const row = b * dim;
    for (let j = 0; j < half; j++) {
      const angle = f32(scale * f32(t * freqs[j]!));
      out[row + (flip ? half : 0) + j] = Math.sin(angle);
      out[row + (flip ? 0 : half) + j] = Math.cos(angle);
    }
    // An odd dim leaves the last column zero, as diffusers pads it.
  }
  return out;
}

/**
 * Sinusoidal timestep embeddings into out [B, dim] (f32, or f16 with shader-f16): the table
 * comes from `timestepTable` on the host and travels in the recorded dispatches' uniforms
 * (16,380 values each), so nothing is uploaded outside the recorder's submit.
 */
export async function timestepEmbedding(rec: KernelRecorder, timesteps: ArrayLike<number>, out: GpuTensor,
  options: TimestepEmbeddingOptions = {}): Promise<void> {
  const op = 'timestep_embedding';
  const dtype = activationDtype(op, rec.gpu, out);
  if (out.shape.length !== 2 || out.shape[0] !== timesteps.length) {
    throw new RangeError(`${op}: out must be [${timesteps.length}, dim], got [${out.shape.join(', ')}]`);
  }
  const table = timestepTable(timesteps, out.shape[1]!, options);
  if (table.length === 0) return;
  const pipeline = await rec.pipeline('timestep', { F16: dtype === 'f16', WORKGROUP_SIZE });
  for (let offset = 0; offset < table.length; offset += TABLE) {
    const n = Math.min(TABLE, table.length - offset);
    const uniforms = new ArrayBuffer(16 + TABLE * 4);
    new Uint32Array(uniforms, 0, 2).set([n, offset]);
    new Float32Array(uniforms, 16, TABLE).set(table.subarray(offset, offset + n));
    rec.dispatch(pipeline, [out.buffer], new Uint8Array(uniforms), groupsFor(n), `${op} ${dtype}`);
  }
}
