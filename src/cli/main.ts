#!/usr/bin/env node
import { parseArgs } from 'node:util';
import { MultiGpuError, UsageError } from '../errors.ts';
import { devicesCommand } from './devices.ts';
import { planCommand } from './plan.ts';
import { benchCommand, BENCHMARKS } from './bench.ts';
import { defaultModel, forwardCommand, generateCommand, parseStage, promptCommand, runCommand, type ModelRunOptions } from './run.ts';
import { progressWanted } from './progress.ts';

const USAGE = `usage: multigpu <command> [options]

commands:
  devices   list the GPUs (numbered gpu:0.., with PCI bus ids) and the cpu device
            --json              machine-readable output
            --check             run a compute self-test on every GPU
            --memory LIST       capacities, e.g. gpu:0=24gb,cpu=64gb
            --adapters LIST     Dawn adapters to open, by name or pci:<bus id>, ';'-separated
            --api dawn|navigator
  plan      where each block of a model goes for an allocation string
            --model PATH        a model folder, .safetensors, .safetensors.index.json or .gguf
            --alloc STRING      e.g. "gpu:0,4gb;cpu,*" (empty: simple mode)
            --compute DEVICE    where stream mode runs (default gpu:0, or cpu)
            --memory LIST       capacities; also declares devices this machine lacks
            --reserve SIZE      per-GPU reserve (default min(1 GiB, 10%))
            --mode stream|pipeline|auto
            --virtual-vram SIZE --donors LIST   simple mode
            --embeddings-on-cpu keep embedding tables on cpu
            --family ID  --variant NAME  --offline  --json
  generate  greedy tokens from a causal LM, split over the devices; prints the placement and timings
            --model PATH        default: the bundled tiny Llama (models/llama-tiny)
            --prompt IDS        token ids, e.g. 1,2,3 (default: the bundled model's reference prompt)
            --tokens N          new tokens (default 8)
            --alloc STRING      default "gpu:0,50%;cpu,*"
            --weights FILE --compute DEVICE --mode stream|pipeline|auto --memory LIST --reserve SIZE --family ID
  forward   run a model on inputs named as the reference implementation names them
            --model PATH --inputs FILE.safetensors --out FILE.safetensors
            --weights FILE      a weights file in the model folder (model.bf16.safetensors, model.gguf)
            --alloc STRING      default: everything on the compute device
            --compute DEVICE --mode stream|pipeline|auto --memory LIST --reserve SIZE --family ID
  run       a prompt through one model: a causal LM (llama, gpt2) continues it, printing the text as it
            comes and tokens/s; a text encoder (clip-text, t5-encoder) encodes it and prints its outputs
            --model PATH        a model folder (default: the bundled tiny Llama)
            --prompt TEXT|IDS   text, encoded with the folder's tokenizer.json; or token ids, e.g. 1,2,3
            --text              take the prompt as text even when it reads as ids
            --tokens N          new tokens (default 8); generation stops early at the model's eos token
            --out FILE          encoders: outputs and input_ids as safetensors; LMs: input_ids, generated_ids
            --alloc STRING      default: everything on the compute device
            --weights FILE --compute DEVICE --mode stream|pipeline|auto --memory LIST --reserve SIZE --family ID
            --progress          draw the loading and generation bars on stderr even when it is not a terminal
            --quiet             no bars (default: bars only when stderr is a terminal)
  run       several models in one invocation, chained on named tensors, in one model manager
            --stage "NAME: model=PATH [alloc=STRING] [mode=..] [compute=..] [entry=..] [keep=true|false] [in=INPUT<-STAGE.OUTPUT,..]"
                                (repeat, in order; inputs not mapped come from --inputs under their own name)
            --inputs FILE.safetensors --out FILE.safetensors --memory LIST
            --log               print the manager's unload lines (also MULTIGPU_LOG=1)
  bench     run a benchmark (checked against its baseline first) and print ours / baseline / ratio
            NAME                ${Object.keys(BENCHMARKS).join(' | ')}
            --out FILE          also write the results JSON there
  help      this text
`;

const API_VALUES = new Set(['auto', 'dawn', 'navigator']);

async function devices(args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    options: {
      json: { type: 'boolean', default: false },
      check: { type: 'boolean', default: false },
      memory: { type: 'string' },
      adapters: { type: 'string' },
      api: { type: 'string', default: 'auto' },
    },
    strict: true,
    allowPositionals: false,
  });
  if (!API_VALUES.has(values.api!)) throw new UsageError(`--api must be one of auto, dawn, navigator (got "${values.api}")`);
  const { output, ok } = await devicesCommand({
    json: values.json,
    check: values.check,
    memory: values.memory,
    adapters: values.adapters?.split(';').map((s) => s.trim()).filter(Boolean),
    api: values.api as 'auto' | 'dawn' | 'navigator',
  });
  process.stdout.write(`${output}\n`);
  return ok ? 0 : 1;
}

async function planSubcommand(args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    options: {
      model: { type: 'string' },
      alloc: { type: 'string' },
      compute: { type: 'string' },
      memory: { type: 'string' },
      reserve: { type: 'string' },
      mode: { type: 'string' },
      'virtual-vram': { type: 'string' },
      donors: { type: 'string' },
      family: { type: 'string' },
      variant: { type: 'string' },
      'embeddings-on-cpu': { type: 'boolean', default: false },
      offline: { type: 'boolean', default: false },
      json: { type: 'boolean', default: false },
    },
    strict: true,
    allowPositionals: false,
  });
  if (values.model === undefined) throw new UsageError('plan needs --model <folder|file>');
  if (values.alloc === undefined && values['virtual-vram'] === undefined) {
    throw new UsageError('plan needs --alloc "<string>" (or --virtual-vram with an empty --alloc for simple mode)');
  }
  const output = await planCommand({
    model: values.model, alloc: values.alloc ?? '', compute: values.compute, memory: values.memory, reserve: values.reserve,
    mode: values.mode, virtualVram: values['virtual-vram'], donors: values.donors, family: values.family, variant: values.variant,
    embeddingsOnCpu: values['embeddings-on-cpu'], offline: values.offline, json: values.json,
  });
  process.stdout.write(`${output}\n`);
  return 0;
}

const MODEL_OPTIONS = {
  model: { type: 'string' },
  weights: { type: 'string' },
  alloc: { type: 'string' },
  compute: { type: 'string' },
  mode: { type: 'string' },
  memory: { type: 'string' },
  reserve: { type: 'string' },
  family: { type: 'string' },
} as const;

function modelOptions(values: Record<string, unknown>, model: string): ModelRunOptions {
  return {
    model, weights: values.weights as string | undefined, alloc: values.alloc as string | undefined, compute: values.compute as string | undefined,
    mode: values.mode as string | undefined, memory: values.memory as string | undefined, reserve: values.reserve as string | undefined,
    family: values.family as string | undefined,
  };
}

async function forwardSubcommand(args: string[]): Promise<number> {
  const { values } = parseArgs({ args, options: { ...MODEL_OPTIONS, inputs: { type: 'string' }, out: { type: 'string' } }, strict: true, allowPositionals: false });
  if (values.model === undefined || values.inputs === undefined || values.out === undefined) {
    throw new UsageError('forward needs --model <folder|file> --inputs <file.safetensors> --out <file.safetensors>');
  }
  process.stdout.write(`${await forwardCommand({ ...modelOptions(values, values.model), inputs: values.inputs, out: values.out })}\n`);
  return 0;
}

function parseIds(text: string): number[] {
  const ids = text.split(/[\s,]+/).filter(Boolean).map(Number);
  if (ids.length === 0 || ids.some((v) => !Number.isInteger(v) || v < 0)) {
    throw new UsageError(`--prompt "${text}" is not a list of token ids`, { hint: 'give non-negative integers separated by commas, e.g. --prompt 1,15043,3186' });
  }
  return ids;
}

async function generateSubcommand(args: string[]): Promise<number> {
  const { values } = parseArgs({ args, options: { ...MODEL_OPTIONS, prompt: { type: 'string' }, tokens: { type: 'string', default: '8' } }, strict: true, allowPositionals: false });
  const tokens = Number(values.tokens);
  if (!Number.isInteger(tokens) || tokens < 1) throw new UsageError(`--tokens "${values.tokens}" is not a positive integer`);
  const fallback = values.model === undefined ? await defaultModel() : null;
  const model = values.model ?? fallback!.path;
  const prompt = values.prompt !== undefined ? parseIds(values.prompt) : fallback?.prompt;
  if (!prompt) throw new UsageError('generate needs --prompt <ids> for a model other than the bundled one');
  const alloc = values.alloc ?? 'gpu:0,50%;cpu,*';
  process.stdout.write(`${await generateCommand({ ...modelOptions(values, model), alloc, prompt, tokens, reference: fallback?.reference })}\n`);
  return 0;
}

async function runSubcommand(args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    options: {
      stage: { type: 'string', multiple: true }, inputs: { type: 'string' }, out: { type: 'string' }, log: { type: 'boolean', default: false },
      ...MODEL_OPTIONS, prompt: { type: 'string' }, text: { type: 'boolean', default: false }, tokens: { type: 'string', default: '8' },
      progress: { type: 'boolean', default: false }, quiet: { type: 'boolean', default: false },
    },
    strict: true, allowPositionals: false,
  });
  if (values.stage?.length) {
    const single = (['model', 'weights', 'alloc', 'compute', 'mode', 'reserve', 'family', 'prompt'] as const).filter((k) => values[k] !== undefined);
    if (single.length > 0) {
      throw new UsageError(`run takes either --stage (several models) or --model/--prompt (one model), not both (got --${single.join(', --')} with --stage)`, {
        hint: 'put each model\'s options inside its --stage "NAME: model=PATH alloc=..."',
      });
    }
    if (values.out === undefined) throw new UsageError('run with --stage needs --out <file.safetensors>');
    const stages = values.stage.map(parseStage);
    process.stdout.write(`${await runCommand({ stages, inputs: values.inputs, out: values.out, memory: values.memory, log: values.log || process.env.MULTIGPU_LOG === '1' })}\n`);
    return 0;
  }
  if (values.prompt === undefined) {
    throw new UsageError('run needs --prompt "<text or token ids>" (with --model <folder>), or at least one --stage "NAME: model=PATH ..." and --out <file.safetensors>');
  }
  if (values.inputs !== undefined) throw new UsageError('--inputs belongs to the --stage form of run', { hint: 'for one model on a file of inputs, use multigpu forward' });
  const tokens = Number(values.tokens);
  if (!Number.isInteger(tokens) || tokens < 1) throw new UsageError(`--tokens "${values.tokens}" is not a positive integer`);
  const model = values.model ?? (await defaultModel()).path;
  const summary = await promptCommand({
    ...modelOptions(values, model), prompt: values.prompt, text: values.text, tokens, out: values.out,
    progress: progressWanted(values), live: process.stdout.isTTY === true, write: (t) => process.stdout.write(t),
  });
  process.stdout.write(`${summary}\n`);
  return 0;
}

async function benchSubcommand(args: string[]): Promise<number> {
  const { values, positionals } = parseArgs({ args, options: { out: { type: 'string' } }, strict: true, allowPositionals: true });
  process.stdout.write(`${await benchCommand(positionals[0], values.out)}\n`);
  return 0;
}

async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  switch (command) {
    case 'devices':
      return devices(rest);
    case 'plan':
      return planSubcommand(rest);
    case 'bench':
      return benchSubcommand(rest);
    case 'forward':
      return forwardSubcommand(rest);
    case 'generate':
      return generateSubcommand(rest);
    case 'run':
      return runSubcommand(rest);
    case undefined:
    case 'help':
    case '--help':
    case '-h':
      process.stdout.write(USAGE);
      return command === undefined ? 2 : 0;
    default:
      throw new UsageError(`unknown command "${command}"`, { hint: 'run `multigpu help` for the list' });
  }
}

/** Codes of errors about what the user typed, as opposed to what this machine can do. */
const BAD_INPUT = new Set(['E_USAGE', 'E_MODEL_INPUT', 'E_BYTE_SIZE', 'E_UNKNOWN_DEVICE', 'E_WEIGHTS_FORMAT', 'E_WEIGHTS_NOT_FOUND',
  'E_UNKNOWN_MODEL', 'E_UNMAPPED_TENSORS', 'E_PLAN_CAPACITY', 'E_TOKENIZER']);

function isBadInput(error: MultiGpuError): boolean {
  return BAD_INPUT.has(error.code) || error.code.startsWith('E_ALLOC_');
}

/** One paragraph, no stack trace (MULTIGPU_DEBUG=1 adds it): 2 for bad input, 1 for the rest. */
function report(error: unknown): number {
  const parseArgsError = String((error as { code?: unknown })?.code ?? '').startsWith('ERR_PARSE_ARGS');
  const known = error instanceof MultiGpuError || parseArgsError;
  const message = known ? (error as Error).message : `unexpected error: ${(error as Error)?.stack ?? String(error)}`;
  process.stderr.write(`multigpu: ${message}\n`);
  if (known && process.env.MULTIGPU_DEBUG) process.stderr.write(`${(error as Error).stack}\n`);
  return parseArgsError || (error instanceof MultiGpuError && isBadInput(error)) ? 2 : 1;
}

main(process.argv.slice(2)).then((code) => {
  process.exitCode = code;
}, (error: unknown) => {
  process.exitCode = report(error);
});
