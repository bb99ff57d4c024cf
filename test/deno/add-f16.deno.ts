// f16 activations under Deno's own WebGPU on lavapipe (shader-f16): the add kernel's F16 variant.
import { downloadF32, emptyTensor, KernelRecorder, openDevices, ops, uploadTensor } from '../../deno/mod.ts';
import { fromFloat32, toFloat32 } from '../../src/formats/dtypes.ts';

Deno.test('add, f16 variant: exact on values representable in f16', async () => {
  const set = await openDevices({ api: 'navigator' });
  try {
    const gpu = set.gpus.find((g) => g.hasFeature('shader-f16'));
    if (!gpu) throw new Error('no adapter with shader-f16: run with VK_ICD_FILENAMES pointing at lavapipe');
    const n = 1001; // odd: the f16 tail is padded to a whole u32 word
    const a = toFloat32('F16', fromFloat32('F16', new Float32Array(n).map((_, i) => (i % 97) / 8 - 6)));
    const b = toFloat32('F16', fromFloat32('F16', new Float32Array(n).map((_, i) => (i % 13) * 0.25)));
    const ta = await uploadTensor(gpu, fromFloat32('F16', a), [n], 'f16');
    const tb = await uploadTensor(gpu, fromFloat32('F16', b), [n], 'f16');
    const out = await emptyTensor(gpu, [n], 'f16');
    const rec = new KernelRecorder(gpu);
    await ops.add(rec, ta, tb, out);
    await rec.submit();
    const got = await downloadF32(out);
    for (let i = 0; i < n; i++) {
      if (got[i] !== a[i]! + b[i]!) throw new Error(`element ${i}: ${got[i]} != ${a[i]! + b[i]!}`);
    }
  } finally {
    await set.close();
  }
});
