import { MultiGpuError } from '../../errors.ts';
import { inputIdsShape } from '../inputs.ts';
import { fuseRows } from '../fuse.ts';
import type { WeightSet } from '../../formats/weights.ts';
import { llama3InvFreq, ropeTableValues } from '../../kernels/ops/rope.ts';
import type { ActivationKind, RopeSpec, Tensor } from '../../runtime/backend.ts';
import type { BlockMap } from '../blocks.ts';
import type { CanonicalTensor, HostTensor, ModelDefinition, Step, StepContext } from '../program.ts';
import { ggufArchitecture, ggufCanonical, UnsupportedGgufError } from './gguf-names.ts';

/**
 * LlamaForCausalLM (transformers' modeling_llama), with what its kin add: Qwen2's q/k/v
 * biases, Llama's optional attention/MLP biases, grouped-query attention, an explicit
 * head_dim, RoPE scaling (linear; Llama 3's "llama3"), tied embeddings. Reads transformers
 * checkpoints and llama.cpp GGUF files (config from the GGUF metadata, names and q/k rows
 * mapped back by gguf-names.ts).
 *
 *   h₀ = embed_tokens(ids)
 *   hᵢ₊₁ = r + mlp(rms(r)),  r = hᵢ + o_proj(attn(rope(q), rope(k), v)),  q,k,v = proj(rms(hᵢ))
 *   logits = lm_head(norm(h_N))
 * Outputs as transformers returns them: hidden_states.i (i < N) is layer i's input,
 * hidden_states.N the final norm's output.
 */

/** Rotary frequency scaling, from rope_parameters (transformers 5) or rope_scaling (4.x), or GGUF metadata. */
export type LlamaRopeScaling =
  | { readonly type: 'default' }
  | { readonly type: 'linear'; readonly factor: number }
  | { readonly type: 'llama3'; readonly factor: number; readonly lowFreqFactor: number; readonly highFreqFactor: number; readonly originalMaxPositions: number };

export interface LlamaConfig {
  readonly hidden: number;
  readonly layers: number;
  readonly heads: number;
  readonly kvHeads: number;
  readonly headDim: number;
  /** Rotated dims per head (head_dim unless partial_rotary_factor or GGUF rope.dimension_count say less). */
  readonly rotaryDim: number;
  readonly intermediate: number;
  readonly vocab: number;
  readonly eps: number;
  readonly act: ActivationKind;
  readonly maxPositions: number;
  readonly theta: number;
  readonly ropeScaling: LlamaRopeScaling;
  /** lm_head reads the token embedding (no lm_head / output tensor stored). */
  readonly tied: boolean;
  /** The GGUF architecture for GGUF weights; null for transformers checkpoints. */
  readonly ggufArch: string | null;
  /** A GGUF with llama.cpp's rope_freqs (per-pair frequency divisors, Llama 3.1 conversions). */
  readonly ropeFreqs: boolean;
  /** Per loaded model: the RoPE table (kept while large enough, so backends upload it once) and rope_freqs' values. */
  readonly state: { rope?: RopeSpec; freqFactors?: Float32Array };
}

export class LlamaConfigError extends MultiGpuError {
  constructor(file: string, message: string, hint?: string) {
    super('E_MODEL_CONFIG', `${file}: ${message}`, { hint: hint ?? 'check config.json (or the GGUF metadata) against the checkpoint' });
  }
}

const ACTIVATIONS: Readonly<Record<string, ActivationKind>> = {
  silu: 'silu', swish: 'silu', gelu: 'gelu', gelu_new: 'gelu_tanh', gelu_pytorch_tanh: 'gelu_tanh', gelu_fast: 'gelu_tanh', quick_gelu: 'quick_gelu',
};

export function activationKind(name: string, file: string): ActivationKind {
  const kind = ACTIVATIONS[name];
  if (!kind) throw new LlamaConfigError(file, `activation "${name}" is not supported`, `supported: ${Object.keys(ACTIVATIONS).join(', ')}`);
  return kind;
}

const num = (v: unknown): number | undefined => (typeof v === 'number' ? v : typeof v === 'bigint' ? Number(v) : undefined);

/**
 * transformers' rope settings: `rope_parameters` (5.x: rope_theta, rope_type, factor, …) or
 * the older `rope_theta` + `rope_scaling` ({rope_type | type, …}).
 */
export function llamaRopeParameters(config: Readonly<Record<string, unknown>>, file = 'config.json'): { theta: number; scaling: LlamaRopeScaling; partialRotaryFactor: number } {
  const params = (config['rope_parameters'] ?? null) as Record<string, unknown> | null;
  const legacy = (config['rope_scaling'] ?? null) as Record<string, unknown> | null;
  const p: Record<string, unknown> = { ...(legacy ?? {}), ...(params ?? {}) };
  const theta = num(p['rope_theta']) ?? num(config['rope_theta']) ?? 10000;
  const partialRotaryFactor = num(p['partial_rotary_factor']) ?? num(config['partial_rotary_factor']) ?? 1;
  const type = String(p['rope_type'] ?? p['type'] ?? 'default');
  const factor = num(p['factor']);
  switch (type) {
    case 'default':
      return { theta, scaling: { type: 'default' }, partialRotaryFactor };
    case 'linear':
      if (factor === undefined) throw new LlamaConfigError(file, 'rope_type "linear" without a factor');
      return { theta, scaling: { type: 'linear', factor }, partialRotaryFactor };
    case 'llama3': {
      const lowFreqFactor = num(p['low_freq_factor']);
      const highFreqFactor = num(p['high_freq_factor']);
      const originalMaxPositions = num(p['original_max_position_embeddings']);
      if (factor === undefined || lowFreqFactor === undefined || highFreqFactor === undefined || originalMaxPositions === undefined) {
        throw new LlamaConfigError(file, 'rope_type "llama3" needs factor, low_freq_factor, high_freq_factor and original_max_position_embeddings');
      }
      return { theta, scaling: { type: 'llama3', factor, lowFreqFactor, highFreqFactor, originalMaxPositions }, partialRotaryFactor };
    }
    default:
      throw new LlamaConfigError(file, `rope_type "${type}" is not supported`, 'supported rope types: default, linear, llama3');
  }
}

/**
 * Inverse frequencies of the rotary pairs, the way transformers computes them: float32
 * theta^(−2i/dim), then the scaling (and llama.cpp's rope_freqs divisors, for GGUF files
 * that carry them). undefined: the plain default (ropeTableValues computes it itself).
 */
export function llamaInvFreq(rotaryDim: number, theta: number, scaling: LlamaRopeScaling, freqFactors?: ArrayLike<number>): Float64Array | undefined {
  if (scaling.type === 'default' && !freqFactors) return undefined;
  const f = Math.fround;
  let inv: Float64Array = Float64Array.from({ length: rotaryDim / 2 }, (_, i) => f(1 / f(Math.pow(theta, f(f(2 * i) / rotaryDim)))));
  if (scaling.type === 'linear') inv = inv.map((x) => x / scaling.factor);
  else if (scaling.type === 'llama3') inv = llama3InvFreq(inv, scaling);
  if (freqFactors) {
    if (freqFactors.length !== inv.length) throw new RangeError(`rope_freqs has ${freqFactors.length} values for ${inv.length} rotary pairs`);
    inv = inv.map((x, i) => x / freqFactors[i]!);
  }
  return inv;
}

/** The RoPE table this config rotates with, at least `rows` positions (kept and reused while large enough). */
export function llamaRope(config: LlamaConfig, rows: number): RopeSpec {
  const have = config.state.rope;
  if (have && have.rows >= rows) return have;
  let size = Math.max(have ? have.rows * 2 : Math.min(config.maxPositions, 4096), 16);
  while (size < rows) size *= 2;
  const invFreq = llamaInvFreq(config.rotaryDim, config.theta, config.ropeScaling, config.state.freqFactors);
  const table = ropeTableValues({ rotaryDim: config.rotaryDim, positions: size, theta: config.theta, invFreq, angles: 'f32' });
  const spec: RopeSpec = { mode: 'half', rotaryDim: config.rotaryDim, rows: size, table };
  config.state.rope = spec;
  return spec;
}

function configFromTransformers(weights: WeightSet): LlamaConfig {
  const cfg = weights.config;
  if (!cfg) throw new LlamaConfigError(weights.name, 'no config.json beside the weights', 'put the model\'s config.json in the folder');
  const need = (key: string): number => {
    const v = num(cfg[key]);
    if (v === undefined) throw new LlamaConfigError(weights.name, `config.json has no ${key}`);
    return v;
  };
  const hidden = need('hidden_size');
  const heads = need('num_attention_heads');
  const headDim = num(cfg['head_dim']) ?? hidden / heads;
  const rope = llamaRopeParameters(cfg, weights.name);
  const embed = weights.tensors.get('model.embed_tokens.weight');
  return {
    hidden,
    layers: need('num_hidden_layers'),
    heads,
    kvHeads: num(cfg['num_key_value_heads']) ?? heads,
    headDim,
    rotaryDim: Math.floor(headDim * rope.partialRotaryFactor),
    intermediate: need('intermediate_size'),
    vocab: embed?.shape[0] ?? need('vocab_size'),
    eps: num(cfg['rms_norm_eps']) ?? 1e-6,
    act: activationKind(String(cfg['hidden_act'] ?? 'silu'), weights.name),
    maxPositions: num(cfg['max_position_embeddings']) ?? 2048,
    theta: rope.theta,
    ropeScaling: rope.scaling,
    tied: !weights.tensors.has('lm_head.weight'),
    ggufArch: null,
    ropeFreqs: false,
    state: {},
  };
}

function configFromGguf(weights: WeightSet): LlamaConfig {
  const arch = ggufArchitecture(weights);
  const meta = (key: string): unknown => weights.metadata.get(`${arch}.${key}`);
  const need = (key: string): number => {
    const v = num(meta(key));
    if (v === undefined) throw new UnsupportedGgufError(weights.name, `no ${arch}.${key} in the GGUF metadata`, 'the file is incomplete or not a llama.cpp model');
    return v;
  };
  const hidden = need('embedding_length');
  const heads = need('attention.head_count');
  const headDim = num(meta('attention.key_length')) ?? hidden / heads;
  const embed = weights.tensors.get('token_embd.weight');
  if (!embed) throw new UnsupportedGgufError(weights.name, 'no token_embd.weight');
  const scalingType = String(meta('rope.scaling.type') ?? 'none');
  let ropeScaling: LlamaRopeScaling;
  if (scalingType === 'none') ropeScaling = { type: 'default' };
  else if (scalingType === 'linear') ropeScaling = { type: 'linear', factor: num(meta('rope.scaling.factor')) ?? 1 };
  else throw new UnsupportedGgufError(weights.name, `RoPE scaling "${scalingType}" is not supported`, 'supported: none, linear, and Llama 3 rope_freqs');
  // GGUF keeps f32 metadata: 1e-5 arrives as 9.99999974e-6; the shortest decimal that rounds to the same f32 is what the config said.
  const eps = shortestF32(num(meta('attention.layer_norm_rms_epsilon')) ?? 1e-5);
  return {
    hidden,
    layers: need('block_count'),
    heads,
    kvHeads: num(meta('attention.head_count_kv')) ?? heads,
    headDim,
    rotaryDim: num(meta('rope.dimension_count')) ?? headDim,
    intermediate: need('feed_forward_length'),
    vocab: embed.shape[0]!,
    eps,
    act: 'silu',
    maxPositions: num(meta('context_length')) ?? 2048,
    theta: num(meta('rope.freq_base')) ?? 10000,
    ropeScaling,
    tied: !weights.tensors.has('output.weight'),
    ggufArch: arch,
    ropeFreqs: weights.tensors.has('rope_freqs.weight'),
    state: {},
  };
}

/** The shortest decimal that reads back as the same float32 (GGUF's f32 1e-5 → 1e-5). */
function shortestF32(x: number): number {
  const f = Math.fround(x);
  for (let p = 1; p <= 9; p++) {
    const d = Number(f.toPrecision(p));
    if (Math.fround(d) === f) return d;
  }
  return f;
}

const ln = (i: number) => `model.layers.${i}.`;
/** Canonical names of the stacked projections (see canonical()); not in any checkpoint. */
const QKV = 'self_attn.qkv_proj';
const GATE_UP = 'mlp.gate_up_proj';
const LAST_LAYER = 'llama.last_layer_output';

async function linear(c: StepContext, x: Tensor, name: string, residual?: Tensor): Promise<Tensor> {
  const bias = `${name}.bias`;
  return c.b.linear(x, c.w(`${name}.weight`), c.has(bias) ? c.w(bias) : null, residual);
}

function layerStep(config: LlamaConfig, i: number, batch: number, seq: number): Step {
  const block = `layers.${i}`;
  const input = `hidden_states.${i}`;
  const output = i === config.layers - 1 ? LAST_LAYER : `hidden_states.${i + 1}`;
  const p = ln(i);
  return {
    block,
    async run(c) {
      const b = c.b;
      const { heads, kvHeads, headDim } = config;
      const x = await c.get(input);
      const h = await b.rmsNorm(x, c.w(`${p}input_layernorm.weight`), config.eps);
      const [q0, k0, v] = (c.has(`${p}${QKV}.weight`)
        ? await b.linearParts(h, c.w(`${p}${QKV}.weight`), c.has(`${p}${QKV}.bias`) ? c.w(`${p}${QKV}.bias`) : null, [heads * headDim, kvHeads * headDim, kvHeads * headDim])
        : [await linear(c, h, `${p}self_attn.q_proj`), await linear(c, h, `${p}self_attn.k_proj`), await linear(c, h, `${p}self_attn.v_proj`)]) as [Tensor, Tensor, Tensor];
      const rope = llamaRope(config, c.position + seq);
      const q = await b.rope(q0, rope, headDim, c.position);
      const k = await b.rope(k0, rope, headDim, c.position);
      const cache = await c.kv(block, batch, kvHeads, headDim);
      const a = await b.attention(q, k, v, { heads, kvHeads, headDim, causal: true, cache });
      const r = await linear(c, a, `${p}self_attn.o_proj`, x);
      const h2 = await b.rmsNorm(r, c.w(`${p}post_attention_layernorm.weight`), config.eps);
      const [gate, up] = (c.has(`${p}${GATE_UP}.weight`)
        ? await b.linearParts(h2, c.w(`${p}${GATE_UP}.weight`), null, [config.intermediate, config.intermediate])
        : [await linear(c, h2, `${p}mlp.gate_proj`), await linear(c, h2, `${p}mlp.up_proj`)]) as [Tensor, Tensor];
      const m = await b.gated(config.act, gate, up);
      c.set(output, await linear(c, m, `${p}mlp.down_proj`, r));
    },
  };
}

export const llamaModel: ModelDefinition<LlamaConfig> = {
  family: 'llama',

  configure(weights: WeightSet, blockMap: BlockMap): LlamaConfig {
    const config = blockMap.scheme === 'gguf' ? configFromGguf(weights) : configFromTransformers(weights);
    const layerBlocks = blockMap.blocks.filter((b) => b.kind === 'layer').length;
    if (layerBlocks !== config.layers) {
      throw new LlamaConfigError(weights.name, `the config says ${config.layers} layers, the checkpoint holds ${layerBlocks}`);
    }
    if (config.heads % config.kvHeads !== 0) throw new LlamaConfigError(weights.name, `${config.heads} heads do not group into ${config.kvHeads} kv heads`);
    return config;
  },

  canonical(scheme, weights, config): ReadonlyMap<string, CanonicalTensor> {
    const index = new Map(scheme === 'gguf' ? ggufCanonical(weights, { arch: config.ggufArch ?? 'llama', heads: config.heads, kvHeads: config.kvHeads }) : []);
    const present = (name: string) => index.has(name) || weights.tensors.has(name);
    for (let i = 0; i < config.layers; i++) {
      const p = ln(i);
      const qkv = ['q', 'k', 'v'].map((x) => `${p}self_attn.${x}_proj`);
      const biases = qkv.map((n) => `${n}.bias`);
      const withBias = biases.filter(present).length;
      if (withBias === 0 || withBias === 3) {
        fuseRows(index, weights, [
          { name: `${p}${QKV}.weight`, parts: qkv.map((n) => `${n}.weight`) },
          ...(withBias === 3 ? [{ name: `${p}${QKV}.bias`, parts: biases }] : []),
        ]);
      }
      fuseRows(index, weights, [{ name: `${p}${GATE_UP}.weight`, parts: [`${p}mlp.gate_proj.weight`, `${p}mlp.up_proj.weight`] }]);
    }
    return index;
  },

  entries: {
    forward: {
      inputs: ['input_ids'],
      outputs: (config) => ['logits', ...Array.from({ length: config.layers + 1 }, (_, i) => `hidden_states.${i}`)],
      steps(config, inputs): Step[] {
        const [batch, seq] = inputIdsShape(inputs);
        const N = config.layers;
        const steps: Step[] = [{
          block: 'embed_tokens',
          async run(c) {
            c.set('hidden_states.0', await c.b.embedding(await c.get('input_ids'), c.w('model.embed_tokens.weight')));
          },
        }];
        if (config.ropeFreqs) {
          steps.push({
            block: 'rope_freqs',
            async run(c) {
              if (config.state.freqFactors) return;
              const w = c.w('rope_freqs.weight');
              const n = w.shape.reduce((a, d) => a * d, 1);
              // A weight reaches the host through an op: 0 + w.
              const values = await c.b.download(await c.b.binary('add', await c.b.upload(new Float32Array(n), [n]), w));
              config.state.freqFactors = Float32Array.from(values);
              config.state.rope = undefined;
            },
          });
        }
        for (let i = 0; i < N; i++) steps.push(layerStep(config, i, batch, seq));
        steps.push({
          block: 'norm',
          async run(c) {
            const x = await c.get(N === 0 ? 'hidden_states.0' : LAST_LAYER);
            c.set(`hidden_states.${N}`, await c.b.rmsNorm(x, c.w('model.norm.weight'), config.eps));
          },
        });
        steps.push({
          block: 'lm_head',
          async run(c) {
            const head = c.w(config.tied ? 'model.embed_tokens.weight' : 'lm_head.weight');
            c.set('logits', await c.b.linear(await c.get(`hidden_states.${N}`), head));
          },
        });
        return steps;
      },
    },
  },

  causalLM: {
    logits: 'logits',
    maxPositions: (config) => config.maxPositions,
    vocab: (config) => config.vocab,
  },
};
