import type { KernelRecorder } from '../recorder.ts';
import type { GpuTensor } from '../tensor.ts';
import { activationDtype, checkBindable, groupsFor, Uniforms, weightDefines, WORKGROUP_SIZE } from './elementwise-common.ts';

export type BinaryOp = 'add' | 'sub' | 'mul' | 'div';

const OP_CODE: Readonly<Record<BinaryOp, number>> = { add: 0, sub: 1, mul: 2, div: 3 };

/** How a broadcast reads its operands: out's merged shape (≤ 4 dims) and each operand's strides in it. */
export interface BroadcastPlan {
  readonly dims: readonly [number, number, number, number];
  readonly aStrides: readonly [number, number, number, number];
  readonly bStrides: readonly [number, number, number, number];
  /** Both operands are read at the output index itself. */
  readonly flat: boolean;
}

function contiguousStrides(shape: readonly number[]): number[] {
  const strides = new Array<number>(shape.length).fill(1);
  for (let k = shape.length - 2; k >= 0; k--) strides[k] = strides[k + 1]! * shape[k + 1]!;
  return strides;
}

/** Strides of `shape` read at the coordinates of `out` (NumPy rules: right-aligned, 1 broadcasts). */
function broadcastStrides(op: string, name: string, shape: readonly number[], out: readonly number[]): number[] {
  if (shape.length > out.length) throw new RangeError(`${op}: ${name} [${shape.join(', ')}] has more dimensions than out [${out.join(', ')}]`);
  const lead = out.length - shape.length;
  const own = contiguousStrides(shape);
  return out.map((d, k) => {
    if (k < lead) return 0;
    const s = shape[k - lead]!;
    if (s === d) return s === 1 ? 0 : own[k - lead]!;
    if (s === 1) return 0;
    throw new RangeError(`${op}: ${name} [${shape.join(', ')}] does not broadcast to out [${out.join(', ')}]`);
  });
}

/**
 * Plans a broadcast of a and b to out: size-1 dimensions dropped, neighbours that both
 * operands read contiguously (or both broadcast) merged, at most 4 left.
 */
export function broadcastPlan(op: string, outShape: readonly number[], aShape: readonly number[], bShape: readonly number[]): BroadcastPlan {
  const as = broadcastStrides(op, 'a', aShape, outShape);
  const bs = broadcastStrides(op, 'b', bShape, outShape);
  const dims: number[] = [];
  const sa: number[] = [];
  const sb: number[] = [];
  outShape.forEach((d, k) => {
    if (d === 1) return;
    const last = dims.length - 1;
    // Merge into the previous dimension when, for both operands, it continues this one.
    if (last >= 0 && sa[last] === as[k]! * d && sb[last] === bs[k]! * d) {
      dims[last] = dims[last]! * d;
      sa[last] = as[k]!;
      sb[last] = bs[k]!;
      return;
    }
    dims.push(d);
    sa.push(as[k]!);
    sb.push(bs[k]!);
  });
  if (dims.length > 4) throw new RangeError(`${op}: broadcasting [${aShape.join(', ')}] with [${bShape.join(', ')}] needs ${dims.length} dimensions; the kernel has 4`);
  const flat = dims.length <= 1 && (dims.length === 0 || (sa[0] === 1 && sb[0] === 1));
  while (dims.length < 4) {
    dims.unshift(1);
    sa.unshift(0);
    sb.unshift(0);
  }
  return {
    dims: dims as unknown as BroadcastPlan['dims'],
    aStrides: sa as unknown as BroadcastPlan['aStrides'],
    bStrides: sb as unknown as BroadcastPlan['bStrides'],
    flat,
  };
}

/**
 * out = a OP b with NumPy broadcasting (a bias along rows, a per-channel term in NCHW, a
 * per-batch row, a residual). a and out are activations (both f32, or both f16 with
 * shader-f16); b may be an f32 or f16 activation or a weight stored as f32, f16 or bf16.
 * Arithmetic is f32.
 */
export async function binary(rec: KernelRecorder, op: BinaryOp, a: GpuTensor, b: GpuTensor, out: GpuTensor): Promise<void> {
  const name = op;
  const dtype = activationDtype(name, rec.gpu, a, out);
  if (b.gpu !== rec.gpu) throw new RangeError(`${name}: b lives on ${b.gpu.name}, not ${rec.gpu.name}`);
  checkBindable(name, rec, a, b, out);
  const plan = broadcastPlan(name, out.shape, a.shape, b.shape);
  const n = out.elements;
  if (n === 0) return;
  const pipeline = await rec.pipeline('binary', {
    F16: dtype === 'f16', ...weightDefines(name, 'B', b), OP: OP_CODE[op], BROADCAST: !plan.flat, WORKGROUP_SIZE,
  });
  const u = new Uniforms(12).u32(n, plan.dims[1], plan.dims[2], plan.dims[3], ...plan.aStrides, ...plan.bStrides);
  rec.dispatch(pipeline, [a.buffer, b.buffer, out.buffer], u.bytes, groupsFor(n), `${name} ${dtype}`);
}

/** out = a * b, broadcasting (see binary). */
export function mul(rec: KernelRecorder, a: GpuTensor, b: GpuTensor, out: GpuTensor): Promise<void> {
  return binary(rec, 'mul', a, b, out);
}

/** out = a - b, broadcasting (see binary). */
export function sub(rec: KernelRecorder, a: GpuTensor, b: GpuTensor, out: GpuTensor): Promise<void> {
  return binary(rec, 'sub', a, b, out);
}

/** out = a / b, broadcasting (see binary). */
export function div(rec: KernelRecorder, a: GpuTensor, b: GpuTensor, out: GpuTensor): Promise<void> {
  return binary(rec, 'div', a, b, out);
}
