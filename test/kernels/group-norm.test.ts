// GroupNorm on NCHW against its CPU reference: random shapes with 32 groups and fewer, affine
// f32/f16/bf16 or none, fused SiLU, both reductions forced, a 2-D grid of (item, group)s.
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fromFloat32, toFloat32 } from '../../src/formats/dtypes.ts';
import { overrideKernelLimits } from '../../src/kernels/limits.ts';
import { GROUP_NORM_CHUNK, groupNorm } from '../../src/kernels/ops/group-norm.ts';
import { KernelRecorder } from '../../src/kernels/recorder.ts';
import { groupNormReference } from '../../src/kernels/reference/group-norm.ts';
import { downloadF32, emptyTensor, uploadTensor, type GpuTensor } from '../../src/kernels/tensor.ts';
import { expectClose, openTestGpu, randomF32, type TestGpu, type Tolerance } from './harness.ts';

// As LayerNorm: f32 two-pass statistics over up to ~2000 values, inverseSqrt, exp in the SiLU.
const TOL: Tolerance = { abs: 2e-5, rel: 2e-5 };

let t: TestGpu;
beforeAll(async () => {
  t = await openTestGpu();
});
afterAll(async () => {
  await t?.set.close();
});

type WDtype = 'f32' | 'f16' | 'bf16' | 'none';

async function stored(values: Float32Array, dtype: Exclude<WDtype, 'none'>): Promise<{ tensor: GpuTensor; values: Float32Array }> {
  if (dtype === 'f32') return { tensor: await uploadTensor(t.gpu, values, [values.length], 'f32'), values };
  const name = dtype === 'f16' ? 'F16' : 'BF16';
  const bytes = fromFloat32(name, values);
  return { tensor: await uploadTensor(t.gpu, bytes, [values.length], dtype), values: toFloat32(name, bytes) };
}

interface Case {
  n: number;
  groups: number;
  perGroup: number;
  h: number;
  w: number;
  wd: WDtype;
  bd: WDtype;
  silu: boolean;
  subgroups: boolean;
  seed: number;
}

async function check(c: Case): Promise<void> {
  const channels = c.groups * c.perGroup;
  const shape = [c.n, channels, c.h, c.w];
  const x = randomF32(c.n * channels * c.h * c.w, c.seed, 3).map((v, i) => v + (i % 7) - 3);
  const tx = await uploadTensor(t.gpu, x, shape);
  const w = c.wd === 'none' ? null : await stored(randomF32(channels, c.seed + 1, 2), c.wd);
  const b = c.bd === 'none' ? null : await stored(randomF32(channels, c.seed + 2, 1), c.bd);
  const out = await emptyTensor(t.gpu, shape);
  try {
    const rec = new KernelRecorder(t.gpu);
    await groupNorm(rec, tx, w?.tensor ?? null, b?.tensor ?? null, out, { groups: c.groups, eps: 1e-5, silu: c.silu, subgroups: c.subgroups });
    await rec.submit();
    const want = groupNormReference(x, w?.values ?? null, b?.values ?? null, c.n, channels, c.groups, 1e-5, c.silu);
    expectClose(await downloadF32(out), want, TOL, `group_norm ${JSON.stringify(c)}`);
  } finally {
    for (const r of [tx, w?.tensor, b?.tensor, out]) r?.destroy();
  }
}

describe('group_norm', () => {
  it('matches the reference on random NCHW shapes, affine dtypes, SiLU and both reductions', async () => {
    await fc.assert(fc.asyncProperty(
      fc.record({
        n: fc.integer({ min: 1, max: 2 }), groups: fc.constantFrom(1, 3, 32), perGroup: fc.integer({ min: 1, max: 3 }),
        h: fc.integer({ min: 1, max: 9 }), w: fc.integer({ min: 1, max: 9 }),
        wd: fc.constantFrom<WDtype>('f32', 'f16', 'bf16', 'none'), bd: fc.constantFrom<WDtype>('f32', 'f16', 'bf16', 'none'),
        silu: fc.boolean(), subgroups: fc.boolean(), seed: fc.integer({ min: 0, max: 1e6 }),
      }),
      check,
    ), { numRuns: 14 });
  });

  it('the VAE/UNet form (32 groups, affine, SiLU fused) with each reduction; a group larger than the workgroup', async () => {
    for (const subgroups of [false, true]) {
      await check({ n: 1, groups: 32, perGroup: 2, h: 8, w: 8, wd: 'f32', bd: 'f32', silu: true, subgroups, seed: 3 });
      await check({ n: 2, groups: 2, perGroup: 3, h: 13, w: 11, wd: 'bf16', bd: 'f16', silu: false, subgroups, seed: 4 });
    }
  });

  it('groups of several chunks (statistics merged across workgroups), the last one partial', async () => {
    // 4 × 97 × 103 = 39964 values a group: chunks of GROUP_NORM_CHUNK, the third one short.
    expect(Math.ceil((4 * 97 * 103) / GROUP_NORM_CHUNK)).toBe(3);
    for (const subgroups of [false, true]) {
      await check({ n: 2, groups: 2, perGroup: 4, h: 97, w: 103, wd: 'f32', bd: 'bf16', silu: true, subgroups, seed: 11 });
    }
  });

  it('(item, group)s beyond maxComputeWorkgroupsPerDimension go on a 2-D grid', async () => {
    overrideKernelLimits(t.gpu, { maxComputeWorkgroupsPerDimension: 5 });
    try {
      await check({ n: 2, groups: 32, perGroup: 1, h: 3, w: 5, wd: 'f16', bd: 'f32', silu: true, subgroups: true, seed: 9 });
      await check({ n: 1, groups: 32, perGroup: 1, h: 3, w: 5, wd: 'f32', bd: 'none', silu: false, subgroups: false, seed: 10 });
    } finally {
      overrideKernelLimits(t.gpu, {});
    }
  });

  it('refuses groups that do not divide the channels', async () => {
    const x = await emptyTensor(t.gpu, [1, 6, 2, 2]);
    await expect(groupNorm(new KernelRecorder(t.gpu), x, null, null, x, { groups: 4, eps: 1e-5 })).rejects.toThrow(/4 groups do not divide 6 channels/);
    x.destroy();
  });
});
