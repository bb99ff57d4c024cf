import { parseByteSize } from '../allocation/bytes.ts';
import type { ExecutionMode } from '../allocation/planner.ts';
import { openDevices } from '../devices/open.ts';
import type { DeviceSet } from '../devices/device-set.ts';
import { importNodeBuiltin } from '../devices/runtime.ts';
import { UsageError } from '../errors.ts';
import { openWeights } from '../formats/open-weights.ts';
import { writeSafetensorsFile } from '../formats/safetensors-writer.ts';
import type { HostTensor } from '../models/program.ts';
import { hostTensorToWrite, readHostTensors } from '../runtime/host-tensors.ts';
import { loadModel, type LoadedModel } from '../runtime/model.ts';
import { renderPlan } from './plan.ts';
import { formatBytes } from '../allocation/bytes.ts';
import { nodeFolder } from '../formats/folder.ts';
import type { WeightSet } from '../formats/weights.ts';
import { blockMapOf } from '../models/registry.ts';
import { definitionOf } from '../models/definitions.ts';
import { tokenizerFromFolder, type TextTokenizer } from '../text/tokenizer.ts';
import { countReads, generationBar, loadingBar } from './progress.ts';

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

/**
 * Opens the weights and the devices, loads the model (with a loading bar of the bytes read when
 * `progress`), runs `body`, and frees everything. `check` sees the weights before any device
 * opens, so a usage error there costs no GPU start-up.
 */
async function withModel<T>(o: ModelRunOptions, body: (model: LoadedModel, devices: DeviceSet) => Promise<T>,
  extra: { progress?: boolean; check?: (weights: WeightSet) => Promise<void> } = {}): Promise<T> {
  if (o.mode !== undefined && !MODES.has(o.mode)) throw new UsageError(`--mode must be stream, pipeline or auto (got "${o.mode}")`);
  const path = await importNodeBuiltin<typeof import('node:path')>('path');
  const weights = await openWeights(o.weights ? path.join(o.model, o.weights) : o.model);
  try {
    await extra.check?.(weights);
  } catch (error) {
    await weights.close();
    throw error;
  }
  const devices = await openDevices({ memory: o.memory });
  try {
    const bar = await loadingBar(extra.progress ?? false, weights.byteLength);
    let read = 0;
    let model: LoadedModel;
    try {
      model = await loadModel(devices, extra.progress ? countReads(weights, (bytes) => bar.update(read += bytes)) : weights, {
        allocation: o.alloc, compute: o.compute, mode: o.mode as ExecutionMode | undefined, family: o.family,
        reserve: o.reserve === undefined ? undefined : parseByteSize(o.reserve),
      });
      // Tensors no block uses are never read: the bar ends full all the same.
      bar.update(weights.byteLength);
    } finally {
      bar.stop();
    }
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


const sameStart = (a: readonly number[], b: readonly number[]) => a.slice(0, b.length).every((v, i) => v === b[i]) || b.slice(0, a.length).every((v, i) => v === a[i]);

const ms = (x: number) => `${x.toFixed(1)} ms`;

/**
 * `multigpu forward`: runs every entry point whose inputs the file holds, writes each output
 * as f32 under the reference's name, and for causal LMs the greedy continuation of input_ids[0].
 */
export async function forwardCommand(o: ModelRunOptions & { inputs: string; out: string }): Promise<string> {
  const inputs = await readHostTensors(o.inputs);
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
    await writeSafetensorsFile(o.out, [...outputs].map(([name, t]) => hostTensorToWrite(name, t)));
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
    const expected = await readHostTensors(`${path}/expected.safetensors`);
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

/** A prompt of token ids: non-negative integers separated by commas or spaces. */
export function tokenIdsOf(text: string): number[] | null {
  if (!/^\s*\d+(?:\s*[,\s]\s*\d+)*\s*$/.test(text)) return null;
  return text.split(/[\s,]+/).filter(Boolean).map(Number);
}

export interface PromptRunOptions extends ModelRunOptions {
  /** Text, or token ids ("1,2,3"). */
  readonly prompt: string;
  /** Take the prompt as text even when it reads as ids. */
  readonly text?: boolean;
  /** New tokens (causal LMs). */
  readonly tokens: number;
  /** Encoders: the outputs (and input_ids) as a safetensors file; causal LMs: input_ids and generated_ids. */
  readonly out?: string;
  /** Draw progress bars on stderr. */
  readonly progress: boolean;
  /** Where the generated text goes as it comes (stdout); the summary is returned. */
  readonly write: (text: string) => void;
  /** `write` goes to the terminal the bars are drawn on (stdout is a TTY). */
  readonly live?: boolean;
}

/** generate's options, with the per-token callback src/runtime/model.ts does not have yet (see streamTokens). */
type GenerateOptions = NonNullable<Parameters<LoadedModel['generate']>[2]> & {
  onToken?: (token: number, index: number) => boolean | void;
};

function eosIds(config: Readonly<Record<string, unknown>> | null): Set<number> {
  const e = config?.eos_token_id;
  return new Set((Array.isArray(e) ? e : [e]).filter((v): v is number => Number.isInteger(v)));
}

/** The model folder: the path itself, or the folder of the weights file it names. */
async function modelFolder(o: ModelRunOptions): Promise<string> {
  const fs = await importNodeBuiltin<typeof import('node:fs/promises')>('fs/promises');
  const path = await importNodeBuiltin<typeof import('node:path')>('path');
  try {
    return (await fs.stat(o.model)).isDirectory() ? o.model : path.dirname(o.model);
  } catch {
    return o.model; // openWeights says what is wrong with the path
  }
}

function summarize(name: string, t: HostTensor): string {
  const d = t.data;
  let sum = 0;
  let sq = 0;
  let min = Infinity;
  let max = -Infinity;
  for (let i = 0; i < d.length; i++) {
    const v = d[i]!;
    sum += v;
    sq += v * v;
    if (v < min) min = v;
    if (v > max) max = v;
  }
  const n = Math.max(d.length, 1);
  const mean = sum / n;
  const std = Math.sqrt(Math.max(sq / n - mean * mean, 0));
  const f = (v: number) => v.toPrecision(4);
  const first = [...d.subarray(0, 4)].map(f).join(', ');
  return `${name} [${t.shape.join(', ')}]: mean ${f(mean)}, std ${f(std)}, min ${f(min)}, max ${f(max)}; first ${first}${d.length > 4 ? ', …' : ''}`;
}

/**
 * Greedy generation with the text printed as tokens come, up to the model's end-of-sequence
 * token (kept in the ids, not in the text, and what transformers' generate stops at). Streams
 * when generate calls `onToken` per token; a generate without it gives every token at its end,
 * and they print then.
 */
async function streamTokens(o: PromptRunOptions, model: LoadedModel, ids: readonly number[], tokenizer: TextTokenizer | null,
  eos: ReadonlySet<number>, head: string): Promise<string> {
  const stream = tokenizer?.decodeStream(ids, { skipSpecialTokens: true });
  const tokens: number[] = [];
  let stopped = false;
  // On a terminal the text takes the line the bar was on: the bar goes when the text starts.
  const bar = await generationBar(o.progress, o.tokens, { clear: o.live });
  let started = false;
  const emit = (text: string) => {
    if (!stream) return;
    if (!started) {
      started = true;
      if (o.live) bar.stop();
      o.write(stream.prompt);
    }
    if (text) o.write(text);
  };
  const take = (token: number, print: boolean): boolean => {
    if (stopped) return false;
    tokens.push(token);
    bar.update(tokens.length);
    if (eos.has(token)) stopped = true;
    else if (stream && print) emit(stream.push(token));
    return !stopped;
  };
  const options: GenerateOptions = { onToken: (token) => take(token, true) };
  const t0 = performance.now();
  let g: Awaited<ReturnType<LoadedModel['generate']>>;
  let late: number[] = [];
  try {
    g = await model.generate(ids, o.tokens, options);
    // Tokens generate gave only at its end (no onToken): counted now, printed once the bar is done.
    const before = tokens.length;
    for (const token of g.tokens.slice(before)) if (!take(token, false)) break;
    late = tokens.slice(before).filter((t) => !eos.has(t));
  } finally {
    bar.stop();
  }
  const total = performance.now() - t0;
  if (stream) for (const token of late) emit(stream.push(token));
  if (stream) emit(`${stream.end()}\n`);
  if (o.out) {
    await writeSafetensorsFile(o.out, [hostTensorToWrite('input_ids', { data: Int32Array.from(ids), shape: [1, ids.length] }),
      hostTensorToWrite('generated_ids', { data: Int32Array.from(tokens), shape: [tokens.length] })]);
  }
  // Decode time over the tokens after the first (the first comes from the prefill pass).
  const decoded = Math.max(g.tokens.length - 1, 0);
  return [
    ...(stream ? [''] : []),
    head,
    `prompt: ${ids.length} tokens: ${ids.join(' ')}`,
    `generated: ${tokens.length} tokens: ${tokens.join(' ')}${stopped ? ' (stopped at the end-of-sequence token)' : ''}`,
    `prefill ${ms(g.ms.prefill)} (${ids.length} tokens), decode ${ms(g.ms.decode)} (${decoded} tokens, ${(decoded / (g.ms.decode / 1000 || Infinity)).toFixed(1)} tokens/s), total ${ms(total)}`,
    ...(o.out ? [`wrote input_ids, generated_ids to ${o.out}`] : []),
  ].join('\n');
}

/**
 * `multigpu run --model M --prompt P`: a causal LM continues the prompt greedily, the text
 * printed as it comes (with the folder's tokenizer.json), then the ids and tokens/s; a text
 * encoder encodes it and prints each output's shape and values. A text prompt needs the
 * model's tokenizer.json; token ids ("1,2,3") need none.
 */
export async function promptCommand(o: PromptRunOptions): Promise<string> {
  const given = o.text ? null : tokenIdsOf(o.prompt);
  const folder = await modelFolder(o);
  const tokenizer: TextTokenizer | null = await (async () => {
    const fs = await importNodeBuiltin<typeof import('node:fs/promises')>('fs/promises');
    const isDir = await fs.stat(folder).then((s) => s.isDirectory(), () => false);
    return isDir ? tokenizerFromFolder(await nodeFolder(folder)) : null;
  })();
  if (!given && !tokenizer) {
    const shown = o.prompt.length > 40 ? `${o.prompt.slice(0, 37)}...` : o.prompt;
    throw new UsageError(`--prompt "${shown}" is text, and ${folder} has no tokenizer.json to turn it into token ids (looked for ${folder}/tokenizer.json)`, {
      hint: 'put the model\'s tokenizer.json (it comes with the model, e.g. on the Hugging Face Hub) beside its config.json, or give token ids: --prompt 1,15043,3186',
    });
  }
  const ids = given ?? tokenizer!.encode(o.prompt);
  if (ids.length === 0) throw new UsageError('--prompt gives no tokens', { hint: 'give some text, or token ids' });
  let causal = false;
  let eos = new Set<number>();
  const check = async (weights: WeightSet) => {
    eos = eosIds(weights.config);
    const definition = await definitionOf(blockMapOf(weights, o.family).family);
    const entry = definition.entries.forward;
    causal = definition.causalLM !== undefined;
    if (!causal && !(entry && entry.inputs.length === 1 && entry.inputs[0] === 'input_ids')) {
      const takes = Object.entries(definition.entries).map(([k, e]) => `${k}: ${e.inputs.join(', ')}`).join('; ');
      throw new UsageError(`${definition.family} does not take a prompt (${takes})`, {
        hint: 'run --prompt runs causal LMs (llama, gpt2) and text encoders (clip-text, t5-encoder); give this model its inputs with multigpu forward, or chain it with --stage',
      });
    }
    const vocab = typeof weights.config?.vocab_size === 'number' ? weights.config.vocab_size : undefined;
    const bad = vocab === undefined ? undefined : ids.find((id) => id >= vocab);
    if (bad !== undefined) {
      throw new UsageError(`token id ${bad} is past the model's vocabulary (${vocab} ids)`, {
        hint: given ? 'give ids below vocab_size' : `${tokenizer!.file} is not this model's tokenizer`,
      });
    }
    const positions = weights.config?.max_position_embeddings;
    if (!causal && typeof positions === 'number' && ids.length > positions) {
      throw new UsageError(`the prompt is ${ids.length} tokens, and ${definition.family} takes at most ${positions}`, { hint: 'shorten the prompt' });
    }
  };
  return withModel(o, async (model) => {
    const head = `${o.model}: ${model.definition.family}, ${formatBytes(model.plan.totalBytes)}; allocation "${model.plan.allocation.text}", ${model.plan.mode} execution, compute ${model.plan.compute}; ${
      model.plan.devices.map((d) => `${d.name} holds ${formatBytes(d.bytes)}`).join(', ')}`;
    const input: HostTensor = { data: Int32Array.from(ids), shape: [1, ids.length] };
    if (!model.definition.causalLM) {
      const r = await model.forward(new Map([['input_ids', input]]));
      const lines = [head, `input_ids [1, ${ids.length}]: ${ids.join(' ')}`];
      for (const [name, t] of r.outputs) if (!/^hidden_states\.\d+$/.test(name)) lines.push(summarize(name, t));
      lines.push(`encoded in ${ms(r.stats.ms)}`);
      if (o.out) {
        const all = [['input_ids', input] as const, ...r.outputs];
        await writeSafetensorsFile(o.out, all.map(([name, t]) => hostTensorToWrite(name, t)));
        lines.push(`wrote ${all.length} tensors to ${o.out}: ${all.map(([n]) => n).join(', ')}`);
      }
      return lines.join('\n');
    }
    return streamTokens(o, model, ids, tokenizer, eos, head);
  }, { progress: o.progress, check });
}

/** One stage of `multigpu run`: a model, where it goes, and where its inputs come from. */
export interface StageSpec {
  readonly name: string;
  readonly model: string;
  readonly weights?: string;
  readonly alloc?: string;
  readonly compute?: string;
  readonly mode?: string;
  readonly entry?: string;
  readonly keepLoaded: boolean;
  /** input name → "file.TENSOR" or "STAGE.OUTPUT"; unmapped inputs come from the file under their own name. */
  readonly inputs: ReadonlyMap<string, string>;
}

const STAGE_KEYS = new Set(['model', 'weights', 'alloc', 'compute', 'mode', 'entry', 'keep', 'in']);

/**
 * "NAME: model=PATH alloc=STRING keep=false entry=decode in=latents<-flux.sample,..."; values
 * may not hold spaces (allocation strings don't need any).
 */
export function parseStage(text: string): StageSpec {
  const m = /^\s*([A-Za-z][\w-]*)\s*:(.*)$/s.exec(text);
  const fail = (why: string): never => {
    throw new UsageError(`--stage "${text}": ${why}`, {
      hint: 'write a stage as "NAME: model=PATH [alloc=STRING] [mode=stream|pipeline|auto] [compute=DEVICE] [entry=NAME] [keep=true|false] [in=INPUT<-STAGE.OUTPUT,...]"',
    });
  };
  if (!m) return fail('it does not start with a stage name and a colon');
  const fields = new Map<string, string>();
  for (const part of m[2]!.trim().split(/\s+/).filter(Boolean)) {
    const eq = part.indexOf('=');
    if (eq < 1) fail(`"${part}" is not key=value`);
    const key = part.slice(0, eq);
    if (!STAGE_KEYS.has(key)) fail(`unknown key "${key}" (keys: ${[...STAGE_KEYS].join(', ')})`);
    if (fields.has(key)) fail(`"${key}" is given twice`);
    fields.set(key, part.slice(eq + 1));
  }
  const model = fields.get('model') ?? fail('model=PATH is missing');
  const keep = fields.get('keep') ?? 'true';
  if (keep !== 'true' && keep !== 'false') fail(`keep=${keep}: write keep=true or keep=false`);
  const mode = fields.get('mode');
  if (mode !== undefined && !MODES.has(mode)) fail(`mode=${mode}: stream, pipeline or auto`);
  const inputs = new Map<string, string>();
  for (const link of (fields.get('in') ?? '').split(',').filter(Boolean)) {
    const [to, from] = link.split('<-');
    if (!to || !from || !/^[\w-]+\.[\w.-]+$/.test(from)) fail(`in=${link}: write INPUT<-STAGE.OUTPUT (or INPUT<-file.TENSOR)`);
    inputs.set(to!, from!);
  }
  return {
    name: m[1]!, model, weights: fields.get('weights'), alloc: fields.get('alloc'), compute: fields.get('compute'), mode,
    entry: fields.get('entry'), keepLoaded: keep === 'true', inputs,
  };
}

/**
 * `multigpu run`: several models in one invocation, each with its own allocation and
 * keep-loaded flag, loaded together in one model manager and chained on named tensors: each
 * stage reads its inputs from the inputs file or from earlier stages' outputs. Writes every
 * output as STAGE.OUTPUT; at the end, unloadAll keeps what was marked kept (MULTIGPU_LOG=1
 * prints the manager's lines).
 */
export async function runCommand(o: { stages: readonly StageSpec[]; inputs?: string; out: string; memory?: string; log?: boolean }): Promise<string> {
  const names = new Set<string>();
  for (const s of o.stages) {
    if (names.has(s.name)) throw new UsageError(`two stages are named "${s.name}"`, { hint: 'give each stage its own name' });
    for (const from of s.inputs.values()) {
      const stage = from.split('.')[0]!;
      if (stage !== 'file' && !names.has(stage)) throw new UsageError(`stage ${s.name} reads ${from}, but no earlier stage is named "${stage}"`, { hint: 'stages run in the order given; name an earlier one, or file.TENSOR' });
    }
    names.add(s.name);
  }
  const file = o.inputs ? await readHostTensors(o.inputs) : new Map<string, HostTensor>();
  const { ModelManager } = await import('../manager/manager.ts');
  const path = await importNodeBuiltin<typeof import('node:path')>('path');
  const devices = await openDevices({ memory: o.memory });
  const lines: string[] = [];
  const manager = new ModelManager(devices, { log: o.log ? (l) => lines.push(l) : undefined });
  const results = new Map<string, HostTensor>();
  try {
    for (const s of o.stages) {
      const weights = await openWeights(s.weights ? path.join(s.model, s.weights) : s.model);
      const model = await manager.load(s.name, weights, {
        allocation: s.alloc, compute: s.compute, mode: s.mode as ExecutionMode | undefined, keepLoaded: s.keepLoaded,
      });
      const entry = s.entry ?? Object.keys(model.entries)[0]!;
      const want = model.entries[entry];
      if (!want) throw new UsageError(`stage ${s.name}: ${model.definition.family} has no entry "${entry}"`, { hint: `entries: ${Object.keys(model.entries).join(', ')}` });
      const inputs = new Map<string, HostTensor>();
      for (const name of [...want.inputs, ...want.optionalInputs]) {
        const from = s.inputs.get(name) ?? `file.${name}`;
        const [src, ...rest] = from.split('.');
        const tensor = src === 'file' ? file.get(rest.join('.')) : results.get(from);
        if (tensor) inputs.set(name, tensor);
        else if (want.inputs.includes(name)) {
          const where = src !== 'file' ? `stage ${src} did not output it` : o.inputs ? `${o.inputs} does not hold it` : 'no --inputs file was given';
          throw new UsageError(`stage ${s.name} needs input "${name}" (from ${from}), but ${where}`, {
            hint: `map it with in=${name}<-STAGE.OUTPUT, or put a tensor named ${name} in the inputs file`,
          });
        }
      }
      const r = await manager.forward(s.name, inputs, entry);
      for (const [n, t] of r.outputs) results.set(`${s.name}.${n}`, t);
      lines.push(`${s.name} (${model.definition.family}, ${entry}, "${model.plan.allocation.text}" ${model.plan.mode}): ${ms(r.stats.ms)}; outputs ${[...r.outputs.keys()].join(', ')}`);
    }
    await manager.unloadAll();
    const kept = manager.list().map((m) => m.name);
    lines.push(`loaded after unloadAll: ${kept.join(', ') || 'none'}`);
    await writeSafetensorsFile(o.out, [...results].map(([name, t]) => hostTensorToWrite(name, t)));
    lines.push(`wrote ${results.size} tensors to ${o.out}`);
    return lines.join('\n');
  } finally {
    await manager.close();
    await devices.close();
  }
}
