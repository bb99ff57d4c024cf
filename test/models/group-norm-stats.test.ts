// GroupNorm statistics at 1024² sizes (issue 7: details the tiny fixtures can't catch). The SD
// VAE decoder's last level at a 1024×1024 image has 128 channels of 1024×1024 in 32 groups:
// 4 channels × 1024² = 4 Mi values per group. Activations there can sit far from zero with a
// small spread; a one-pass E[x²] − E[x]² or a long f32 running sum loses the variance (or
// shifts the mean) and the normalized output is off by whole standard deviations. Both
// backends' groupNorm (WGSL on gpu:0, WebAssembly on cpu) are compared here with a float64
// two-pass reference on such inputs.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CpuKernels } from '../../src/cpu/kernels.ts';
import type { Backend } from '../../src/runtime/backend.ts';
import { CpuBackend } from '../../src/runtime/cpu-backend.ts';
import { GpuBackend } from '../../src/runtime/gpu-backend.ts';
import { fixtureDevices } from './harness.ts';

const SIZE = 1024;
const CHANNELS = 8;
const GROUPS = 2;
const EPS = 1e-6;
/** Per group: (mean, standard deviation). Group 0 far above zero, group 1 far below with a smaller spread. */
const GROUP_STATS = [[1000, 1], [-1000, 0.5]] as const;

/** Deterministic normal samples (mulberry32 + Box–Muller), rounded to f32. */
function makeInput(): Float32Array {
  let a = 0x9e3779b9;
  const uniform = () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const x = new Float32Array(CHANNELS * SIZE * SIZE);
  const perGroup = x.length / GROUPS;
  for (let i = 0; i < x.length; i += 2) {
    const [mean, std] = GROUP_STATS[Math.floor(i / perGroup)]!;
    const r = Math.sqrt(-2 * Math.log(1 - uniform()));
    const th = 2 * Math.PI * uniform();
    x[i] = mean + std * r * Math.cos(th);
    x[i + 1] = mean + std * r * Math.sin(th);
  }
  return x;
}

/** torch.nn.GroupNorm without affine, in float64, two passes (mean, then the biased variance around it). */
function reference(x: Float32Array, silu: boolean): Float64Array {
  const y = new Float64Array(x.length);
  const n = x.length / GROUPS;
  for (let g = 0; g < GROUPS; g++) {
    let sum = 0;
    for (let i = g * n; i < (g + 1) * n; i++) sum += x[i]!;
    const mean = sum / n;
    let sq = 0;
    for (let i = g * n; i < (g + 1) * n; i++) sq += (x[i]! - mean) ** 2;
    const r = 1 / Math.sqrt(sq / n + EPS);
    for (let i = g * n; i < (g + 1) * n; i++) {
      const v = (x[i]! - mean) * r;
      y[i] = silu ? v / (1 + Math.exp(-v)) : v;
    }
  }
  return y;
}

describe('GroupNorm statistics at 1024² (4 Mi values per group, mean ±1e3, std 1 and 0.5)', () => {
  let gpuBackend: GpuBackend;
  let kernels: CpuKernels;
  let backends: Array<[string, Backend]>;
  const x = makeInput();
  const want = { plain: reference(x, false), silu: reference(x, true) };

  beforeAll(async () => {
    const set = await fixtureDevices();
    gpuBackend = new GpuBackend(set.gpus[0]!);
    kernels = await CpuKernels.create();
    backends = [['gpu:0', gpuBackend], ['cpu', new CpuBackend(kernels)]];
  });
  afterAll(async () => {
    await gpuBackend?.close();
    await kernels?.close();
  });

  it('the reference itself: each group has the mean and spread it was drawn with', () => {
    const n = x.length / GROUPS;
    GROUP_STATS.forEach(([mean, std], g) => {
      let s = 0;
      for (let i = g * n; i < (g + 1) * n; i++) s += x[i]!;
      expect(Math.abs(s / n - mean)).toBeLessThan(0.01 * std);
    });
  });

  for (const device of ['gpu:0', 'cpu']) {
    for (const silu of [false, true]) {
      it(`${device}: groupNorm${silu ? ' + SiLU' : ''} within 1e-3 × max|expected| of the float64 two-pass reference`, async () => {
        const b = backends.find(([d]) => d === device)![1];
        const got = await b.download(await b.groupNorm(await b.upload(x, [1, CHANNELS, SIZE, SIZE]), null, null, { groups: GROUPS, eps: EPS, silu }));
        const ref = silu ? want.silu : want.plain;
        expect(got.length).toBe(ref.length);
        const n = ref.length / GROUPS;
        for (let g = 0; g < GROUPS; g++) {
          let maxRef = 0;
          let maxErr = 0;
          for (let i = g * n; i < (g + 1) * n; i++) {
            maxRef = Math.max(maxRef, Math.abs(ref[i]!));
            const e = Math.abs(got[i]! - ref[i]!);
            maxErr = Number.isNaN(e) ? Infinity : Math.max(maxErr, e);
          }
          console.log(`group norm ${device}${silu ? ' silu' : ''} group ${g}: max error ${maxErr.toExponential(2)} (max |expected| ${maxRef.toFixed(2)})`);
          expect(maxErr / maxRef, `group ${g}`).toBeLessThanOrEqual(1e-3);
        }
      });
    }
  }
});
