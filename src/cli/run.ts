import { parseByteSize } from '../allocation/bytes.ts';
import type { ExecutionMode } from '../allocation/planner.ts';
import { openDevices } from '../devices/open.ts';
import type { DeviceSet } from '../devices/device-set.ts';
import { importNodeBuiltin } from '../devices/runtime.ts';
import { UsageError } from '../errors.ts';
import { openWeights } from '../formats/open-weights.ts';
import { openSafetensors } from '../formats/safetensors.ts';
import { writeSafetensorsFile } from '../formats/safetensors-writer.ts';
import type { HostTensor } from '../models/program.ts';
import { loadModel, type LoadedModel } from '../runtime/model.ts';
import { renderPlan } from './plan.ts';

export interface ModelRunOptions {
  readonly model: string;
  /** A weights file inside the model folder (model.bf16.safetensors, model.gguf). */
  readonly weights?: string;
  readonly alloc?: string;
  readonly compute?: string;
  readonly mode?: string;
  readonly memory?: string;
  readonly reserve?: string;
  readonly family?: string;
}

const MODES = new Set(['stream', 'pipeline', 'auto']);
/** greedy_tokens: as many as the reference fixtures hold. */
export const GREEDY_TOKENS = 8;

async function withModel<T>(o: ModelRunOptions, body: (model: LoadedModel, devices: DeviceSet) => Promise<T>): Promise<T> {
  if (o.mode !== undefined && !MODES.has(o.mode)) throw new UsageError(`--mode must be stream, pipeline or auto (got "${o.mode}")`);
  const path = await importNodeBuiltin<typeof import('node:path')>('path');
  const weights = await openWeights(o.weights ? path.join(o.model, o.weights) : o.model);
  const devices = await openDevices({ memory: o.memory });
  try {
    const model = await loadModel(devices, weights, {
      allocation: o.alloc, compute: o.compute, mode: o.mode as ExecutionMode | undefined, family: o.family,
      reserve: o.reserve === undefined ? undefined : parseByteSize(o.reserve),
    });
    try {
      return await body(model, devices);
    } finally {
      await model.unload();
    }
  } finally {
    await devices.close();
    await weights.close();
  }
}

async function readInputs(file: string): Promise<Map<string, HostTensor>> {
  const st = await openSafetensors(file);
  try {
    const inputs = new Map<string, HostTensor>();
    for (const [name, info] of st.tensors) {
      const f = await st.readF32(name);
      const ints = /^[IU]\d+$/.test(info.dtype);
      inputs.set(name, { data: ints ? Int32Array.from(f) : f, shape: [...info.shape] });
    }
    return inputs;
  } finally {
    await st.close();
  }
}

const sameStart = (a: readonly number[], b: readonly number[]) => a.slice(0, b.length).every((v, i) => v === b[i]) || b.slice(0, a.length).every((v, i) => v === a[i]);

const ms = (x: number) => `${x.toFixed(1)} ms`;

/**
 * `multigpu forward`: runs every entry point whose inputs the file holds, writes each output
 * as f32 under the reference's name, and for causal LMs the greedy continuation of input_ids[0].
 */
export async function forwardCommand(o: ModelRunOptions & { inputs: string; out: string }): Promise<string> {
  const inputs = await readInputs(o.inputs);
  return withModel(o, async (model) => {
    const entries = Object.entries(model.entries).filter(([, e]) => e.inputs.every((n) => inputs.has(n)));
    if (entries.length === 0) {
      const want = Object.entries(model.entries).map(([k, e]) => `${k}: ${e.inputs.join(', ')}`).join('; ');
      throw new UsageError(`${o.inputs} holds ${[...inputs.keys()].join(', ') || 'no tensors'}, which no entry of ${model.definition.family} takes (${want})`, {
        hint: 'name the input tensors as the reference implementation names its arguments',
      });
    }
    const outputs = new Map<string, HostTensor>();
    const lines = [renderPlan(model.plan, o.model), ''];
    for (const [entry, e] of entries) {
      const own = new Map([...inputs].filter(([n]) => e.inputs.includes(n) || e.optionalInputs.includes(n)));
      const r = await model.forward(own, entry);
      for (const [n, t] of r.outputs) outputs.set(n, t);
      lines.push(`${entry}: ${ms(r.stats.ms)}; ${r.stats.moves} activation moves (${r.stats.movedBytes} bytes), ${r.stats.stagedBytes} weight bytes streamed`);
    }
    const ids = inputs.get('input_ids');
    if (model.definition.causalLM && ids) {
      const prompt = [...ids.data.subarray(0, ids.shape[ids.shape.length - 1]!)];
      const g = await model.generate(prompt, GREEDY_TOKENS);
      outputs.set('greedy_tokens', { data: Int32Array.from(g.tokens), shape: [g.tokens.length] });
      lines.push(`greedy_tokens: ${g.tokens.join(' ')} (prefill ${ms(g.ms.prefill)}, decode ${ms(g.ms.decode)})`);
    }
    await writeSafetensorsFile(o.out, [...outputs].map(([name, t]) => (t.data instanceof Int32Array
      ? { name, dtype: 'I64' as const, shape: t.shape, data: BigInt64Array.from(t.data, (v) => BigInt(v)) }
      : { name, dtype: 'F32' as const, shape: t.shape, data: t.data })));
    lines.push(`wrote ${outputs.size} tensors to ${o.out}: ${[...outputs.keys()].join(', ')}`);
    return lines.join('\n');
  });
}

/**
 * The bundled model (a copy of the llama-tiny reference fixture, models/llama-tiny in the
 * package), its reference prompt input_ids[0] and the tokens transformers generated from it.
 */
export async function defaultModel(): Promise<{ path: string; prompt: number[]; reference: number[] }> {
  const { fileURLToPath } = await importNodeBuiltin<typeof import('node:url')>('url');
  const fs = await importNodeBuiltin<typeof import('node:fs/promises')>('fs/promises');
  // dist/src/cli/run.js when built, src/cli/run.ts when Deno runs the sources
  const candidates = ['../../../models/llama-tiny', '../../models/llama-tiny'].map((p) => fileURLToPath(new URL(p, import.meta.url)));
  for (const path of candidates) {
    try {
      await fs.access(`${path}/config.json`);
    } catch {
      continue;
    }
    const expected = await readInputs(`${path}/expected.safetensors`);
    const ids = expected.get('input_ids')!;
    const greedy = expected.get('greedy_tokens')!;
    return { path, prompt: [...ids.data.subarray(0, ids.shape[ids.shape.length - 1]!)], reference: [...greedy.data] };
  }
  throw new UsageError('the bundled model (models/llama-tiny) is missing from this installation', { hint: 'pass --model <folder>' });
}

/** `multigpu generate`: greedy tokens from a prompt of ids; prints the placement, the tokens and timings. */
export async function generateCommand(o: ModelRunOptions & { prompt: readonly number[]; tokens: number; reference?: readonly number[] }): Promise<string> {
  return withModel(o, async (model) => {
    const t0 = performance.now();
    const g = await model.generate(o.prompt, o.tokens);
    const total = performance.now() - t0;
    return [
      renderPlan(model.plan, o.model),
      '',
      `prompt:    ${o.prompt.join(' ')}`,
      `generated: ${g.tokens.join(' ')}`,
      ...(o.reference ? [`reference: ${o.reference.join(' ')} (transformers, greedy) — ${sameStart(g.tokens, o.reference) ? 'identical' : 'DIFFERENT'}`] : []),
      `prefill ${ms(g.ms.prefill)} (${o.prompt.length} tokens), decode ${ms(g.ms.decode)} (${g.tokens.length - 1} tokens, ${((g.tokens.length - 1) / (g.ms.decode / 1000 || Infinity)).toFixed(1)} tokens/s), total ${ms(total)}`,
    ].join('\n');
  });
}
