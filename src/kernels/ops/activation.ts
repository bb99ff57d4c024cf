import type { KernelRecorder } from '../recorder.ts';
import type { GpuTensor } from '../tensor.ts';
import { activationDtype, checkBindable, expectShape, groupsFor, rowsOf, Uniforms, WORKGROUP_SIZE } from './elementwise-common.ts';

/**
 * gelu: x·Φ(x) with erf (PyTorch's default GELU, diffusers' GEGLU); gelu_tanh: the tanh
 * approximation (GPT-2's gelu_new, T5's gated-gelu, FLUX's gelu-approximate); quick_gelu:
 * x·sigmoid(1.702x) (CLIP); silu: x·sigmoid(x) (Llama, the VAE and UNet).
 */
export type ActivationKind = 'gelu' | 'gelu_tanh' | 'quick_gelu' | 'silu';

export const ACTIVATIONS: readonly ActivationKind[] = ['gelu', 'gelu_tanh', 'quick_gelu', 'silu'];

const ACT_CODE: Readonly<Record<ActivationKind, number>> = { gelu: 0, gelu_tanh: 1, quick_gelu: 2, silu: 3 };

function actCode(kind: ActivationKind): number {
  const code = ACT_CODE[kind];
  if (code === undefined) throw new RangeError(`unknown activation "${kind}" (known: ${ACTIVATIONS.join(', ')})`);
  return code;
}

/** out = act(x), element-wise; f32 arithmetic, x and out f32 (or f16 with shader-f16). */
export async function activation(rec: KernelRecorder, kind: ActivationKind, x: GpuTensor, out: GpuTensor): Promise<void> {
  const dtype = activationDtype(kind, rec.gpu, x, out);
  if (x.elements !== out.elements) throw new RangeError(`${kind}: x has ${x.elements} elements, out ${out.elements}`);
  checkBindable(kind, rec, x, out);
  const n = out.elements;
  if (n === 0) return;
  const pipeline = await rec.pipeline('activation', { F16: dtype === 'f16', ACT: actCode(kind), GATED: false, WORKGROUP_SIZE });
  rec.dispatch(pipeline, [x.buffer, out.buffer], new Uniforms(6).u32(n, 1, 0, 0, 0, 0).bytes, groupsFor(n), `${kind} ${dtype}`);
}

/**
 * Gated MLP activation on separate tensors: out = act(gate) * up, all [..., F]
 * (Llama's SwiGLU: silu(gate_proj(x)) * up_proj(x); T5's gated-gelu: gelu_tanh(wi_0(x)) * wi_1(x)).
 */
export async function gatedMlp(rec: KernelRecorder, kind: ActivationKind, gate: GpuTensor, up: GpuTensor, out: GpuTensor): Promise<void> {
  const op = `gated ${kind}`;
  const dtype = activationDtype(op, rec.gpu, gate, up, out);
  expectShape(op, 'up', up, gate.shape);
  expectShape(op, 'out', out, gate.shape);
  const { cols } = rowsOf(out);
  await gated(rec, kind, dtype, gate, up, out, cols, { offset: 0, stride: cols }, { offset: 0, stride: cols });
}

/**
 * Gated MLP activation on the two halves of one projection x [..., 2F] into out [..., F]:
 * `gate: 'second'` is diffusers' GEGLU (`hidden, gate = proj(x).chunk(2, -1)`, out = hidden *
 * act(gate)); `gate: 'first'` a fused gate_up projection with the gate first.
 */
export async function gatedMlpFused(rec: KernelRecorder, kind: ActivationKind, x: GpuTensor, out: GpuTensor,
  options: { readonly gate: 'first' | 'second' }): Promise<void> {
  const op = `gated ${kind} (fused)`;
  const dtype = activationDtype(op, rec.gpu, x, out);
  const { cols } = rowsOf(out);
  expectShape(op, 'x', x, [...out.shape.slice(0, -1), 2 * cols]);
  const first = { offset: 0, stride: 2 * cols };
  const second = { offset: cols, stride: 2 * cols };
  const [g, u] = options.gate === 'first' ? [first, second] : [second, first];
  await gated(rec, kind, dtype, x, x, out, cols, g, u);
}

/** Llama's SwiGLU: out = silu(gate) * up. */
export function swiglu(rec: KernelRecorder, gate: GpuTensor, up: GpuTensor, out: GpuTensor): Promise<void> {
  return gatedMlp(rec, 'silu', gate, up, out);
}

/** diffusers' GEGLU: x [..., 2F] = (hidden, gate); out = hidden * gelu(gate) with erf. */
export function geglu(rec: KernelRecorder, x: GpuTensor, out: GpuTensor): Promise<void> {
  return gatedMlpFused(rec, 'gelu', x, out, { gate: 'second' });
}

async function gated(rec: KernelRecorder, kind: ActivationKind, dtype: string, gate: GpuTensor, up: GpuTensor, out: GpuTensor, cols: number,
  g: { offset: number; stride: number }, u: { offset: number; stride: number }): Promise<void> {
  checkBindable(`gated ${kind}`, rec, gate, up, out);
  const n = out.elements;
  if (n === 0) return;
  const pipeline = await rec.pipeline('activation', { F16: dtype === 'f16', ACT: actCode(kind), GATED: true, WORKGROUP_SIZE });
  const uniforms = new Uniforms(6).u32(n, cols, g.offset, g.stride, u.offset, u.stride);
  rec.dispatch(pipeline, [gate.buffer, up.buffer, out.buffer], uniforms.bytes, groupsFor(n), `gated ${kind} ${dtype}`);
}
