import type { ActivationKind, Tensor } from '../../runtime/backend.ts';
import type { WeightSet } from '../../formats/weights.ts';
import type { BlockMap, NameScheme } from '../blocks.ts';
import type { CanonicalTensor, EntryDefinition, HostTensor, ModelDefinition, Step, StepContext } from '../program.ts';

/**
 * transformers' CLIPTextModel (5.x): token + position embeddings, pre-LN encoder layers
 * (LayerNorm → attention with a causal mask → residual; LayerNorm → fc1 → act → fc2 →
 * residual), final LayerNorm, pooled output at the EOS token.
 *
 * Outputs, under transformers' names: last_hidden_state (after the final norm), pooler_output,
 * hidden_states.0..N (0: the embeddings; N: the last layer's output BEFORE the final norm), and
 * text_embeds when the checkpoint has a text_projection (CLIPTextModelWithProjection).
 *
 * "Clip skip" the way ComfyUI offers it (CLIPSetLastLayer): the optional input `clip_skip` (a
 * one-element tensor) or `clip_skip` in config.json chooses layer −k (1 or −1: the last layer,
 * 2 or −2: the penultimate, as A1111's "clip skip 2" and ComfyUI's stop_at_clip_layer −2); the
 * output `clip_skip_hidden_state` is final_layer_norm(hidden_states.(N + 1 − k)), the
 * conditioning ComfyUI passes on. The pooled output always comes from the whole network, as in
 * ComfyUI.
 */
export interface ClipTextConfig {
  readonly hidden: number;
  readonly heads: number;
  readonly headDim: number;
  readonly layers: number;
  readonly intermediate: number;
  readonly eps: number;
  readonly act: ActivationKind;
  readonly eosTokenId: number;
  readonly maxPositions: number;
  /** ComfyUI-style layer choice from config.json (`clip_skip`): 0 = none. */
  readonly clipSkip: number;
  /** A text_projection block exists (CLIPTextModelWithProjection): text_embeds is written. */
  readonly projection: boolean;
}

/** The canonical (transformers CLIPTextModel, 5.x) names of the tensors this model reads. */
export const clipNames = {
  token: 'embeddings.token_embedding.weight',
  position: 'embeddings.position_embedding.weight',
  layer: (i: number, rest: string) => `encoder.layers.${i}.${rest}`,
  finalW: 'final_layer_norm.weight',
  finalB: 'final_layer_norm.bias',
  projection: 'text_projection.weight',
} as const;

/** transformers' ACT2FN names → the backend's activations. */
export function activationOf(name: string): ActivationKind {
  switch (name) {
    case 'quick_gelu': return 'quick_gelu';
    case 'gelu': return 'gelu';
    case 'gelu_new': case 'gelu_pytorch_tanh': case 'gelu_fast': return 'gelu_tanh';
    case 'silu': case 'swish': return 'silu';
    default: throw new RangeError(`clip-text: hidden_act "${name}" is not supported (quick_gelu, gelu, gelu_new, gelu_pytorch_tanh, silu)`);
  }
}

const num = (v: unknown): number | undefined => (typeof v === 'number' && Number.isFinite(v) ? v : undefined);

/** Layer −k (1-based from the end) → index of hidden_states it reads; 0 when no clip skip. */
export function clipSkipLayer(config: ClipTextConfig, inputs: ReadonlyMap<string, HostTensor>): number {
  const given = inputs.get('clip_skip');
  const raw = given ? Number(given.data[0]) : config.clipSkip;
  if (!raw) return 0;
  const k = Math.abs(Math.trunc(raw));
  if (k < 1 || k > config.layers) throw new RangeError(`clip-text: clip_skip ${raw} is outside ±1..±${config.layers}`);
  return config.layers + 1 - k;
}

/**
 * Where the pooled output is read: transformers ≥ 4.5x pools at argmax(input_ids) when every
 * row's largest id is 49407 (OpenAI's EOT; configs carrying the old eos_token_id 2 are this case
 * with OpenAI's tokenizer), else at the first position equal to eos_token_id (0 if none, as
 * torch's argmax of an all-zero row).
 */
export function poolPositions(ids: HostTensor, eosTokenId: number): number[] {
  const L = ids.shape[ids.shape.length - 1]!;
  const B = ids.data.length / L;
  const rows = Array.from({ length: B }, (_, b) => Array.from(ids.data.subarray(b * L, (b + 1) * L), Number));
  const legacy = rows.every((r) => Math.max(...r) === 49407);
  return rows.map((r) => {
    if (legacy) return r.indexOf(Math.max(...r));
    const at = r.indexOf(eosTokenId);
    return at < 0 ? 0 : at;
  });
}

/** A key-padding mask [B, L] of 1/0 → additive [B, 1, 1, L] (transformers: finfo(f32).min). */
export function additiveMask(mask: HostTensor): { data: Float32Array; shape: number[] } {
  const L = mask.shape[mask.shape.length - 1]!;
  const B = mask.data.length / L;
  const data = new Float32Array(B * L);
  for (let i = 0; i < data.length; i++) data[i] = mask.data[i] ? 0 : -3.4028234663852886e38;
  return { data, shape: [B, 1, 1, L] };
}

function configure(weights: WeightSet, blockMap: BlockMap): ClipTextConfig {
  const c = weights.config ?? {};
  const layers = blockMap.blocks.filter((b) => /^layers\.\d+$/.test(b.name)).length;
  const token = weights.tensors.get(sourceName(blockMap.scheme, weights, clipNames.token));
  const hidden = num(c.hidden_size) ?? token?.shape[1];
  if (!hidden) throw new RangeError(`clip-text: ${weights.name} has no hidden_size (config.json) nor a token embedding`);
  const fc1 = weights.tensors.get(sourceName(blockMap.scheme, weights, clipNames.layer(0, 'mlp.fc1.weight')));
  const pos = weights.tensors.get(sourceName(blockMap.scheme, weights, clipNames.position));
  // Without config.json (single-file checkpoints): OpenAI's CLIP-L (768) uses quick_gelu,
  // OpenCLIP's ViT-H and ViT-bigG use gelu; heads are 64 wide in all of them.
  const heads = num(c.num_attention_heads) ?? hidden / 64;
  const actName = typeof c.hidden_act === 'string' ? c.hidden_act : (blockMap.scheme === 'openclip' || hidden !== 768 ? 'gelu' : 'quick_gelu');
  const configuredLayers = num(c.num_hidden_layers);
  if (configuredLayers !== undefined && configuredLayers !== layers) {
    throw new RangeError(`clip-text: config.json says ${configuredLayers} layers, ${weights.name} holds ${layers}`);
  }
  return {
    hidden,
    heads,
    headDim: hidden / heads,
    layers,
    intermediate: num(c.intermediate_size) ?? fc1?.shape[0] ?? hidden * 4,
    eps: num(c.layer_norm_eps) ?? 1e-5,
    act: activationOf(actName),
    eosTokenId: num(c.eos_token_id) ?? 49407,
    maxPositions: num(c.max_position_embeddings) ?? pos?.shape[0] ?? 77,
    clipSkip: num(c.clip_skip) ?? 0,
    projection: blockMap.blocks.some((b) => b.name === 'text_projection'),
  };
}

/** The stored name of a canonical tensor under a transformers-style prefix (text_model., transformer.). */
function sourceName(scheme: NameScheme, weights: WeightSet, canonical: string): string {
  if (scheme === 'openclip') return openclipSource(weights, canonical)?.source ?? canonical;
  if (canonical === clipNames.projection) {
    for (const p of ['', 'transformer.']) if (weights.tensors.has(p + canonical)) return p + canonical;
    return canonical;
  }
  for (const p of ['', 'text_model.', 'transformer.text_model.', 'transformer.']) if (weights.tensors.has(p + canonical)) return p + canonical;
  return canonical;
}

const OPENCLIP_LAYER: Readonly<Record<string, string>> = {
  'layer_norm1.weight': 'ln_1.weight', 'layer_norm1.bias': 'ln_1.bias',
  'layer_norm2.weight': 'ln_2.weight', 'layer_norm2.bias': 'ln_2.bias',
  'self_attn.out_proj.weight': 'attn.out_proj.weight', 'self_attn.out_proj.bias': 'attn.out_proj.bias',
  'mlp.fc1.weight': 'mlp.c_fc.weight', 'mlp.fc1.bias': 'mlp.c_fc.bias',
  'mlp.fc2.weight': 'mlp.c_proj.weight', 'mlp.fc2.bias': 'mlp.c_proj.bias',
};

/** open_clip's names (ComfyUI's SD2 / SDXL-G): fused in_proj cut into q, k, v; [in, out] projection transposed. */
function openclipSource(weights: WeightSet, canonical: string): CanonicalTensor | undefined {
  const prefix = [...weights.tensors.keys()].some((n) => n.startsWith('model.')) ? 'model.' : '';
  const fixedNames: Record<string, string> = {
    [clipNames.token]: 'token_embedding.weight',
    [clipNames.position]: 'positional_embedding',
    [clipNames.finalW]: 'ln_final.weight',
    [clipNames.finalB]: 'ln_final.bias',
  };
  if (fixedNames[canonical]) return { source: prefix + fixedNames[canonical] };
  if (canonical === clipNames.projection) return { source: `${prefix}text_projection`, transpose: true };
  const m = /^encoder\.layers\.(\d+)\.(.+)$/.exec(canonical);
  if (!m) return undefined;
  const base = `${prefix}transformer.resblocks.${m[1]}.`;
  const rest = m[2]!;
  if (OPENCLIP_LAYER[rest]) return { source: base + OPENCLIP_LAYER[rest] };
  const qkv = /^self_attn\.([qkv])_proj\.(weight|bias)$/.exec(rest);
  if (!qkv) return undefined;
  const source = `${base}attn.in_proj_${qkv[2]}`;
  const fused = weights.tensors.get(source);
  if (!fused) return undefined;
  const d = fused.shape[0]! / 3;
  const start = 'qkv'.indexOf(qkv[1]!) * d;
  return { source, rows: { count: d, rowOf: (i) => start + i } };
}

const LAYER_TENSORS = [
  'layer_norm1.weight', 'layer_norm1.bias',
  'self_attn.q_proj.weight', 'self_attn.q_proj.bias',
  'self_attn.k_proj.weight', 'self_attn.k_proj.bias',
  'self_attn.v_proj.weight', 'self_attn.v_proj.bias',
  'self_attn.out_proj.weight', 'self_attn.out_proj.bias',
  'layer_norm2.weight', 'layer_norm2.bias',
  'mlp.fc1.weight', 'mlp.fc1.bias', 'mlp.fc2.weight', 'mlp.fc2.bias',
];

function canonical(scheme: NameScheme, weights: WeightSet, config: ClipTextConfig): ReadonlyMap<string, CanonicalTensor> {
  const names: string[] = [clipNames.token, clipNames.position, clipNames.finalW, clipNames.finalB];
  if (config.projection) names.push(clipNames.projection);
  for (let i = 0; i < config.layers; i++) for (const t of LAYER_TENSORS) names.push(clipNames.layer(i, t));
  const map = new Map<string, CanonicalTensor>();
  for (const name of names) {
    if (scheme === 'openclip') {
      const cut = openclipSource(weights, name);
      if (cut) map.set(name, cut);
      continue;
    }
    const source = sourceName(scheme, weights, name);
    if (source !== name) map.set(name, { source });
  }
  return map;
}

const opt = (c: StepContext, name: string) => (c.has(name) ? c.w(name) : null);

function layerStep(config: ClipTextConfig, i: number): Step {
  const w = (rest: string) => clipNames.layer(i, rest);
  return {
    block: `layers.${i}`,
    async run(c) {
      const { b } = c;
      const h = await c.get(`hidden_states.${i}`);
      const mask = c.exists('clip.attention_mask') ? await c.get('clip.attention_mask') : undefined;
      const x = await b.layerNorm(h, c.w(w('layer_norm1.weight')), opt(c, w('layer_norm1.bias')), config.eps);
      const q = await b.linear(x, c.w(w('self_attn.q_proj.weight')), opt(c, w('self_attn.q_proj.bias')));
      const k = await b.linear(x, c.w(w('self_attn.k_proj.weight')), opt(c, w('self_attn.k_proj.bias')));
      const v = await b.linear(x, c.w(w('self_attn.v_proj.weight')), opt(c, w('self_attn.v_proj.bias')));
      const a = await b.attention(q, k, v, {
        heads: config.heads, headDim: config.headDim, causal: true, ...(mask ? { mask } : {}),
      });
      const o = await b.linear(a, c.w(w('self_attn.out_proj.weight')), opt(c, w('self_attn.out_proj.bias')));
      const h1 = await b.binary('add', h, o);
      const y = await b.layerNorm(h1, c.w(w('layer_norm2.weight')), opt(c, w('layer_norm2.bias')), config.eps);
      const f1 = await b.linear(y, c.w(w('mlp.fc1.weight')), opt(c, w('mlp.fc1.bias')));
      const act = await b.activation(config.act, f1);
      const f2 = await b.linear(act, c.w(w('mlp.fc2.weight')), opt(c, w('mlp.fc2.bias')));
      c.set(`hidden_states.${i + 1}`, await b.binary('add', h1, f2));
    },
  };
}

/** Rows `rows[b]` of x [B, L, D] → [B, D]. */
async function gatherRows(c: StepContext, x: Tensor, rows: readonly number[]): Promise<Tensor> {
  const [B, L, D] = x.shape as [number, number, number];
  const flat = c.b.reshape(x, [B * L, D]);
  const picked: Tensor[] = [];
  for (let bi = 0; bi < B; bi++) picked.push(await c.b.slice(flat, 0, bi * L + rows[bi]!, 1));
  return picked.length === 1 ? picked[0]! : c.b.concat(picked, 0);
}

const forward: EntryDefinition<ClipTextConfig> = {
  inputs: ['input_ids'],
  optionalInputs: ['attention_mask', 'clip_skip'],
  outputs(config, inputs) {
    const names = ['last_hidden_state', 'pooler_output'];
    for (let i = 0; i <= config.layers; i++) names.push(`hidden_states.${i}`);
    if (config.projection) names.push('text_embeds');
    if (clipSkipLayer(config, inputs) > 0) names.push('clip_skip_hidden_state');
    return names;
  },
  steps(config, inputs) {
    const ids = inputs.get('input_ids');
    if (!ids) throw new RangeError('clip-text: input_ids is required');
    const L = ids.shape[ids.shape.length - 1]!;
    if (L > config.maxPositions) throw new RangeError(`clip-text: ${L} tokens, the model has ${config.maxPositions} positions`);
    const skipAt = clipSkipLayer(config, inputs);
    const steps: Step[] = [
      {
        block: 'token_embedding',
        async run(c) {
          const idsT = await c.get('input_ids');
          const B = idsT.shape.length > 1 ? idsT.shape.slice(0, -1).reduce((a, d) => a * d, 1) : 1;
          const flat = c.b.reshape(idsT, [B, L]);
          c.set('clip.inputs_embeds', await c.b.embedding(flat, c.w(clipNames.token)));
          if (c.exists('attention_mask')) {
            const m = additiveMask(c.input('attention_mask'));
            c.set('clip.attention_mask', await c.b.upload(m.data, m.shape));
          }
        },
      },
      {
        block: 'position_embedding',
        async run(c) {
          const embeds = await c.get('clip.inputs_embeds');
          const positions = await c.b.upload(Int32Array.from({ length: L }, (_, i) => i), [L]);
          const pos = await c.b.embedding(positions, c.w(clipNames.position));
          c.set('hidden_states.0', await c.b.binary('add', embeds, pos));
        },
      },
    ];
    for (let i = 0; i < config.layers; i++) steps.push(layerStep(config, i));
    steps.push({
      block: 'final_layer_norm',
      async run(c) {
        const { b } = c;
        const normW = c.w(clipNames.finalW);
        const normB = opt(c, clipNames.finalB);
        const last = await b.layerNorm(await c.get(`hidden_states.${config.layers}`), normW, normB, config.eps);
        c.set('last_hidden_state', last);
        c.set('pooler_output', await gatherRows(c, last, poolPositions(c.input('input_ids'), config.eosTokenId)));
        if (skipAt > 0) {
          c.set('clip_skip_hidden_state', await b.layerNorm(await c.get(`hidden_states.${skipAt}`), normW, normB, config.eps));
        }
      },
    });
    if (config.projection) {
      steps.push({
        block: 'text_projection',
        async run(c) {
          c.set('text_embeds', await c.b.linear(await c.get('pooler_output'), c.w(clipNames.projection)));
        },
      });
    }
    return steps;
  },
};

export const clipTextModel: ModelDefinition<ClipTextConfig> = {
  family: 'clip-text',
  configure,
  canonical,
  entries: { forward },
};
