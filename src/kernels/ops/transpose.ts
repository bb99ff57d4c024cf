import type { KernelRecorder } from '../recorder.ts';
import type { GpuTensor } from '../tensor.ts';
import { layoutElement } from './concat.ts';
import { checkBindable, groupsFor, Uniforms, WORKGROUP_SIZE } from './elementwise-common.ts';

/** A permute after merging: out's dims (≤ 4) and the input stride of each. */
export interface PermutePlan {
  readonly dims: readonly number[];
  readonly strides: readonly number[];
  /** A batched 2-D transpose [batch, rows, cols] → [batch, cols, rows], or null. */
  readonly tiled: { readonly batch: number; readonly rows: number; readonly cols: number } | null;
}

/** Merges the output dimensions that the input reads contiguously together, and spots batched 2-D transposes. */
export function permutePlan(op: string, shape: readonly number[], perm: readonly number[]): PermutePlan {
  const rank = shape.length;
  if (perm.length !== rank || [...perm].sort((a, b) => a - b).some((p, k) => p !== k)) {
    throw new RangeError(`${op}: [${perm.join(', ')}] is not a permutation of ${rank} dimensions`);
  }
  const inStrides = new Array<number>(rank).fill(1);
  for (let k = rank - 2; k >= 0; k--) inStrides[k] = inStrides[k + 1]! * shape[k + 1]!;
  const dims: number[] = [];
  const strides: number[] = [];
  for (const p of perm) {
    const d = shape[p]!;
    if (d === 1) continue;
    const s = inStrides[p]!;
    const last = dims.length - 1;
    if (last >= 0 && strides[last] === s * d) {
      dims[last] = dims[last]! * d;
      strides[last] = s;
    } else {
      dims.push(d);
      strides.push(s);
    }
  }
  if (dims.length > 4) throw new RangeError(`${op}: permuting [${shape.join(', ')}] by [${perm.join(', ')}] needs ${dims.length} dimensions; the kernel has 4`);
  let tiled: PermutePlan['tiled'] = null;
  // out [.., D1, D2] read from an input [.., D2, D1]: the inner two are a transpose.
  const k = dims.length;
  if (k >= 2 && k <= 3 && strides[k - 2] === 1 && strides[k - 1] === dims[k - 2]) {
    const batch = k === 3 ? dims[0]! : 1;
    if (k === 2 || strides[0] === dims[1]! * dims[2]!) tiled = { batch, rows: dims[k - 1]!, cols: dims[k - 2]! };
  }
  return { dims, strides, tiled };
}

/**
 * out = x.permute(perm) (PyTorch semantics): out.shape[k] = x.shape[perm[k]], elements moved
 * as bits (f32, i32, u32, or f16 with shader-f16). Up to 4 dimensions after merging the ones
 * that stay together ([B, L, H, D] ↔ [B, H, L, D] is 4, NCHW → NHWC is 3). Batched 2-D
 * transposes go through a tiled kernel; everything else through a gather.
 */
export async function permute(rec: KernelRecorder, x: GpuTensor, out: GpuTensor, perm: readonly number[]): Promise<void> {
  const op = 'permute';
  const plan = permutePlan(op, x.shape, perm);
  const want = perm.map((p) => x.shape[p]!);
  if (out.shape.length !== want.length || out.shape.some((d, k) => d !== want[k])) {
    throw new RangeError(`${op}: out must be [${want.join(', ')}], got [${out.shape.join(', ')}]`);
  }
  if (out.dtype !== x.dtype) throw new RangeError(`${op}: x is ${x.dtype}, out is ${out.dtype}`);
  const defines = layoutElement(op, rec, x.dtype);
  checkBindable(op, rec, x, out);
  const n = x.elements;
  if (n === 0) return;
  if (plan.tiled) {
    const { batch, rows, cols } = plan.tiled;
    const colTiles = Math.ceil(cols / 16);
    const groups = batch * Math.ceil(rows / 16) * colTiles;
    const pipeline = await rec.pipeline('transpose', { ...defines, TILED: true, WORKGROUP_SIZE });
    const u = new Uniforms(8).u32(batch, rows, cols, colTiles, 0, 0, 0, 0);
    rec.dispatch(pipeline, [x.buffer, out.buffer], u.bytes, groups, `${op} tiled ${x.dtype}`);
    return;
  }
  const dims = [...plan.dims];
  const strides = [...plan.strides];
  while (dims.length < 4) {
    dims.unshift(1);
    strides.unshift(0);
  }
  const pipeline = await rec.pipeline('transpose', { ...defines, TILED: false, WORKGROUP_SIZE });
  const u = new Uniforms(8).u32(n, dims[1]!, dims[2]!, dims[3]!, ...strides);
  rec.dispatch(pipeline, [x.buffer, out.buffer], u.bytes, groupsFor(n), `${op} ${x.dtype}`);
}

/** out = x.transpose(dim0, dim1) (PyTorch semantics; negative dims count from the end). */
export function transpose(rec: KernelRecorder, x: GpuTensor, out: GpuTensor, dim0 = -2, dim1 = -1): Promise<void> {
  const rank = x.shape.length;
  const a = dim0 < 0 ? dim0 + rank : dim0;
  const b = dim1 < 0 ? dim1 + rank : dim1;
  if (a < 0 || a >= rank || b < 0 || b >= rank) throw new RangeError(`transpose: dims ${dim0}, ${dim1} are outside a rank-${rank} tensor`);
  const perm = [...Array(rank).keys()];
  perm[a] = b;
  perm[b] = a;
  return permute(rec, x, out, perm);
}
