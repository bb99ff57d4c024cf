// rope (f32 path on SwiftShader) against the f64 reference: Llama rotate-half (offsets,
// per-token positions, partial rotary dims, in place or into another tensor, fused-QKV views),
// FLUX's multi-axis interleaved rotation from ids, and the large-angle trap. Tolerance:
// TOLERANCE.f32 (|err| ≤ 1e-5 + 1e-4·|want|); the table's cos/sin are f64 rounded to f32.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { downloadF32, emptyTensor, KernelRecorder, overrideKernelLimits, uploadTensor, type GpuDevice, type GpuTensor } from '../../src/index.ts';
import { fluxRopeTable, llama3InvFreq, rope, ropeInvFreq, ropeTable, ropeTableValues, type RopeOptions, type RopeTable } from '../../src/kernels/ops/rope.ts';
import { fluxAngle, llamaAngle, ropeReference } from '../../src/kernels/reference/rope.ts';
import { expectClose, openTestGpu, randomF32, TOLERANCE, type TestGpu } from './harness.ts';

let t: TestGpu;
let gpu: GpuDevice;
const owned: GpuTensor[] = [];

beforeAll(async () => {
  t = await openTestGpu();
  gpu = t.gpu;
});

afterAll(async () => {
  for (const x of owned) x.destroy();
  await t?.set.close();
});

async function applyRope(x: Float32Array, shape: [number, number, number, number], table: RopeTable, o: RopeOptions & { inPlace?: boolean } = {}): Promise<Float32Array> {
  const tx = await uploadTensor(gpu, x, shape);
  owned.push(tx, table.tensor);
  const out = o.inPlace ? tx : await emptyTensor(gpu, shape);
  owned.push(out);
  const rec = new KernelRecorder(gpu);
  await rope(rec, tx, table, { ...o, out: o.inPlace ? undefined : out });
  await rec.submit();
  return downloadF32(out);
}

describe('rope, f32 path', () => {
  it.each([
    ['in place, offset 0', { inPlace: true, offset: 0, rot: 16 }],
    ['into another tensor, offset 37 (decoding after 37 cached tokens)', { inPlace: false, offset: 37, rot: 16 }],
    ['partial rotary dims (10 of 16), the rest copied', { inPlace: false, offset: 5, rot: 10 }],
    ['partial rotary dims in place', { inPlace: true, offset: 3, rot: 6 }],
  ])('Llama rotate-half: %s', async (_name, c) => {
    const B = 2, L = 11, H = 3, D = 16;
    const x = randomF32(B * L * H * D, 3);
    const table = await ropeTable(gpu, { rotaryDim: c.rot, positions: 64, theta: 10000 });
    const got = await applyRope(x, [B, L, H, D], table, { inPlace: c.inPlace, positionOffset: c.offset });
    const want = ropeReference(x, { batch: B, seq: L, heads: H, headDim: D, rotaryDim: c.rot, angle: llamaAngle(10000, c.rot, (_b, l) => l + c.offset) });
    expectClose(got, want, TOLERANCE.f32, _name);
  });

  it('per-token positions (left-padded batch) and Llama 3 frequency scaling', async () => {
    const B = 2, L = 6, H = 2, D = 8;
    const pos = Uint32Array.from([0, 0, 0, 1, 2, 3, 10, 11, 12, 13, 14, 15]);
    const inv = llama3InvFreq(ropeInvFreq(D, 500000), { factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositions: 8 });
    const table = await ropeTable(gpu, { rotaryDim: D, positions: 32, invFreq: inv });
    const positions = await uploadTensor(gpu, new Uint8Array(pos.buffer), [B, L], 'u32');
    owned.push(positions);
    const x = randomF32(B * L * H * D, 8);
    const got = await applyRope(x, [B, L, H, D], table, { positions });
    const want = ropeReference(x, { batch: B, seq: L, heads: H, headDim: D, angle: (b, l, i) => pos[b * L + l]! * inv[i]! });
    expectClose(got, want, TOLERANCE.f32, 'positions');
  });

  it('rotates the q and k slices of a fused QKV tensor in place, leaving v alone', async () => {
    const B = 1, L = 5, H = 2, D = 8, C = H * D;
    const qkv = randomF32(B * L * 3 * C, 9);
    const fused = await uploadTensor(gpu, qkv, [B, L, 3 * C]);
    owned.push(fused);
    const table = await ropeTable(gpu, { rotaryDim: D, positions: 8 });
    owned.push(table.tensor);
    const rec = new KernelRecorder(gpu);
    await rope(rec, { tensor: fused, offset: 0, rowStride: 3 * C }, table, { heads: H, headDim: D });
    await rope(rec, { tensor: fused, offset: C, rowStride: 3 * C }, table, { heads: H, headDim: D });
    await rec.submit();
    const got = await downloadF32(fused);
    const part = (src: Float32Array, o: number) => Float32Array.from({ length: L * C }, (_, i) => src[Math.floor(i / C) * 3 * C + o + (i % C)]!);
    const opts = { batch: B, seq: L, heads: H, headDim: D, angle: llamaAngle(10000, D, (_b, l) => l) };
    expectClose(part(got, 0), ropeReference(part(qkv, 0), opts), TOLERANCE.f32, 'q');
    expectClose(part(got, C), ropeReference(part(qkv, C), opts), TOLERANCE.f32, 'k');
    expect(part(got, 2 * C)).toEqual(part(qkv, 2 * C));
  });

  it('FLUX: multi-axis (4/6/6) interleaved rotation from text and image ids', async () => {
    const axes = [4, 6, 6];
    const txt = 3, side = 4;
    const ids: number[] = [];
    for (let i = 0; i < txt; i++) ids.push(0, 0, 0);
    for (let r = 0; r < side; r++) for (let c = 0; c < side; c++) ids.push(0, r, c);
    const L = txt + side * side, H = 2, D = 16;
    const table = await fluxRopeTable(gpu, ids, axes);
    expect(table).toMatchObject({ rows: L, rotaryDim: 16, mode: 'interleaved' });
    const x = randomF32(L * H * D, 12);
    const got = await applyRope(x, [1, L, H, D], table);
    const want = ropeReference(x, { batch: 1, seq: L, heads: H, headDim: D, mode: 'interleaved', angle: fluxAngle(ids, axes) });
    expectClose(got, want, TOLERANCE.f32, 'flux');
  });

  it('large angles come from the f64 host table: positions near 10^5 stay exact where f32 angles in a shader would not', async () => {
    const D = 16, base = 99_990, n = 10;
    const table = await ropeTable(gpu, { rotaryDim: D, positions: base + n });
    const x = randomF32(n * D, 14);
    const got = await applyRope(x, [1, n, 1, D], table, { positionOffset: base });
    const want = ropeReference(x, { batch: 1, seq: n, heads: 1, headDim: D, angle: llamaAngle(10000, D, (_b, l) => base + l) });
    expectClose(got, want, TOLERANCE.f32, 'f64 table');
    // A shader forming position · freq in f32 is off by ~1e-3 here before its sin/cos (only
    // accurate on [−π, π]) even start: this test would catch it.
    const f = Math.fround;
    const naive = ropeReference(x, { batch: 1, seq: n, heads: 1, headDim: D, angle: (_b, l, i) => f(f(base + l) * f(Math.pow(10000, (-2 * i) / D))) });
    const excess = naive.reduce((m, v, i) => Math.max(m, Math.abs(v - want[i]!) - (TOLERANCE.f32.abs + TOLERANCE.f32.rel * Math.abs(want[i]!))), 0);
    expect(excess).toBeGreaterThan(5e-4);
    // transformers' own float32 angles, on request, for bit-level parity with it.
    const hf = ropeTableValues({ rotaryDim: D, positions: base + 1, angles: 'f32' });
    const i = 1;
    const hfAngle = f(f(base) * f(1 / f(Math.pow(10000, f(f(2 * i) / D)))));
    expect(hf[(base * (D / 2) + i) * 2]).toBe(f(Math.cos(hfAngle)));
  });

  it('splits over row chunks when x is larger than a binding (limit lowered to 1 KiB), and a 2-D grid', async () => {
    overrideKernelLimits(gpu, { maxStorageBufferBindingSize: 1024, maxComputeWorkgroupsPerDimension: 2 });
    try {
      const B = 2, L = 40, H = 2, D = 8;
      const x = randomF32(B * L * H * D, 15);
      const table = await ropeTable(gpu, { rotaryDim: D, positions: 48 });
      const got = await applyRope(x, [B, L, H, D], table, { positionOffset: 2 });
      expectClose(got, ropeReference(x, { batch: B, seq: L, heads: H, headDim: D, angle: llamaAngle(10000, D, (_b, l) => l + 2) }), TOLERANCE.f32, 'split');
    } finally {
      overrideKernelLimits(gpu, {});
    }
  });
});
