// f16 activations under Deno's own WebGPU on lavapipe (shader-f16, no subgroups): the F16 variant
// of every elementwise, norm, activation, layout, conv and embedding kernel against its CPU
// reference. Inputs are f16 values; kernels compute in f32 and round the output to f16 once, so
// the tolerance is that rounding (half an f16 ulp: 2^-11 relative) with a margin.
import { downloadF32, emptyTensor, KernelRecorder, openDevices, uploadTensor, type GpuDevice, type GpuTensor } from '../../deno/mod.ts';
import { fromFloat32, toFloat32 } from '../../src/formats/dtypes.ts';
import { ACTIVATIONS, activation, gatedMlp, geglu } from '../../src/kernels/ops/activation.ts';
import { adaLNModulate, gatedResidual } from '../../src/kernels/ops/adaln.ts';
import { binary } from '../../src/kernels/ops/binary.ts';
import { concat } from '../../src/kernels/ops/concat.ts';
import { conv2d, conv2dOutputShape } from '../../src/kernels/ops/conv2d.ts';
import { copy } from '../../src/kernels/ops/copy.ts';
import { embedding } from '../../src/kernels/ops/embedding.ts';
import { groupNorm } from '../../src/kernels/ops/group-norm.ts';
import { layerNorm } from '../../src/kernels/ops/layer-norm.ts';
import { rmsNorm } from '../../src/kernels/ops/rms-norm.ts';
import { scale } from '../../src/kernels/ops/scale.ts';
import { timestepEmbedding } from '../../src/kernels/ops/timestep.ts';
import { permute } from '../../src/kernels/ops/transpose.ts';
import { upsampleNearest } from '../../src/kernels/ops/upsample.ts';
import { activationReference, gatedMlpFusedReference, gatedMlpReference } from '../../src/kernels/reference/activation.ts';
import { adaLNModulateReference, gatedResidualReference } from '../../src/kernels/reference/adaln.ts';
import { binaryReference } from '../../src/kernels/reference/binary.ts';
import { concatReference } from '../../src/kernels/reference/concat.ts';
import { conv2dReference } from '../../src/kernels/reference/conv2d.ts';
import { embeddingReference } from '../../src/kernels/reference/embedding.ts';
import { groupNormReference } from '../../src/kernels/reference/group-norm.ts';
import { layerNormReference } from '../../src/kernels/reference/layer-norm.ts';
import { rmsNormReference } from '../../src/kernels/reference/rms-norm.ts';
import { scaleReference } from '../../src/kernels/reference/scale.ts';
import { timestepEmbeddingReference } from '../../src/kernels/reference/timestep.ts';
import { permuteReference } from '../../src/kernels/reference/transpose.ts';
import { upsampleNearestReference } from '../../src/kernels/reference/upsample.ts';

/** |got − want| ≤ abs + rel·|want|: one f16 rounding of the output (2^-11 relative) with a 2× margin; abs for values near 0. */
const F16_TOL = { abs: 2e-4, rel: 1e-3 };
/** Sums in f32 of up to a few hundred terms before the rounding (conv): a little more room. */
const F16_SUM_TOL = { abs: 2e-3, rel: 2e-3 };

function random(n: number, seed: number, scale = 1): Float32Array {
  let a = seed >>> 0;
  return Float32Array.from({ length: n }, () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((((t ^ (t >>> 14)) >>> 0) / 4294967296) * 2 - 1) * scale;
  });
}

/** Values rounded to f16, so the reference sees what the kernel sees. */
const f16 = (v: Float32Array) => toFloat32('F16', fromFloat32('F16', v));
/** The reference's result rounded to f16, as the kernel stores it. */
const asF16 = f16;

function close(label: string, got: Float32Array, want: Float32Array, tol = F16_TOL): void {
  if (got.length !== want.length) throw new Error(`${label}: ${got.length} values, want ${want.length}`);
  for (let i = 0; i < want.length; i++) {
    const err = Math.abs(got[i]! - want[i]!);
    if (!(err <= tol.abs + tol.rel * Math.abs(want[i]!))) throw new Error(`${label}: element ${i} is ${got[i]}, the reference ${want[i]}`);
  }
}

async function withGpu(body: (gpu: GpuDevice, up: (v: Float32Array, shape: readonly number[]) => Promise<GpuTensor>, out: (shape: readonly number[]) => Promise<GpuTensor>) => Promise<void>) {
  const set = await openDevices({ api: 'navigator' });
  const made: GpuTensor[] = [];
  try {
    const gpu = set.gpus.find((g) => g.hasFeature('shader-f16'));
    if (!gpu) throw new Error('no adapter with shader-f16: run with VK_ICD_FILENAMES pointing at lavapipe');
    const up = async (v: Float32Array, shape: readonly number[]) => {
      const t = await uploadTensor(gpu, fromFloat32('F16', v), shape, 'f16');
      made.push(t);
      return t;
    };
    const out = async (shape: readonly number[]) => {
      const t = await emptyTensor(gpu, shape, 'f16');
      made.push(t);
      return t;
    };
    await body(gpu, up, out);
  } finally {
    for (const t of made) t.destroy();
    await set.close();
  }
}

Deno.test('f16: binary with broadcasting (b f16 and bf16), scale', async () => {
  await withGpu(async (gpu, up, out) => {
    const a = f16(random(3 * 5 * 7, 1, 4));
    const b = f16(random(5 * 1, 2, 2));
    const ta = await up(a, [3, 5, 7]);
    const tb = await up(b, [5, 1]);
    const bf = toFloat32('BF16', fromFloat32('BF16', random(7, 3, 2)));
    const tbf = await uploadTensor(gpu, fromFloat32('BF16', bf), [7], 'bf16');
    const o1 = await out([3, 5, 7]);
    const o2 = await out([3, 5, 7]);
    const o3 = await out([3, 5, 7]);
    const rec = new KernelRecorder(gpu);
    await binary(rec, 'mul', ta, tb, o1);
    await binary(rec, 'sub', ta, tbf, o2);
    await scale(rec, ta, o3, 0.18215, 0.5);
    await rec.submit();
    close('mul f16', await downloadF32(o1), asF16(binaryReference('mul', a, [3, 5, 7], b, [5, 1], [3, 5, 7])));
    close('sub bf16 b', await downloadF32(o2), asF16(binaryReference('sub', a, [3, 5, 7], bf, [7], [3, 5, 7])));
    close('scale', await downloadF32(o3), asF16(scaleReference(a, 0.18215, 0.5)));
    tbf.destroy();
  });
});

Deno.test('f16: rms_norm, layer_norm (with fused AdaLN), group_norm (with SiLU), workgroup-memory reductions', async () => {
  await withGpu(async (gpu, up, out) => {
    const rows = 5;
    const cols = 301;
    const x = f16(random(rows * cols, 4, 3));
    const tx = await up(x, [1, rows, cols]);
    const w = toFloat32('BF16', fromFloat32('BF16', random(cols, 5, 2)));
    const tw = await uploadTensor(gpu, fromFloat32('BF16', w), [cols], 'bf16');
    const b = random(cols, 6, 1);
    const tb = await uploadTensor(gpu, b, [cols], 'f32');
    const emb = f16(random(2 * cols, 7, 1));
    const temb = await up(emb, [1, 2 * cols]);
    const o1 = await out([1, rows, cols]);
    const o2 = await out([1, rows, cols]);
    const rec = new KernelRecorder(gpu);
    await rmsNorm(rec, tx, tw, o1, { eps: 1e-6 });
    await layerNorm(rec, tx, tw, tb, o2, { eps: 1e-6, modulation: { shift: { tensor: temb, offset: cols, stride: 2 * cols }, scale: { tensor: temb, offset: 0, stride: 2 * cols } } });
    const gx = f16(random(2 * 64 * 5 * 3, 8, 3));
    const tgx = await up(gx, [2, 64, 5, 3]);
    const gw = f16(random(64, 9, 2));
    const tgw = await uploadTensor(gpu, fromFloat32('F16', gw), [64], 'f16');
    const o3 = await out([2, 64, 5, 3]);
    await groupNorm(rec, tgx, tgw, null, o3, { groups: 32, eps: 1e-5, silu: true });
    await rec.submit();
    close('rms_norm', await downloadF32(o1), asF16(rmsNormReference(x, w, cols, 1e-6)));
    const mod = { shift: { data: emb, offset: cols, stride: 2 * cols }, scale: { data: emb, offset: 0, stride: 2 * cols }, rowsPerBatch: rows };
    close('layer_norm + AdaLN', await downloadF32(o2), asF16(layerNormReference(x, w, b, cols, 1e-6, mod)));
    close('group_norm + SiLU', await downloadF32(o3), asF16(groupNormReference(gx, gw, null, 2, 64, 32, 1e-5, true)));
    tw.destroy();
    tb.destroy();
    tgw.destroy();
  });
});

Deno.test('f16: every activation, gated (separate and GEGLU halves), large |x| stays finite', async () => {
  await withGpu(async (gpu, up, out) => {
    const x = f16(Float32Array.from([...random(997, 10, 8), 100, -100, 60000, -60000, 11, -11]));
    const tx = await up(x, [x.length]);
    for (const kind of ACTIVATIONS) {
      const o = await out([x.length]);
      const rec = new KernelRecorder(gpu);
      await activation(rec, kind, tx, o);
      await rec.submit();
      close(kind, await downloadF32(o), asF16(activationReference(kind, x)));
    }
    const g = f16(random(4 * 33, 11, 6));
    const u = f16(random(4 * 33, 12, 2));
    const tg = await up(g, [4, 33]);
    const tu = await up(u, [4, 33]);
    const o1 = await out([4, 33]);
    const both = f16(random(4 * 66, 13, 4));
    const tboth = await up(both, [4, 66]);
    const o2 = await out([4, 33]);
    const rec = new KernelRecorder(gpu);
    await gatedMlp(rec, 'gelu_tanh', tg, tu, o1);
    await geglu(rec, tboth, o2);
    await rec.submit();
    close('gated gelu_tanh', await downloadF32(o1), asF16(gatedMlpReference('gelu_tanh', g, u)));
    close('geglu', await downloadF32(o2), asF16(gatedMlpFusedReference('gelu', both, 33, 'second')));
  });
});

Deno.test('f16: concat, permute (gather and tiled), upsample, copy of an odd-length tensor: bits exact', async () => {
  await withGpu(async (gpu, up, out) => {
    const a = f16(random(2 * 3 * 5, 14, 9));
    const b = f16(random(2 * 4 * 5, 15, 9));
    const ta = await up(a, [2, 3, 5]);
    const tb = await up(b, [2, 4, 5]);
    const cat = await out([2, 7, 5]);
    const x = f16(random(2 * 7 * 3 * 5, 16, 9));
    const tx = await up(x, [2, 7, 3, 5]);
    const p1 = await out([2, 3, 7, 5]);
    const p2 = await out([2, 3, 5, 7]);
    const u = await out([2, 7, 6, 10]);
    const odd = await out([2 * 7 * 3 * 5 - 1]);
    const rec = new KernelRecorder(gpu);
    await concat(rec, [ta, tb], cat, 1);
    await permute(rec, tx, p1, [0, 2, 1, 3]);
    await permute(rec, tx, p2, [0, 2, 3, 1]);
    await upsampleNearest(rec, tx, u);
    await copy(rec, tx, odd, { srcOffset: 1, count: 2 * 7 * 3 * 5 - 1 });
    await rec.submit();
    const exact = { abs: 0, rel: 0 };
    close('concat', await downloadF32(cat), concatReference([{ data: a, shape: [2, 3, 5] }, { data: b, shape: [2, 4, 5] }], 1), exact);
    close('permute gather', await downloadF32(p1), permuteReference(x, [2, 7, 3, 5], [0, 2, 1, 3]), exact);
    close('permute tiled', await downloadF32(p2), permuteReference(x, [2, 7, 3, 5], [0, 2, 3, 1]), exact);
    close('upsample', await downloadF32(u), upsampleNearestReference(x, 14, 3, 5, 2, 2), exact);
    close('odd copy', await downloadF32(odd), x.subarray(1), exact);
  });
});

Deno.test('f16: conv2d (3×3 pad 1, VAE downsampler; direct and implicit-GEMM kernels), embedding (bf16 table), timestep embedding, AdaLN', async () => {
  await withGpu(async (gpu, up, out) => {
    const x = f16(random(1 * 6 * 7 * 8, 17, 1));
    const tx = await up(x, [1, 6, 7, 8]);
    const w = random(5 * 6 * 9, 18, 0.5);
    const tw = await uploadTensor(gpu, w, [5, 6, 3, 3], 'f32');
    const bias = f16(random(5, 19, 1));
    const tbias = await uploadTensor(gpu, fromFloat32('F16', bias), [5], 'f16');
    const pads = [{ top: 1, bottom: 1, left: 1, right: 1 }, { top: 0, bottom: 1, left: 0, right: 1 }];
    const strides: [number, number][] = [[1, 1], [2, 2]];
    for (const kernel of ['direct', 'tiled', 'tiled-wide'] as const) {
      for (let k = 0; k < 2; k++) {
        const shape = conv2dOutputShape([1, 6, 7, 8], [5, 6, 3, 3], { stride: strides[k], padding: pads[k] });
        const o = await out(shape);
        const rec = new KernelRecorder(gpu);
        await conv2d(rec, tx, tw, tbias, o, { stride: strides[k], padding: pads[k] }, kernel);
        await rec.submit();
        const want = conv2dReference(x, [1, 6, 7, 8], w, [5, 6, 3, 3], bias, { stride: strides[k]!, pad: pads[k]! });
        close(`conv2d ${kernel} ${k}`, await downloadF32(o), want.data, F16_SUM_TOL);
      }
    }
    const table = toFloat32('BF16', fromFloat32('BF16', random(40 * 7, 20, 2)));
    const ttable = await uploadTensor(gpu, fromFloat32('BF16', table), [40, 7], 'bf16');
    const ids = Int32Array.from([3, 0, 39, 40, -1, 17]);
    const tids = await uploadTensor(gpu, new Uint8Array(ids.buffer), [6], 'i32');
    const emb = await out([6, 7]);
    const ts = await out([2, 257]);
    const h = f16(random(2 * 3 * 16, 21, 3));
    const th = await up(h, [2, 3, 16]);
    const y = f16(random(2 * 3 * 16, 22, 3));
    const ty = await up(y, [2, 3, 16]);
    const mod = f16(random(2 * 96, 23, 1));
    const tmod = await up(mod, [2, 96]);
    const o1 = await out([2, 3, 16]);
    const o2 = await out([2, 3, 16]);
    const rec = new KernelRecorder(gpu);
    await embedding(rec, tids, ttable, emb);
    await timestepEmbedding(rec, [999, 0.5], ts, { flipSinToCos: true, downscaleFreqShift: 0 });
    await adaLNModulate(rec, th, { tensor: tmod, offset: 0, stride: 96 }, { tensor: tmod, offset: 16, stride: 96 }, o1);
    await gatedResidual(rec, th, ty, { tensor: tmod, offset: 32, stride: 96 }, o2);
    await rec.submit();
    close('embedding', await downloadF32(emb), asF16(embeddingReference(ids, table, 7)), { abs: 0, rel: 0 });
    close('timestep', await downloadF32(ts), asF16(timestepEmbeddingReference([999, 0.5], 257, { flipSinToCos: true, downscaleFreqShift: 0 })), { abs: 0, rel: 0 });
    const s = (offset: number) => ({ data: mod, offset, stride: 96 });
    close('adaln', await downloadF32(o1), asF16(adaLNModulateReference(h, 16, 3, s(0), s(16))));
    close('gated residual', await downloadF32(o2), asF16(gatedResidualReference(h, y, 16, 3, s(32))));
    for (const t of [tw, tbias, ttable, tids]) t.destroy();
  });
});
