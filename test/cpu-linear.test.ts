// The CPU device's linear (WebAssembly SIMD, worker threads) against the plain TypeScript
// reference (src/kernels/reference/matmul.ts), for every weight layout of the WGSL library,
// with the GPU suite's random odd shapes and tolerance (test/kernels/matmul.test.ts):
// |got − want| ≤ 2e-5 · Σ_k |x[m,k]| · max_k |w[n,k]| · |scale| + 1e-6 · |bias[n]|.
// Both paths run: GEMV (M ≤ 3, straight from the stored blocks) and the tiled GEMM (M ≥ 4,
// panels decoded once per k block), multi-threaded (2 threads), forced single-threaded on
// the shared build, and on the unshared single-thread build a non-isolated page gets.
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CpuKernels, CPU_WEIGHT_DTYPES, CPU_WEIGHT_LAYOUT, type CpuWeightDtype } from '../src/cpu/index.ts';
import { dequantizeWeight, linearReference } from '../src/kernels/reference/matmul.ts';
import { randomValues, randomWeightBytes } from '../src/kernels/reference/matmul-data.ts';

const TOL = 2e-5;

const pools: Record<'multi' | 'single' | 'unshared', CpuKernels | null> = { multi: null, single: null, unshared: null };

beforeAll(async () => {
  pools.multi = await CpuKernels.create({ threads: 2, wakeWorkers: 'always' });
  pools.single = await CpuKernels.create({ threads: 1 });
  pools.unshared = await CpuKernels.create({ shared: false });
});
afterAll(async () => {
  for (const p of Object.values(pools)) await p?.close();
});

interface Case {
  readonly dtype: CpuWeightDtype;
  readonly m: number;
  readonly n: number;
  readonly k: number;
  readonly seed: number;
  readonly bias?: boolean;
  readonly scale?: number;
}

/** Loads the weight, runs linear on `cpu`, compares with the reference, frees the weight. */
async function check(cpu: CpuKernels, c: Case): Promise<void> {
  const { dtype, m, n, k, seed } = c;
  const scale = c.scale ?? 1;
  const bytes = randomWeightBytes(dtype, n, k, seed);
  const wValues = dequantizeWeight(dtype, bytes, n * k);
  const x = randomValues(m * k, seed + 1);
  const bias = c.bias ? randomValues(n, seed + 2, 2) : null;
  const weight = await cpu.loadWeight(bytes, [n, k], dtype, { scale });
  try {
    const got = await cpu.linear(x, m, weight, { bias });
    const want = linearReference(x, wValues, m, n, k, bias, scale);
    expectLinearClose(got, want, x, wValues, m, n, k, scale, bias, `${dtype} m=${m} n=${n} k=${k} threads=${cpu.threads}`);
  } finally {
    await cpu.freeWeight(weight);
  }
}

export function expectLinearClose(got: Float32Array, want: Float32Array, x: Float32Array, w: Float32Array, m: number, n: number, k: number,
  scale: number, bias: Float32Array | null, label: string): void {
  expect(got.length).toBe(m * n);
  const wmax = new Float64Array(n);
  for (let j = 0; j < n; j++) for (let q = 0; q < k; q++) wmax[j] = Math.max(wmax[j]!, Math.abs(w[j * k + q]!));
  for (let i = 0; i < m; i++) {
    let sx = 0;
    for (let q = 0; q < k; q++) sx += Math.abs(x[i * k + q]!);
    for (let j = 0; j < n; j++) {
      const allowed = TOL * sx * wmax[j]! * Math.abs(scale) + 1e-6 * Math.abs(bias?.[j] ?? 0);
      const g = got[i * n + j]!;
      const v = want[i * n + j]!;
      if (!(Math.abs(g - v) <= allowed)) expect.fail(`${label}: out[${i}, ${j}] = ${g}, reference ${v} (allowed ±${allowed.toExponential(2)})`);
    }
  }
}

function kArb(dtype: CpuWeightDtype): fc.Arbitrary<number> {
  const block = CPU_WEIGHT_LAYOUT[dtype].blockElements;
  if (block === 1) return fc.integer({ min: 1, max: 160 });
  return fc.integer({ min: 1, max: block === 32 ? 6 : 2 }).map((b) => b * block);
}

describe('CPU linear (WebAssembly SIMD) against the reference', () => {
  it('threads: 2 here, 1 when forced, 1 on the unshared build (and it says why)', () => {
    expect(pools.multi!.threads).toBe(2);
    expect(pools.multi!.multiThreaded).toBe(true);
    expect(pools.multi!.note).toBeNull();
    expect(pools.single!.threads).toBe(1);
    expect(pools.single!.multiThreaded).toBe(false);
    expect(pools.unshared!.threads).toBe(1);
    expect(pools.unshared!.note).toMatch(/unshared/);
  });

  it.each(CPU_WEIGHT_DTYPES.map((d) => [d]))('%s weights: GEMV (M ≤ 3) and GEMM (M ≥ 4), random shapes, every thread mode', async (dtype) => {
    await fc.assert(fc.asyncProperty(
      fc.record({
        n: fc.integer({ min: 1, max: 45 }),
        k: kArb(dtype),
        mSmall: fc.integer({ min: 1, max: 3 }),
        m: fc.integer({ min: 4, max: 24 }),
        seed: fc.integer({ min: 1, max: 1 << 30 }),
        bias: fc.boolean(),
      }),
      async ({ n, k, mSmall, m, seed, bias }) => {
        const scale = dtype.startsWith('f8') ? 0.37 : 1;
        for (const cpu of [pools.multi!, pools.single!, pools.unshared!]) {
          await check(cpu, { dtype, m: mSmall, n, k, seed, bias, scale });
          await check(cpu, { dtype, m, n, k, seed: seed + 7, bias, scale });
        }
      },
    ), { numRuns: 3, seed: 0x5eed + dtype.length, endOnFailure: true });
  });

  it.each(CPU_WEIGHT_DTYPES.map((d) => [d]))('%s weights: several GEMM tiles and k blocks (M > 64, N > 64, K > 256), threads 2 and 1', async (dtype) => {
    const block = CPU_WEIGHT_LAYOUT[dtype].blockElements;
    const k = block === 1 ? 601 : block === 32 ? 544 : 768;
    for (const cpu of [pools.multi!, pools.single!]) {
      await check(cpu, { dtype, m: 70, n: 75, k, seed: 99, bias: true, scale: dtype.startsWith('f8') ? 2.5 : 1 });
      await check(cpu, { dtype, m: 3, n: 130, k, seed: 98, bias: false });
    }
  });
});

describe('CPU memories: weights past one memory (lowered per-memory limit)', () => {
  it('spreads weights over several memories, splits one that fits none, drops memories when freed', async () => {
    const cpu = await CpuKernels.create({ threads: 2, memoryLimit: 2 * 1024 * 1024, activationReserve: 192 * 1024 });
    try {
      expect(cpu.memoryInfo()).toHaveLength(1); // the activations' memory
      // 3 f32 weights of 512 KiB each: two fit a 2 MiB memory (after its fixed area and reserve), the third opens another.
      const small = [];
      for (let i = 0; i < 3; i++) small.push(await cpu.loadWeight(randomValues(128 * 1024, 500 + i), [256, 512], 'f32'));
      const slots = new Set(small.flatMap((w) => w.memorySlots));
      expect(slots.size).toBeGreaterThan(1);
      // One weight of 3 MiB fits no memory: its rows go to several.
      const big = await cpu.loadWeight(randomWeightBytes('q8_0', 1536, 2048, 7), [1536, 2048], 'q8_0');
      expect(big.memorySlots.length).toBeGreaterThan(1);
      expect(cpu.memoryInfo().length).toBeGreaterThanOrEqual(1 + slots.size + big.memorySlots.length - 1);
      for (const info of cpu.memoryInfo()) expect(info.committedBytes).toBeLessThanOrEqual(2 * 1024 * 1024);
      // Results across memories match the reference (GEMV and GEMM).
      const wValues = dequantizeWeight('q8_0', randomWeightBytes('q8_0', 1536, 2048, 7), 1536 * 2048);
      for (const m of [1, 5]) {
        const x = randomValues(m * 2048, 70 + m);
        const got = await cpu.linear(x, m, big, { scale: 0.5 });
        expectLinearClose(got, linearReference(x, wValues, m, 1536, 2048, null, 0.5), x, wValues, m, 1536, 2048, 0.5, null, `split q8_0 m=${m}`);
      }
      const before = cpu.memoryInfo().length;
      await cpu.freeWeight(big);
      expect(cpu.memoryInfo().length).toBeLessThan(before);
      for (const w of small) await cpu.freeWeight(w);
      expect(cpu.memoryInfo()).toHaveLength(1);
      await expect(cpu.linear(new Float32Array(512), 1, small[0]!)).rejects.toThrow(/freed/);
    } finally {
      await cpu.close();
    }
  });

  it('refuses a weight row group larger than a whole memory, and bad shapes', async () => {
    const cpu = await CpuKernels.create({ threads: 1, memoryLimit: 1024 * 1024, activationReserve: 64 * 1024 });
    try {
      await expect(cpu.loadWeight(new Float32Array(8 * 65536), [8, 65536], 'f32')).rejects.toThrow(/do not fit a CPU memory/);
      expect(cpu.memoryInfo()).toHaveLength(1);
      await expect(cpu.loadWeight(new Uint8Array(10), [1, 33], 'q4_0')).rejects.toThrow(/multiple of 32/);
      await expect(cpu.loadWeight(new Float32Array(6), [2, 4], 'f32')).rejects.toThrow(/needs 32 bytes/);
      const w = await cpu.loadWeight(new Float32Array(8), [2, 4], 'f32');
      await expect(cpu.linear(new Float32Array(5), 1, w)).rejects.toThrow(/not 1×4/);
      await expect(cpu.linear(new Float32Array(4), 1, w, { bias: new Float32Array(3) })).rejects.toThrow(/bias/);
    } finally {
      await cpu.close();
    }
  });
});

describe('a browser page without cross-origin isolation', () => {
  it('falls back to one thread and says so', async () => {
    const g = globalThis as { crossOriginIsolated?: boolean };
    const saved = Object.getOwnPropertyDescriptor(globalThis, 'crossOriginIsolated');
    const warn = console.warn;
    const warnings: string[] = [];
    console.warn = (message: string) => warnings.push(message);
    try {
      Object.defineProperty(globalThis, 'crossOriginIsolated', { value: false, configurable: true });
      expect(g.crossOriginIsolated).toBe(false);
      const cpu = await CpuKernels.create({ threads: 4 });
      try {
        expect(cpu.threads).toBe(1);
        expect(cpu.note).toMatch(/cross-origin isolated/);
        expect(warnings.join('\n')).toMatch(/one thread/);
        await check(cpu, { dtype: 'q4_k', m: 2, n: 9, k: 256, seed: 5 });
      } finally {
        await cpu.close();
      }
    } finally {
      console.warn = warn;
      if (saved) Object.defineProperty(globalThis, 'crossOriginIsolated', saved);
      else delete g.crossOriginIsolated;
    }
  });
});
