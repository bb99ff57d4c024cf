import type { ActivationKind, Tensor } from '../../runtime/backend.ts';
import type { WeightSet } from '../../formats/weights.ts';
import type { BlockMap, NameScheme } from '../blocks.ts';
import type { CanonicalTensor, EntryDefinition, ModelDefinition, Step, StepContext } from '../program.ts';

/**
 * transformers' T5EncoderModel: shared token embedding; N blocks of [T5 LayerNorm (RMS, no
 * mean, no bias) → self-attention without 1/√d scaling plus the relative position bias →
 * residual; T5 LayerNorm → (gated) feed-forward → residual]; final T5 LayerNorm. Dropout is
 * inference-off.
 *
 * The relative position bias is computed once, by block 0 (the only block that owns
 * relative_attention_bias), and every block adds the same bias: block 0 publishes it as the
 * activation `t5.position_bias` ([H, Lq + Lk − 1], attention's relativeBias form), which the
 * scheduler moves to whichever device runs a later block.
 *
 * Outputs, as transformers returns them: last_hidden_state (after the final norm) and
 * hidden_states.0..N where 0 is the embedding output, i (1 ≤ i < N) the output of block i − 1,
 * and N the final-norm output (= last_hidden_state; the last block's raw output is not among
 * them).
 */
export interface T5EncoderConfig {
  readonly dModel: number;
  readonly heads: number;
  readonly dKv: number;
  readonly layers: number;
  readonly dFf: number;
  readonly eps: number;
  readonly numBuckets: number;
  readonly maxDistance: number;
  readonly gated: boolean;
  readonly act: ActivationKind;
}

export const t5Names = {
  shared: 'shared.weight',
  block: (i: number, rest: string) => `encoder.block.${i}.layer.${rest}`,
  relativeBias: 'encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight',
  final: 'encoder.final_layer_norm.weight',
} as const;

const num = (v: unknown): number | undefined => (typeof v === 'number' && Number.isFinite(v) ? v : undefined);

/**
 * T5Config's feed_forward_proj → (gated, activation), as transformers reads it: "gated-X" is
 * gated with ACT2FN[X], except "gated-gelu", which means gelu_new (the tanh approximation).
 */
export function t5FeedForward(feedForwardProj: string, denseActFn?: string): { gated: boolean; act: ActivationKind } {
  const parts = feedForwardProj.split('-');
  const gated = parts[0] === 'gated' && parts.length === 2;
  if (parts.length > 2 || (parts.length === 2 && !gated)) throw new RangeError(`t5-encoder: feed_forward_proj "${feedForwardProj}" is not "<act>" or "gated-<act>"`);
  const name = feedForwardProj === 'gated-gelu' ? 'gelu_new' : (denseActFn ?? parts[parts.length - 1]!);
  switch (name) {
    case 'gelu_new': case 'gelu_pytorch_tanh': case 'gelu_fast': return { gated, act: 'gelu_tanh' };
    case 'gelu': return { gated, act: 'gelu' };
    case 'silu': case 'swish': return { gated, act: 'silu' };
    case 'quick_gelu': return { gated, act: 'quick_gelu' };
    default:
      throw new RangeError(`t5-encoder: activation "${name}" (feed_forward_proj "${feedForwardProj}") is not supported; ` +
        'the backends have gelu, gelu_new, silu and quick_gelu (original T5\'s relu needs a relu op)');
  }
}

function configure(weights: WeightSet, blockMap: BlockMap): T5EncoderConfig {
  const c = weights.config ?? {};
  const layers = blockMap.blocks.filter((b) => /^block\.\d+$/.test(b.name)).length;
  const shared = weights.tensors.get(t5Names.shared) ?? weights.tensors.get('encoder.embed_tokens.weight');
  const rel = weights.tensors.get(t5Names.relativeBias);
  const wi0 = weights.tensors.get(t5Names.block(0, '1.DenseReluDense.wi_0.weight')) ?? weights.tensors.get(t5Names.block(0, '1.DenseReluDense.wi.weight'));
  const q = weights.tensors.get(t5Names.block(0, '0.SelfAttention.q.weight'));
  const dModel = num(c.d_model) ?? shared?.shape[1];
  if (!dModel) throw new RangeError(`t5-encoder: ${weights.name} has no d_model (config.json) nor a shared embedding`);
  const heads = num(c.num_heads) ?? rel?.shape[1];
  if (!heads) throw new RangeError(`t5-encoder: ${weights.name} has no num_heads (config.json) nor a relative_attention_bias`);
  const inner = q?.shape[0] ?? dModel;
  // Without config.json (ComfyUI's t5xxl files): T5 v1.1's gated-gelu when wi_0 exists.
  const gatedWeights = weights.tensors.has(t5Names.block(0, '1.DenseReluDense.wi_0.weight'));
  const proj = typeof c.feed_forward_proj === 'string' ? c.feed_forward_proj : gatedWeights ? 'gated-gelu' : 'relu';
  const ff = t5FeedForward(proj, typeof c.dense_act_fn === 'string' && proj !== 'gated-gelu' ? c.dense_act_fn : undefined);
  const configuredLayers = num(c.num_layers);
  if (configuredLayers !== undefined && configuredLayers !== layers) {
    throw new RangeError(`t5-encoder: config.json says ${configuredLayers} layers, ${weights.name} holds ${layers}`);
  }
  return {
    dModel,
    heads,
    dKv: num(c.d_kv) ?? inner / heads,
    layers,
    dFf: num(c.d_ff) ?? wi0?.shape[0] ?? dModel * 4,
    eps: num(c.layer_norm_epsilon) ?? 1e-6,
    numBuckets: num(c.relative_attention_num_buckets) ?? rel?.shape[0] ?? 32,
    maxDistance: num(c.relative_attention_max_distance) ?? 128,
    gated: ff.gated,
    act: ff.act,
  };
}

/** `shared.weight` is canonical; a checkpoint that stores only encoder.embed_tokens.weight gets it from there. */
function canonical(_scheme: NameScheme, weights: WeightSet): ReadonlyMap<string, CanonicalTensor> {
  const map = new Map<string, CanonicalTensor>();
  if (!weights.tensors.has(t5Names.shared) && weights.tensors.has('encoder.embed_tokens.weight')) {
    map.set(t5Names.shared, { source: 'encoder.embed_tokens.weight' });
  }
  return map;
}

const BIAS = 't5.position_bias';
const MASK = 't5.attention_mask';

function blockStep(config: T5EncoderConfig, i: number, L: number): Step {
  const w = (rest: string) => t5Names.block(i, rest);
  const input = `hidden_states.${i}`;
  const output = i + 1 < config.layers ? `hidden_states.${i + 1}` : 't5.last_block';
  return {
    block: `block.${i}`,
    async run(c) {
      const { b } = c;
      const h = await c.get(input);
      let bias: Tensor;
      const own = w('0.SelfAttention.relative_attention_bias.weight');
      if (c.has(own)) {
        bias = await b.t5Bias(c.w(own), config.heads, L, L, { numBuckets: config.numBuckets, maxDistance: config.maxDistance, bidirectional: true });
        // Block 0 computes it; T5Stack hands this same position_bias to every later block.
        if (i === 0) c.set(BIAS, bias);
      } else {
        bias = await c.get(BIAS);
      }
      const mask = c.exists(MASK) ? await c.get(MASK) : undefined;
      const x = await b.rmsNorm(h, c.w(w('0.layer_norm.weight')), config.eps);
      const q = await b.linear(x, c.w(w('0.SelfAttention.q.weight')));
      const k = await b.linear(x, c.w(w('0.SelfAttention.k.weight')));
      const v = await b.linear(x, c.w(w('0.SelfAttention.v.weight')));
      const a = await b.attention(q, k, v, {
        heads: config.heads, headDim: config.dKv, scale: 1, relativeBias: bias, ...(mask ? { mask } : {}),
      });
      const h1 = await b.binary('add', h, await b.linear(a, c.w(w('0.SelfAttention.o.weight'))));
      const y = await b.rmsNorm(h1, c.w(w('1.layer_norm.weight')), config.eps);
      let m: Tensor;
      if (config.gated) {
        const gate = await b.linear(y, c.w(w('1.DenseReluDense.wi_0.weight')));
        const up = await b.linear(y, c.w(w('1.DenseReluDense.wi_1.weight')));
        m = await b.gated(config.act, gate, up);
      } else {
        m = await b.activation(config.act, await b.linear(y, c.w(w('1.DenseReluDense.wi.weight'))));
      }
      c.set(output, await b.binary('add', h1, await b.linear(m, c.w(w('1.DenseReluDense.wo.weight')))));
    },
  };
}

const forward: EntryDefinition<T5EncoderConfig> = {
  inputs: ['input_ids'],
  optionalInputs: ['attention_mask'],
  outputs(config) {
    const names = ['last_hidden_state'];
    for (let i = 0; i <= config.layers; i++) names.push(`hidden_states.${i}`);
    return names;
  },
  steps(config, inputs) {
    const ids = inputs.get('input_ids');
    if (!ids) throw new RangeError('t5-encoder: input_ids is required');
    if (config.layers < 1) throw new RangeError('t5-encoder: the checkpoint has no encoder blocks');
    const L = ids.shape[ids.shape.length - 1]!;
    const steps: Step[] = [{
      block: 'shared',
      async run(c: StepContext) {
        const idsT = await c.get('input_ids');
        const B = idsT.shape.length > 1 ? idsT.shape.slice(0, -1).reduce((a, d) => a * d, 1) : 1;
        c.set('hidden_states.0', await c.b.embedding(c.b.reshape(idsT, [B, L]), c.w(t5Names.shared)));
        if (c.exists('attention_mask')) {
          // [B, L] of 1/0 → additive [B, 1, 1, L]: transformers' (1 − mask) · finfo(f32).min.
          const mask = c.input('attention_mask');
          const data = new Float32Array(mask.data.length);
          for (let j = 0; j < data.length; j++) data[j] = mask.data[j] ? 0 : -3.4028234663852886e38;
          c.set(MASK, await c.b.upload(data, [data.length / L, 1, 1, L]));
        }
      },
    }];
    for (let i = 0; i < config.layers; i++) steps.push(blockStep(config, i, L));
    steps.push({
      block: 'final_layer_norm',
      async run(c) {
        const last = await c.b.rmsNorm(await c.get('t5.last_block'), c.w(t5Names.final), config.eps);
        c.set('last_hidden_state', last);
        // transformers appends the final-norm output as the last hidden state: the same values.
        c.set(`hidden_states.${config.layers}`, await c.b.scale(last, 1));
      },
    });
    return steps;
  },
};

export const t5EncoderModel: ModelDefinition<T5EncoderConfig> = {
  family: 't5-encoder',
  configure,
  canonical,
  entries: { forward },
};
