// Every linear kernel variant, including those SwiftShader cannot run (f16 activations,
// subgroup matrices), must at least compile: Dawn's null backend validates WGSL with every
// feature on, so a typo in a tensor-core or f16 variant fails here rather than on an H100.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  linearKernel, sgmatPackedKernel, sgmatPackKernel, SGMAT_PACKED_TILES, SGMAT_TILES, MATMUL_TILES, type LinearKernelSpec, type LinearOptions, type SgmatPackedTile,
} from '../../src/kernels/ops/matmul.ts';
import { LINEAR_WEIGHT_DTYPES, isPlain, type LinearWeightDtype } from '../../src/kernels/ops/matmul-wgsl.ts';
import { kernelSource } from '../../src/kernels/shaders.ts';

interface DawnModule {
  create(flags: string[]): GPU;
}

let instance: GPU; // a Dawn instance must outlive its devices
let device: GPUDevice;

beforeAll(async () => {
  const specifier = 'webgpu';
  const dawn = (await import(specifier)) as DawnModule;
  instance = dawn.create(['backend=null', 'enable-dawn-features=allow_unsafe_apis']);
  const adapter = await instance.requestAdapter();
  if (!adapter) throw new Error('no Dawn null adapter');
  const wanted: GPUFeatureName[] = ['shader-f16', 'subgroups', 'chromium-experimental-subgroup-matrix' as GPUFeatureName];
  device = await adapter.requestDevice({
    requiredFeatures: wanted.filter((f) => adapter.features.has(f)),
    // As openDevices does: the adapter's own limits (32 KiB of workgroup memory, like the GPUs).
    requiredLimits: { maxComputeWorkgroupStorageSize: adapter.limits.maxComputeWorkgroupStorageSize },
  });
  expect(device.features.has('chromium-experimental-subgroup-matrix')).toBe(true);
});

// Dawn aborts the process at exit if a device is still alive.
afterAll(() => device?.destroy());

async function compiles(spec: LinearKernelSpec, options: LinearOptions = {}): Promise<string> {
  const kernel = linearKernel(spec, options);
  return compilesKernel(kernel, spec);
}

async function compilesKernel(kernel: { shader: Parameters<typeof kernelSource>[0]; defines: Parameters<typeof kernelSource>[1]; variant: string },
  spec: { weights: string; f16: boolean }): Promise<string> {
  const code = kernelSource(kernel.shader, kernel.defines);
  device.pushErrorScope('validation');
  const module = device.createShaderModule({ code });
  const info = await module.getCompilationInfo();
  const errors = info.messages.filter((m) => m.type === 'error').map((m) => `${m.lineNum}:${m.linePos} ${m.message}`);
  let pipelineError = '';
  if (errors.length === 0) {
    try {
      await device.createComputePipelineAsync({ layout: 'auto', compute: { module, entryPoint: 'main' } });
    } catch (error) {
      pipelineError = String((error as Error).message);
    }
  }
  const scope = await device.popErrorScope();
  // The null adapter offers 16 KiB of workgroup memory; GPUs offer 32 KiB (SwiftShader) to 48 KiB
  // (an H100 under Dawn), which linear() checks against the device before it picks a tile.
  const nullLimit = (text: string) => /workgroup storage \((\d+) bytes\) is larger than the maximum allowed \(16384/.exec(text);
  for (const text of [pipelineError, scope?.message ?? '']) {
    const over = nullLimit(text);
    if (over) expect(Number(over[1]), kernel.variant).toBeLessThanOrEqual(49152);
  }
  const problems = [...errors, pipelineError, scope?.message ?? ''].filter((p) => p && !nullLimit(p));
  expect(problems, `${kernel.variant} (${spec.weights}, f16=${spec.f16})`).toEqual([]);
  return kernel.variant;
}

const base = (weights: LinearWeightDtype, k: number): LinearKernelSpec =>
  ({ kernel: 'tiled', path: 'f32', weights, m: 256, n: 256, k, f16: false, bias: null, subgroups: true });

const kAligned = (d: LinearWeightDtype) => (d.endsWith('_k') ? 256 : isPlain(d) ? 64 : 64);

describe('linear kernels compile (Dawn null backend, all features)', () => {
  it.each(LINEAR_WEIGHT_DTYPES.map((d) => [d]))('%s: GEMV (f32 and f16 activations, subgroups and not, aligned and scalar)', async (d) => {
    const k = kAligned(d);
    await compiles({ ...base(d, k), kernel: 'gemv', m: 1 });
    await compiles({ ...base(d, k), kernel: 'gemv', m: 1, f16: true, bias: 'bf16' }, { subgroups: false, gemvRows: 8, gemvThreads: 64 });
    if (isPlain(d)) await compiles({ ...base(d, 63), kernel: 'gemv', m: 2, f16: true, bias: 'f16' }, { gemvRows: 1 });
  });

  it.each(LINEAR_WEIGHT_DTYPES.map((d) => [d]))('%s: tiled kernel, every tile, f32 and f16, aligned and not', async (d) => {
    const k = kAligned(d);
    for (const tile of Object.keys(MATMUL_TILES) as Array<keyof typeof MATMUL_TILES>) await compiles(base(d, k), { tile });
    await compiles({ ...base(d, k), f16: true, bias: 'f32' });
    if (isPlain(d)) await compiles({ ...base(d, 61), f16: true }, { tile: '32x32' });
  });

  it.each(LINEAR_WEIGHT_DTYPES.map((d) => [d]))('%s: subgroup-matrix kernel, f32 and f16 activations', async (d) => {
    const k = kAligned(d);
    const spec = { ...base(d, k), path: 'subgroup-matrix' as const };
    await compiles(spec, { sgmatTile: '128x128' });
    await compiles({ ...spec, f16: true, bias: 'f16' }, { sgmatTile: '64x64' });
    if (isPlain(d)) await compiles({ ...spec, k: 37 });
  });

  it('subgroup-matrix: every tile, shared and direct', async () => {
    for (const sgmatTile of Object.keys(SGMAT_TILES) as Array<keyof typeof SGMAT_TILES>) {
      await compiles({ ...base('f16', 256), path: 'subgroup-matrix', f16: true }, { sgmatDirect: true, sgmatTile });
      await compiles({ ...base('bf16', 256), path: 'subgroup-matrix', f16: true, workgroupStorage: 49152 }, { sgmatTile });
    }
  });

  it('subgroup-matrix packed: every tile (f16 and f32 out, bias or not) and the packing pre-pass', async () => {
    for (const tile of Object.keys(SGMAT_PACKED_TILES) as SgmatPackedTile[]) {
      await compilesKernel(sgmatPackedKernel(true, null, tile), { weights: 'f16', f16: true });
      await compilesKernel(sgmatPackedKernel(false, 'bf16', tile), { weights: 'f16', f16: false });
    }
    for (const [src, k] of [['f16', 64], ['f16', 37], ['bf16', 64], ['f32', 37]] as const) {
      await compilesKernel({ ...sgmatPackKernel(src, k), variant: `pack ${src} k=${k}` }, { weights: src, f16: src === 'f16' });
    }
  });
});
