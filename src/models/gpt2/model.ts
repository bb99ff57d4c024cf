import { MultiGpuError } from '../../errors.ts';
import { inputIdsShape } from '../inputs.ts';
import type { WeightSet } from '../../formats/weights.ts';
import type { ActivationKind, Tensor } from '../../runtime/backend.ts';
import type { BlockMap } from '../blocks.ts';
import type { CanonicalTensor, HostTensor, ModelDefinition, Step, StepContext } from '../program.ts';

/**
 * GPT2LMHeadModel (transformers' modeling_gpt2):
 *
 *   h₀ = wte(ids) + wpe(positions)                      positions = past length + 0..L−1
 *   hᵢ₊₁ = r + mlp(ln_2(r)),  r = hᵢ + attn(ln_1(hᵢ))    pre-norm LayerNorms (layer_norm_epsilon)
 *   attn: q, k, v = split(c_attn(x)); causal softmax(q·kᵀ / √D [/ (i+1)]) v; c_proj
 *   mlp:  c_proj(act(c_fc(x)))                           act = activation_function ("gelu_new" = tanh GELU)
 *   logits = ln_f(h_N) · wteᵀ                            the head is tied to wte unless lm_head is stored
 *
 * Conv1D stores its weight [in, out]; canonical() asks for those four weights transposed at
 * load ([out, in], what linear reads), so the math below sees ordinary linear layers.
 * hidden_states.i (i < N) is block i's input, hidden_states.N ln_f's output, as transformers.
 */

export interface Gpt2Config {
  readonly hidden: number;
  readonly layers: number;
  readonly heads: number;
  readonly headDim: number;
  readonly inner: number;
  readonly vocab: number;
  readonly positions: number;
  readonly eps: number;
  readonly act: ActivationKind;
  readonly scaleAttnWeights: boolean;
  readonly scaleAttnByInverseLayerIdx: boolean;
  /** The stored names carry the "transformer." prefix (GPT2LMHeadModel) or not (GPT2Model, the original hub files). */
  readonly prefix: '' | 'transformer.';
  readonly tied: boolean;
}

export class Gpt2ConfigError extends MultiGpuError {
  constructor(file: string, message: string, hint?: string) {
    super('E_MODEL_CONFIG', `${file}: ${message}`, { hint: hint ?? 'check config.json against the checkpoint' });
  }
}

const ACTIVATIONS: Readonly<Record<string, ActivationKind>> = {
  gelu_new: 'gelu_tanh', gelu_pytorch_tanh: 'gelu_tanh', gelu_fast: 'gelu_tanh', gelu: 'gelu', quick_gelu: 'quick_gelu', silu: 'silu', swish: 'silu',
};

/** The Conv1D weights ([in, out] as stored). */
const CONV1D = /\.(attn\.c_attn|attn\.c_proj|mlp\.c_fc|mlp\.c_proj)\.weight$/;

const num = (v: unknown): number | undefined => (typeof v === 'number' ? v : undefined);

const T = 'transformer.';
const LAST_LAYER = 'gpt2.last_layer_output';
const TOKEN_EMBEDS = 'gpt2.inputs_embeds';

async function conv1d(c: StepContext, x: Tensor, name: string): Promise<Tensor> {
  return c.b.linear(x, c.w(`${name}.weight`), c.w(`${name}.bias`));
}

function blockStep(config: Gpt2Config, i: number, batch: number): Step {
  const block = `h.${i}`;
  const input = `hidden_states.${i}`;
  const output = i === config.layers - 1 ? LAST_LAYER : `hidden_states.${i + 1}`;
  const p = `${T}h.${i}.`;
  let scale = config.scaleAttnWeights ? 1 / Math.sqrt(config.headDim) : 1;
  if (config.scaleAttnByInverseLayerIdx) scale /= i + 1;
  return {
    block,
    async run(c) {
      const b = c.b;
      const { hidden: E, heads, headDim } = config;
      const x = await c.get(input);
      const h = await b.layerNorm(x, c.w(`${p}ln_1.weight`), c.w(`${p}ln_1.bias`), config.eps);
      const qkv = await conv1d(c, h, `${p}attn.c_attn`);
      const q = await b.slice(qkv, 2, 0, E);
      const k = await b.slice(qkv, 2, E, E);
      const v = await b.slice(qkv, 2, 2 * E, E);
      const cache = await c.kv(block, batch, heads, headDim);
      const a = await b.attention(q, k, v, { heads, kvHeads: heads, headDim, scale, causal: true, cache });
      const r = await b.binary('add', x, await conv1d(c, a, `${p}attn.c_proj`));
      const h2 = await b.layerNorm(r, c.w(`${p}ln_2.weight`), c.w(`${p}ln_2.bias`), config.eps);
      const f = await b.activation(config.act, await conv1d(c, h2, `${p}mlp.c_fc`));
      c.set(output, await b.binary('add', r, await conv1d(c, f, `${p}mlp.c_proj`)));
    },
  };
}

export const gpt2Model: ModelDefinition<Gpt2Config> = {
  family: 'gpt2',

  configure(weights: WeightSet, blockMap: BlockMap): Gpt2Config {
    const cfg = weights.config;
    if (!cfg) throw new Gpt2ConfigError(weights.name, 'no config.json beside the weights', 'put the model\'s config.json in the folder');
    const need = (...keys: string[]): number => {
      for (const key of keys) {
        const v = num(cfg[key]);
        if (v !== undefined) return v;
      }
      throw new Gpt2ConfigError(weights.name, `config.json has no ${keys.join(' / ')}`);
    };
    const prefix = weights.tensors.has(`${T}wte.weight`) ? T : '';
    const wte = weights.tensors.get(`${prefix}wte.weight`);
    const hidden = need('n_embd', 'hidden_size');
    const heads = need('n_head', 'num_attention_heads');
    const layers = need('n_layer', 'num_hidden_layers');
    const actName = String(cfg['activation_function'] ?? 'gelu_new');
    const act = ACTIVATIONS[actName];
    if (!act) throw new Gpt2ConfigError(weights.name, `activation_function "${actName}" is not supported`, `supported: ${Object.keys(ACTIVATIONS).join(', ')}`);
    if (hidden % heads !== 0) throw new Gpt2ConfigError(weights.name, `n_embd ${hidden} is not a multiple of n_head ${heads}`);
    const layerBlocks = blockMap.blocks.filter((b) => b.kind === 'layer').length;
    if (layerBlocks !== layers) throw new Gpt2ConfigError(weights.name, `the config says ${layers} layers, the checkpoint holds ${layerBlocks}`);
    if (cfg['add_cross_attention'] === true) throw new Gpt2ConfigError(weights.name, 'cross-attention GPT-2 (add_cross_attention) is not supported');
    return {
      hidden,
      layers,
      heads,
      headDim: hidden / heads,
      inner: num(cfg['n_inner']) ?? 4 * hidden,
      vocab: wte?.shape[0] ?? need('vocab_size'),
      positions: need('n_positions', 'max_position_embeddings'),
      eps: num(cfg['layer_norm_epsilon']) ?? 1e-5,
      act,
      scaleAttnWeights: cfg['scale_attn_weights'] !== false,
      scaleAttnByInverseLayerIdx: cfg['scale_attn_by_inverse_layer_idx'] === true,
      prefix,
      tied: !weights.tensors.has('lm_head.weight'),
    };
  },

  /** Canonical names are GPT2LMHeadModel's ("transformer.…"); Conv1D weights are transposed at load. */
  canonical(_scheme, weights): ReadonlyMap<string, CanonicalTensor> {
    const map = new Map<string, CanonicalTensor>();
    for (const name of weights.tensors.keys()) {
      const canonical = name === 'lm_head.weight' || name.startsWith(T) ? name : `${T}${name}`;
      if (CONV1D.test(name)) map.set(canonical, { source: name, transpose: true });
      else if (canonical !== name) map.set(canonical, { source: name });
    }
    return map;
  },

  entries: {
    forward: {
      inputs: ['input_ids'],
      outputs: (config) => ['logits', ...Array.from({ length: config.layers + 1 }, (_, i) => `hidden_states.${i}`)],
      steps(config, inputs): Step[] {
        const [batch, seq] = inputIdsShape(inputs);
        const N = config.layers;
        const steps: Step[] = [
          {
            block: 'wte',
            async run(c) {
              c.set(TOKEN_EMBEDS, await c.b.embedding(await c.get('input_ids'), c.w(`${T}wte.weight`)));
            },
          },
          {
            block: 'wpe',
            async run(c) {
              if (c.position + seq > config.positions) {
                throw new RangeError(`gpt2: positions ${c.position}..${c.position + seq - 1} pass n_positions ${config.positions}`);
              }
              const ids = await c.b.upload(Int32Array.from({ length: seq }, (_, l) => c.position + l), [seq]);
              const pe = await c.b.embedding(ids, c.w(`${T}wpe.weight`));
              c.set('hidden_states.0', await c.b.binary('add', await c.get(TOKEN_EMBEDS), pe));
            },
          },
        ];
        for (let i = 0; i < N; i++) steps.push(blockStep(config, i, batch));
        steps.push({
          block: 'ln_f',
          async run(c) {
            const x = await c.get(N === 0 ? 'hidden_states.0' : LAST_LAYER);
            c.set(`hidden_states.${N}`, await c.b.layerNorm(x, c.w(`${T}ln_f.weight`), c.w(`${T}ln_f.bias`), config.eps));
          },
        });
        steps.push({
          block: 'lm_head',
          async run(c) {
            const head = c.w(config.tied ? `${T}wte.weight` : 'lm_head.weight');
            c.set('logits', await c.b.linear(await c.get(`hidden_states.${N}`), head));
          },
        });
        return steps;
      },
    },
  },

  causalLM: {
    logits: 'logits',
    maxPositions: (config) => config.positions,
    vocab: (config) => config.vocab,
  },
};
