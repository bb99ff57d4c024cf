import { openSafetensors } from '../formats/safetensors.ts';
import type { TensorToWrite } from '../formats/safetensors-writer.ts';
import type { HostTensor } from '../models/program.ts';

/** Every tensor of a safetensors file as a host tensor: integer dtypes as i32 (token ids), the rest as f32. */
export async function readHostTensors(path: string): Promise<Map<string, HostTensor>> {
  const st = await openSafetensors(path);
  try {
    const out = new Map<string, HostTensor>();
    for (const [name, info] of st.tensors) {
      const f = await st.readF32(name);
      out.set(name, { data: /^[IU]\d+$/.test(info.dtype) ? Int32Array.from(f) : f, shape: [...info.shape] });
    }
    return out;
  } finally {
    await st.close();
  }
}

/** A host tensor as the writer takes it: ids as I64 (as PyTorch stores them), values as F32. */
export function hostTensorToWrite(name: string, t: HostTensor): TensorToWrite {
  return t.data instanceof Int32Array
    ? { name, dtype: 'I64', shape: t.shape, data: BigInt64Array.from(t.data, (v) => BigInt(v)) }
    : { name, dtype: 'F32', shape: t.shape, data: t.data };
}
