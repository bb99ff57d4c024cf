// Shared by the kernel suites: a SwiftShader GPU, random data, and comparisons with stated tolerances.
import { expect } from 'vitest';
import { openDevices, type DeviceSet, type GpuDevice } from '../../src/index.ts';

export interface TestGpu {
  readonly set: DeviceSet;
  readonly gpu: GpuDevice;
}

/** SwiftShader through Dawn: f32 path, subgroups (size 4), no shader-f16. */
export async function openTestGpu(): Promise<TestGpu> {
  const set = await openDevices();
  const gpu = set.gpus[0];
  if (!gpu) throw new Error('no GPU adapter: install chromium (SwiftShader) or a Vulkan driver');
  return { set, gpu };
}

/** Deterministic pseudo-random floats in [-scale, scale) (mulberry32), so failures reproduce. */
export function randomF32(n: number, seed: number, scale = 1): Float32Array {
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

export interface Tolerance {
  /** |got − want| ≤ abs + rel × |want| for every element. */
  readonly abs: number;
  readonly rel: number;
}

/** Stated tolerances: f32 kernels vs the f32 CPU reference (reordered sums), f16 activations. */
export const TOLERANCE = {
  exact: { abs: 0, rel: 0 },
  f32: { abs: 1e-5, rel: 1e-4 },
  f16: { abs: 2e-3, rel: 2e-2 },
} as const satisfies Record<string, Tolerance>;

/** Fails with the first offending index, its values and the worst error. */
export function expectClose(got: Float32Array, want: Float32Array, tol: Tolerance, label = ''): void {
  expect(got.length, `${label}: length`).toBe(want.length);
  let worst = -1;
  let worstExcess = 0;
  for (let i = 0; i < want.length; i++) {
    const g = got[i]!;
    const w = want[i]!;
    const allowed = tol.abs + tol.rel * Math.abs(w);
    const err = Number.isNaN(g) !== Number.isNaN(w) ? Infinity : Number.isNaN(w) ? 0 : Math.abs(g - w);
    if (err > allowed && err - allowed > worstExcess) {
      worst = i;
      worstExcess = err - allowed;
    }
  }
  if (worst >= 0) {
    expect.fail(`${label}: element ${worst} is ${got[worst]} but the reference is ${want[worst]} (tolerance abs ${tol.abs} + rel ${tol.rel})`);
  }
}
