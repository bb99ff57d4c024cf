import { bindingChunks } from '../limits.ts';
import type { Binding, KernelRecorder } from '../recorder.ts';
import { GPU_DTYPE_LAYOUT, type GpuTensor } from '../tensor.ts';
import { activationDtype, checkBindable, expectShape, groupsFor, Uniforms, weightDefines, WORKGROUP_SIZE } from './elementwise-common.ts';

/**
 * Embedding gather: out[..., :] = table[ids[...], :]. ids are i32 (or u32) of any shape; the
 * table is [vocab, dim] in its stored form (f32, f16 or bf16, never widened in memory); out is
 * [...ids.shape, dim], f32 or (with shader-f16) f16. Ids outside [0, vocab) give rows of zeros.
 * A table larger than one binding (maxStorageBufferBindingSize) is bound in row ranges that
 * `bindingChunks` plans, one dispatch each.
 */
export async function embedding(rec: KernelRecorder, ids: GpuTensor, table: GpuTensor, out: GpuTensor): Promise<void> {
  const op = 'embedding' as const;
  const dtype = activationDtype(op, rec.gpu, out);
  if (ids.dtype !== 'i32' && ids.dtype !== 'u32') throw new RangeError(`${op}: ids must be i32 (or u32), not ${ids.dtype}`);
  if (table.shape.length !== 2) throw new RangeError(`${op}: the table must be [vocab, dim], got [${table.shape.join(', ')}]`);
  const [vocab, dim] = table.shape as [number, number];
  const defines = weightDefines(op, 'W', table);
  expectShape(op, 'out', out, [...ids.shape, dim]);
  checkBindable(op, rec, ids, out);
  const n = out.elements;
  if (n === 0) return;
  const rowBytes = dim * GPU_DTYPE_LAYOUT[table.dtype].blockBytes;
  const limit = rec.limits.maxStorageBufferBindingSize;
  const chunks = bindingChunks(vocab, rowBytes, rec.limits);
  const pipeline = await rec.pipeline(op, { F16: dtype === 'f16', ...defines, WORKGROUP_SIZE });
  chunks.forEach((chunk, i) => {
    let binding: Binding = table.buffer;
    if (chunks.length > 1) {
      const offset = chunk.first * rowBytes;
      const size = Math.ceil((chunk.count * rowBytes) / 4) * 4;
      if (size > limit) throw new RangeError(`${op}: ${chunk.count} rows of ${rowBytes} bytes do not fit a ${limit}-byte binding at the offset alignment`);
      binding = { buffer: table.buffer, offset, size };
    }
    const u = new Uniforms(6).u32(n, dim, chunk.first, chunk.count, vocab, i === 0 ? 1 : 0);
    rec.dispatch(pipeline, [ids.buffer, binding, out.buffer], u.bytes, groupsFor(n), `${op} rows ${chunk.first}+${chunk.count}`);
  });
}
