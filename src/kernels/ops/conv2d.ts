import type { KernelRecorder } from '../recorder.ts';
import type { GpuTensor } from '../tensor.ts';
import { activationDtype, checkBindable, expectShape, Uniforms, weightDefines, WORKGROUP_SIZE } from './elementwise-common.ts';

/** Zero padding: one number for every side, [vertical, horizontal] as PyTorch's Conv2d, or each side. */
export type Conv2dPadding = number | readonly [number, number] | { readonly top: number; readonly bottom: number; readonly left: number; readonly right: number };

export interface Conv2dOptions {
  readonly stride?: number | readonly [number, number];
  /**
   * Default 0. diffusers' Downsample2D: the UNet's (padding=1) is `1` with stride 2; the VAE's
   * (padding=0) pads (0, 1, 0, 1) with F.pad first, which is `{ top: 0, bottom: 1, left: 0, right: 1 }` here.
   */
  readonly padding?: Conv2dPadding;
  readonly dilation?: number | readonly [number, number];
}

interface Geometry {
  readonly stride: readonly [number, number];
  readonly dilation: readonly [number, number];
  readonly pad: { readonly top: number; readonly bottom: number; readonly left: number; readonly right: number };
}

function pair(op: string, what: string, v: number | readonly [number, number] | undefined, fallback: number): [number, number] {
  const p: [number, number] = v === undefined ? [fallback, fallback] : typeof v === 'number' ? [v, v] : [v[0], v[1]];
  if (!p.every((x) => Number.isInteger(x) && x >= (what === 'padding' ? 0 : 1))) throw new RangeError(`${op}: bad ${what} ${JSON.stringify(v)}`);
  return p;
}

function geometry(options: Conv2dOptions): Geometry {
  const op = 'conv2d';
  const pad = options.padding;
  let sides: Geometry['pad'];
  if (pad !== undefined && typeof pad === 'object' && !Array.isArray(pad)) {
    sides = pad as Geometry['pad'];
    if (![sides.top, sides.bottom, sides.left, sides.right].every((x) => Number.isInteger(x) && x >= 0)) throw new RangeError(`${op}: bad padding ${JSON.stringify(pad)}`);
  } else {
    const [v, h] = pair(op, 'padding', pad as number | readonly [number, number] | undefined, 0);
    sides = { top: v, bottom: v, left: h, right: h };
  }
  return { stride: pair(op, 'stride', options.stride, 1), dilation: pair(op, 'dilation', options.dilation, 1), pad: sides };
}

/** out's shape [N, Cout, Hout, Wout] for x [N, Cin, H, W] and a weight [Cout, Cin, KH, KW]. */
export function conv2dOutputShape(xShape: readonly number[], weightShape: readonly number[], options: Conv2dOptions = {}): [number, number, number, number] {
  const { stride, dilation, pad } = geometry(options);
  const [n, , h, w] = xShape as [number, number, number, number];
  const [cout, , kh, kw] = weightShape as [number, number, number, number];
  const hout = Math.floor((h + pad.top + pad.bottom - dilation[0] * (kh - 1) - 1) / stride[0]) + 1;
  const wout = Math.floor((w + pad.left + pad.right - dilation[1] * (kw - 1) - 1) / stride[1]) + 1;
  return [n, cout, hout, wout];
}

/** Which kernel runs a convolution: `auto` picks the implicit GEMM where its tile fills (`tiled-wide`: 128 channels a workgroup). */
export type Conv2dKernel = 'auto' | 'direct' | 'tiled' | 'tiled-wide';

/**
 * The implicit GEMM (conv2d_tiled.wgsl: 64 or, from 128 output channels, 128 channels × 64
 * pixels a workgroup, 16 or 32 accumulators an invocation) wherever there are enough output
 * channels to fill most of its tile; the direct kernel (16 channels × 64 pixels) for narrow
 * outputs (a VAE's 3-channel output conv).
 */
export function conv2dKernelFor(cout: number, pixels: number): Exclude<Conv2dKernel, 'auto'> {
  if (pixels < 64 || cout < 48) return 'direct';
  return cout >= 128 ? 'tiled-wide' : 'tiled';
}

/**
 * 2-D convolution on NCHW (the SD VAE and UNet's 3×3 pad 1, 1×1, the downsamplers' 3×3 stride
 * 2): x and out f32 (or f16 with shader-f16), weight [Cout, Cin, KH, KW] (KH·KW ≤ 64) and bias
 * [Cout] (or null) stored as f32, f16 or bf16. groups = 1. f32 accumulation.
 */
export async function conv2d(rec: KernelRecorder, x: GpuTensor, weight: GpuTensor, bias: GpuTensor | null, out: GpuTensor,
  options: Conv2dOptions = {}, kernel: Conv2dKernel = 'auto'): Promise<void> {
  const op = 'conv2d' as const;
  const dtype = activationDtype(op, rec.gpu, x, out);
  if (x.shape.length !== 4 || weight.shape.length !== 4) throw new RangeError(`${op}: x must be [N, C, H, W] and weight [Cout, Cin, KH, KW]`);
  const [batch, cin, h, w] = x.shape as [number, number, number, number];
  const [cout, wcin, kh, kw] = weight.shape as [number, number, number, number];
  if (wcin !== cin) throw new RangeError(`${op}: weight expects ${wcin} input channels, x has ${cin} (groups are not supported)`);
  if (kh * kw > 64 || kh < 1 || kw < 1) throw new RangeError(`${op}: ${kh}×${kw} kernels are not supported (KH·KW ≤ 64)`);
  if (bias) expectShape(op, 'bias', bias, [cout]);
  const outShape = conv2dOutputShape(x.shape, weight.shape, options);
  if (outShape[2] < 1 || outShape[3] < 1) throw new RangeError(`${op}: the kernel does not fit the padded ${h}×${w} input`);
  expectShape(op, 'out', out, outShape);
  checkBindable(op, rec, x, weight, out, ...(bias ? [bias] : []));
  if (out.elements === 0) return;
  const { stride, dilation, pad } = geometry(options);
  const [, , hout, wout] = outShape;
  const chosen = kernel === 'auto' ? conv2dKernelFor(cout, hout * wout) : kernel;
  const tiled = chosen !== 'direct';
  const coVec = chosen === 'tiled-wide' ? 2 : 1;
  const coTiles = Math.ceil(cout / (tiled ? 64 * coVec : 16));
  const pxTiles = Math.ceil((hout * wout) / 64);
  const pipeline = await rec.pipeline(tiled ? 'conv2d_tiled' : op, {
    F16: dtype === 'f16', ...weightDefines(op, 'W', weight), ...weightDefines(op, 'B', bias), HAS_BIAS: bias !== null, WORKGROUP_SIZE,
    ...(tiled ? { CO_VEC: coVec } : {}),
  });
  const ciTile = Math.max(1, Math.floor(64 / (kh * kw)));
  const u = new Uniforms(18).u32(batch, cin, h, w, cout, hout, wout, kh, kw, stride[0], stride[1], pad.top, pad.left,
    dilation[0], dilation[1], ciTile, coTiles, pxTiles);
  rec.dispatch(pipeline, [x.buffer, weight.buffer, (bias ?? weight).buffer, out.buffer], u.bytes, batch * coTiles * pxTiles,
    `${op}${tiled ? ` ${chosen}` : ''} ${kh}x${kw} ${dtype}`);
}
