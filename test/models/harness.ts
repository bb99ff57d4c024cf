// Runs a fixture model through loadModel on this machine's devices (SwiftShader as gpu:0, the
// WebAssembly cpu) and compares its outputs with the reference outputs in expected.safetensors.
import { afterAll, expect } from 'vitest';
import { openDevices } from '../../src/devices/open.ts';
import type { DeviceSet } from '../../src/devices/device-set.ts';
import type { ExecutionMode } from '../../src/allocation/planner.ts';
import { readHostTensors } from '../../src/runtime/host-tensors.ts';
import { openWeights } from '../../src/formats/open-weights.ts';
import type { HostTensor } from '../../src/models/program.ts';
import type { WeightSet } from '../../src/formats/weights.ts';
import { loadModel, type LoadedModel, type LoadOptions } from '../../src/runtime/model.ts';
import { fixturePath } from '../fixtures.ts';

let devices: Promise<DeviceSet> | null = null;

/** One device set per test file (closed after the file's tests). */
export function fixtureDevices(): Promise<DeviceSet> {
  if (!devices) {
    devices = openDevices();
    afterAll(async () => {
      await (await devices!).close();
      devices = null;
    });
  }
  return devices;
}

/** The three allocations every fixture must pass under (issue 7). */
export const ALLOCATIONS: ReadonlyArray<{ readonly label: string; readonly allocation: string; readonly mode: ExecutionMode }> = [
  { label: 'all on gpu:0', allocation: 'gpu:0,100%', mode: 'stream' },
  { label: 'gpu:0,50%;cpu,* pipeline', allocation: 'gpu:0,50%;cpu,*', mode: 'pipeline' },
  { label: 'gpu:0,50%;cpu,* stream', allocation: 'gpu:0,50%;cpu,*', mode: 'stream' },
];

/** Tolerances of issue 7: max |got − expected| ≤ tol · max |expected|, per tensor. */
export const TOLERANCE = { f32: 1e-3, gguf: 1e-3, f16: 5e-3, bf16: 2e-2 } as const;

/** The weight files of a fixture folder and the tolerance each is held to. */
export const WEIGHT_FILES = {
  f32: { dtype: 'f32', file: 'model.safetensors', tol: TOLERANCE.f32 },
  f16: { dtype: 'f16', file: 'model.f16.safetensors', tol: TOLERANCE.f16 },
  bf16: { dtype: 'bf16', file: 'model.bf16.safetensors', tol: TOLERANCE.bf16 },
} as const;

/** Every tensor of expected.safetensors (inputs and outputs) as f32 or i32 host tensors. */
export function expectedOf(fixture: string): Promise<Map<string, HostTensor>> {
  return readHostTensors(fixturePath(fixture, 'expected.safetensors'));
}

export interface FixtureRun {
  readonly model: LoadedModel;
  /** Open while `keep` holds the model: close it after unloading. */
  readonly weights: WeightSet;
  readonly outputs: Map<string, HostTensor>;
  readonly expected: Map<string, HostTensor>;
}

/**
 * Loads `fixture` (its folder, or `weightsFile` in it: model.bf16.safetensors, model.gguf),
 * runs `entry` on the inputs expected.safetensors holds, and unloads unless `keep` is set.
 */
export async function runFixture(fixture: string, o: LoadOptions & { weightsFile?: string; entry?: string; keep?: boolean; inputs?: readonly string[] } = {}): Promise<FixtureRun> {
  const set = await fixtureDevices();
  const expected = await expectedOf(fixture);
  const weights = await openWeights(fixturePath(fixture, o.weightsFile ?? 'model.safetensors'));
  const model = await loadModel(set, weights, o);
  try {
    const entry = model.definition.entries[o.entry ?? 'forward']!;
    const names = o.inputs ?? [...entry.inputs, ...(entry.optionalInputs ?? [])];
    const inputs = new Map([...expected].filter(([name]) => names.includes(name)));
    const { outputs } = await model.forward(inputs, o.entry ?? 'forward');
    return { model, weights, outputs, expected };
  } finally {
    if (!o.keep) {
      await model.unload();
      await weights.close();
    }
  }
}

/** The worst |got − expected| / max |expected| over a tensor. */
export function relativeError(got: HostTensor, expected: HostTensor): number {
  expect(got.shape, 'shape').toEqual(expected.shape);
  let maxRef = 0;
  let maxErr = 0;
  for (let i = 0; i < expected.data.length; i++) {
    maxRef = Math.max(maxRef, Math.abs(expected.data[i]!));
    const e = Math.abs(got.data[i]! - expected.data[i]!);
    maxErr = Number.isNaN(e) ? Infinity : Math.max(maxErr, e);
  }
  return maxErr / (maxRef || 1);
}

/** Asserts every named output within tol · max|expected|; returns the worst relative error per name. */
export function expectClose(outputs: ReadonlyMap<string, HostTensor>, expected: ReadonlyMap<string, HostTensor>, names: readonly string[], tol: number): Record<string, number> {
  const worst: Record<string, number> = {};
  for (const name of names) {
    const got = outputs.get(name);
    const ref = expected.get(name);
    expect(got, `output ${name}`).toBeDefined();
    expect(ref, `reference ${name}`).toBeDefined();
    worst[name] = relativeError(got!, ref!);
    expect(worst[name], `${name}: max error / max |expected|`).toBeLessThanOrEqual(tol);
  }
  return worst;
}

/** Asserts two runs' outputs are bit for bit the same (stream mode vs all on one GPU). */
export function expectIdentical(a: ReadonlyMap<string, HostTensor>, b: ReadonlyMap<string, HostTensor>, names: readonly string[]): void {
  for (const name of names) {
    const x = a.get(name)!;
    const y = b.get(name)!;
    expect(x.shape, name).toEqual(y.shape);
    const bx = new Uint8Array(x.data.buffer, x.data.byteOffset, x.data.byteLength);
    const by = new Uint8Array(y.data.buffer, y.data.byteOffset, y.data.byteLength);
    expect(Buffer.compare(Buffer.from(bx), Buffer.from(by)), `${name} bit-identical`).toBe(0);
  }
}
