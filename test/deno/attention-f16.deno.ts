// The f16 paths of attention, softmax, rope and the KV cache under Deno's own WebGPU on
// lavapipe (shader-f16), against the f64 CPU references fed the same f16-rounded inputs.
// Tolerance: |err| ≤ 2e-3 + 2e-2·|want| (f16 storage of inputs and outputs, f32 arithmetic).
import { downloadF32, emptyTensor, KernelRecorder, openDevices, overrideKernelLimits, uploadTensor, type GpuDevice, type GpuTensor } from '../../deno/mod.ts';
import { fromFloat32, toFloat32 } from '../../src/formats/dtypes.ts';
import { attention, type AttentionOptions, type AttentionRun } from '../../src/kernels/ops/attention.ts';
import { KvCache } from '../../src/kernels/ops/kv-cache.ts';
import { rope, ropeTable } from '../../src/kernels/ops/rope.ts';
import { softmax } from '../../src/kernels/ops/softmax.ts';
import { attentionReference } from '../../src/kernels/reference/attention.ts';
import { llamaAngle, ropeReference } from '../../src/kernels/reference/rope.ts';
import { softmaxReference } from '../../src/kernels/reference/softmax.ts';

const TOL = { abs: 2e-3, rel: 2e-2 };

function random(n: number, seed: number, scale = 1): Float32Array {
  let a = seed >>> 0;
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    out[i] = ((((t ^ (t >>> 14)) >>> 0) / 4294967296) * 2 - 1) * scale;
  }
  return out;
}

/** Values as f16 holds them. */
const f16 = (x: Float32Array) => toFloat32('F16', fromFloat32('F16', x));

function close(got: Float32Array, want: Float32Array, label: string, tol = TOL): void {
  if (got.length !== want.length) throw new Error(`${label}: ${got.length} values, want ${want.length}`);
  for (let i = 0; i < want.length; i++) {
    const err = Math.abs(got[i]! - want[i]!);
    if (!(err <= tol.abs + tol.rel * Math.abs(want[i]!))) throw new Error(`${label}: element ${i} is ${got[i]}, reference ${want[i]} (tolerance abs ${tol.abs} + rel ${tol.rel})`);
  }
}

async function withF16Gpu(fn: (gpu: GpuDevice, keep: GpuTensor[]) => Promise<void>): Promise<void> {
  const set = await openDevices({ api: 'navigator' });
  const keep: GpuTensor[] = [];
  try {
    const gpu = set.gpus.find((g) => g.hasFeature('shader-f16'));
    if (!gpu) throw new Error('no adapter with shader-f16: run with VK_ICD_FILENAMES pointing at lavapipe');
    await fn(gpu, keep);
  } finally {
    for (const t of keep) t.destroy();
    await set.close();
  }
}

interface Case {
  B: number; Lq: number; Lk: number; H: number; Hkv: number; D: number;
  causal?: boolean; mask?: boolean; keyPadding?: boolean; relBias?: boolean; scale?: number;
  qk?: number; v?: number; seed: number; path?: 'f16' | 'subgroup-matrix'; subgroups?: boolean;
}

async function runCase(gpu: GpuDevice, keep: GpuTensor[], c: Case): Promise<{ got: Float32Array; want: Float32Array; run: AttentionRun }> {
  const q = f16(random(c.B * c.Lq * c.H * c.D, c.seed, c.qk ?? 1));
  const k = f16(random(c.B * c.Lk * c.Hkv * c.D, c.seed + 1, c.qk ?? 1));
  const v = f16(random(c.B * c.Lk * c.Hkv * c.D, c.seed + 2, c.v ?? 1));
  const up16 = async (x: Float32Array, shape: number[]) => {
    const t = await uploadTensor(gpu, fromFloat32('F16', x), shape, 'f16');
    keep.push(t);
    return t;
  };
  const up32 = async (x: Float32Array | Uint32Array, shape: number[], dtype: 'f32' | 'u32') => {
    const t = await uploadTensor(gpu, new Uint8Array(x.buffer, x.byteOffset, x.byteLength), shape, dtype);
    keep.push(t);
    return t;
  };
  const opts: { -readonly [K in keyof AttentionOptions]: AttentionOptions[K] } = { causal: c.causal, scale: c.scale, path: c.path, subgroups: c.subgroups };
  let mask: { data: Float32Array; shape: number[] } | undefined;
  if (c.mask) {
    const data = random(c.Lq * c.Lk, c.seed + 3, 2).map((x, i) => (i % 7 === 2 ? -Infinity : x));
    mask = { data, shape: [c.Lq, c.Lk] };
    opts.mask = await up32(data, [c.Lq, c.Lk], 'f32');
  }
  let kp: Uint32Array | undefined;
  if (c.keyPadding) {
    kp = Uint32Array.from({ length: c.B * c.Lk }, (_, i) => (i % 6 === 1 ? 0 : 1));
    opts.keyPadding = await up32(kp, [c.B, c.Lk], 'u32');
  }
  let rb: Float32Array | undefined;
  if (c.relBias) {
    rb = random(c.H * (c.Lq + c.Lk - 1), c.seed + 4, 4);
    opts.relativeBias = await up32(rb, [c.H, c.Lq + c.Lk - 1], 'f32');
  }
  const out = await emptyTensor(gpu, [c.B, c.Lq, c.H, c.D], 'f16');
  keep.push(out);
  const rec = new KernelRecorder(gpu);
  const run = await attention(rec, await up16(q, [c.B, c.Lq, c.H, c.D]), await up16(k, [c.B, c.Lk, c.Hkv, c.D]), await up16(v, [c.B, c.Lk, c.Hkv, c.D]), out, opts);
  await rec.submit();
  const want = attentionReference(q, k, v, {
    batch: c.B, lq: c.Lq, lk: c.Lk, heads: c.H, kvHeads: c.Hkv, headDim: c.D, causal: c.causal, scale: c.scale, mask, keyPadding: kp, relativeBias: rb,
  });
  return { got: await downloadF32(out), want, run };
}

Deno.test('attention, f16 kernel: GQA, causal, masks, key padding, T5 bias, cross-attention, head dims 8..128', async () => {
  await withF16Gpu(async (gpu, keep) => {
    const cases: Case[] = [
      { B: 2, Lq: 37, Lk: 37, H: 4, Hkv: 2, D: 16, causal: true, seed: 1 },
      { B: 1, Lq: 19, Lk: 70, H: 3, Hkv: 1, D: 20, mask: true, keyPadding: true, seed: 2 },
      { B: 1, Lq: 23, Lk: 23, H: 4, Hkv: 4, D: 16, relBias: true, scale: 1, seed: 3 },
      { B: 2, Lq: 64, Lk: 7, H: 8, Hkv: 8, D: 8, seed: 4 },
      { B: 1, Lq: 9, Lk: 40, H: 4, Hkv: 2, D: 128, causal: true, seed: 5 },
      { B: 1, Lq: 5, Lk: 33, H: 1, Hkv: 1, D: 160, seed: 6 },
    ];
    for (const c of cases) {
      for (const subgroups of [true, false]) {
        const { got, want, run } = await runCase(gpu, keep, { ...c, path: 'f16', subgroups });
        if (run.kernel !== 'f16') throw new Error(`ran ${run.kernel}`);
        close(got, want, JSON.stringify({ ...c, subgroups }));
      }
    }
  });
});

Deno.test('attention, f16 kernel: scores beyond 65504 (T5 scale 1) and large values stay finite and right (f32 accumulation)', async () => {
  await withF16Gpu(async (gpu, keep) => {
    // q·k reaches ~200·200·16 = 640,000: an f16 dot product or exp would overflow.
    const { got, want } = await runCase(gpu, keep, { B: 1, Lq: 20, Lk: 50, H: 2, Hkv: 2, D: 16, scale: 1, qk: 200, v: 30000, relBias: true, seed: 9, path: 'f16' });
    if (!got.every(Number.isFinite)) throw new Error('non-finite output');
    close(got, want, 'large scores', { abs: 2e-3 * 30000, rel: 2e-2 });
  });
});

Deno.test('attention: subgroup-matrix asked for on a device without it runs the f16 kernel and says why', async () => {
  await withF16Gpu(async (gpu, keep) => {
    const { got, want, run } = await runCase(gpu, keep, { B: 1, Lq: 17, Lk: 17, H: 2, Hkv: 1, D: 32, causal: true, seed: 11, path: 'subgroup-matrix' });
    if (gpu.hasFeature('chromium-experimental-subgroup-matrix')) return;
    if (run.kernel !== 'f16' || !run.fallback) throw new Error(`ran ${JSON.stringify(run)}`);
    close(got, want, 'fallback');
  });
});

Deno.test('attention, f16 kernel: split bindings (limit lowered to 1 KiB) and a KV cache in f16', async () => {
  await withF16Gpu(async (gpu, keep) => {
    overrideKernelLimits(gpu, { maxStorageBufferBindingSize: 1024, maxComputeWorkgroupsPerDimension: 3 });
    try {
      const { got, want, run } = await runCase(gpu, keep, { B: 2, Lq: 21, Lk: 45, H: 4, Hkv: 2, D: 16, causal: true, keyPadding: true, relBias: true, seed: 12, path: 'f16' });
      if (!run.split || !run.splitKeys) throw new Error(`not split: ${JSON.stringify(run)}`);
      close(got, want, 'split');
    } finally {
      overrideKernelLimits(gpu, {});
    }
    const B = 1, H = 2, Hkv = 1, D = 16, total = 12;
    const q = f16(random(B * total * H * D, 21));
    const k = f16(random(B * total * Hkv * D, 22));
    const v = f16(random(B * total * Hkv * D, 23));
    const want = attentionReference(q, k, v, { batch: B, lq: total, lk: total, heads: H, kvHeads: Hkv, headDim: D, causal: true });
    const cache = await KvCache.create(gpu, { batch: B, capacity: 16, kvHeads: Hkv, headDim: D, dtype: 'f16' });
    try {
      for (let i = 0; i < total; i++) {
        const row = (x: Float32Array, w: number) => fromFloat32('F16', x.subarray(i * w, (i + 1) * w));
        const kt = await uploadTensor(gpu, row(k, Hkv * D), [B, 1, Hkv, D], 'f16');
        const vt = await uploadTensor(gpu, row(v, Hkv * D), [B, 1, Hkv, D], 'f16');
        const qt = await uploadTensor(gpu, row(q, H * D), [B, 1, H, D], 'f16');
        const out = await emptyTensor(gpu, [B, 1, H, D], 'f16');
        keep.push(kt, vt, qt, out);
        const rec = new KernelRecorder(gpu);
        await cache.append(rec, kt, vt);
        await attention(rec, qt, cache.k, cache.v, out, { causal: true, kvLength: cache.length, path: 'f16' });
        await rec.submit();
        close(await downloadF32(out), want.subarray(i * H * D, (i + 1) * H * D), `decode step ${i}`);
      }
    } finally {
      cache.destroy();
    }
  });
});

Deno.test('softmax and rope, f16 variants', async () => {
  await withF16Gpu(async (gpu, keep) => {
    const rows = 5, n = 301;
    const x = f16(random(rows * n, 31, 30));
    const big = f16(Float32Array.from({ length: n }, (_, i) => 60000 - i * 3)); // exp(60000) would overflow anything
    for (const [data, r] of [[x, rows], [big, 1]] as const) {
      for (const subgroups of [true, false]) {
        const t = await uploadTensor(gpu, fromFloat32('F16', data), [r, n], 'f16');
        keep.push(t);
        const rec = new KernelRecorder(gpu);
        await softmax(rec, t, t, { subgroups });
        await rec.submit();
        close(await downloadF32(t), softmaxReference(data, r, n), `softmax rows ${r} subgroups ${subgroups}`);
      }
    }
    const B = 1, L = 9, H = 2, D = 16;
    const xr = f16(random(B * L * H * D, 32));
    const table = await ropeTable(gpu, { rotaryDim: D, positions: 4096 });
    keep.push(table.tensor);
    const tx = await uploadTensor(gpu, fromFloat32('F16', xr), [B, L, H, D], 'f16');
    keep.push(tx);
    const rec = new KernelRecorder(gpu);
    await rope(rec, tx, table, { positionOffset: 4000 });
    await rec.submit();
    close(await downloadF32(tx), ropeReference(xr, { batch: B, seq: L, heads: H, headDim: D, angle: llamaAngle(10000, D, (_b, l) => 4000 + l) }), 'rope f16');
  });
});
