import type { CanonicalTensor } from '../program.ts';

/**
 * Black Forest Labs' original FLUX names (what ComfyUI single-file checkpoints keep) → the
 * diffusers names the forward math reads, as diffusers' own single-file loader converts them
 * (`convert_flux_transformer_checkpoint_to_diffusers`):
 *
 * - `double_blocks.N.{img,txt}_attn.qkv` are q, k and v stacked by rows: cut into
 *   `attn.to_{q,k,v}` (image) and `attn.add_{q,k,v}_proj` (text).
 * - `single_blocks.N.linear1` stacks q, k, v and the MLP input projection (rows D, D, D and
 *   the rest): cut into `attn.to_{q,k,v}` and `proj_mlp`; `linear2` is `proj_out`.
 * - `final_layer.adaLN_modulation.1` orders its output (shift, scale); diffusers'
 *   AdaLayerNormContinuous reads (scale, shift): the halves are swapped.
 */

/** Rows start .. start + count − 1 of a stored tensor. */
export const rowRange = (start: number, count: number): NonNullable<CanonicalTensor['rows']> =>
  ({ count, rowOf: (i) => start + i });

/** Both halves of 2·half rows swapped: row i reads row (i + half) mod 2·half. */
export const swapHalves = (half: number): NonNullable<CanonicalTensor['rows']> =>
  ({ count: 2 * half, rowOf: (i) => (i < half ? i + half : i - half) });

const renames: ReadonlyArray<readonly [string, string]> = [
  ['time_text_embed.timestep_embedder.linear_1', 'time_in.in_layer'],
  ['time_text_embed.timestep_embedder.linear_2', 'time_in.out_layer'],
  ['time_text_embed.guidance_embedder.linear_1', 'guidance_in.in_layer'],
  ['time_text_embed.guidance_embedder.linear_2', 'guidance_in.out_layer'],
  ['time_text_embed.text_embedder.linear_1', 'vector_in.in_layer'],
  ['time_text_embed.text_embedder.linear_2', 'vector_in.out_layer'],
  ['context_embedder', 'txt_in'],
  ['x_embedder', 'img_in'],
  ['proj_out', 'final_layer.linear'],
];

const doubleRenames: ReadonlyArray<readonly [string, string]> = [
  ['norm1.linear', 'img_mod.lin'],
  ['norm1_context.linear', 'txt_mod.lin'],
  ['ff.net.0.proj', 'img_mlp.0'],
  ['ff.net.2', 'img_mlp.2'],
  ['ff_context.net.0.proj', 'txt_mlp.0'],
  ['ff_context.net.2', 'txt_mlp.2'],
  ['attn.to_out.0', 'img_attn.proj'],
  ['attn.to_add_out', 'txt_attn.proj'],
];

const doubleNorms: ReadonlyArray<readonly [string, string]> = [
  ['attn.norm_q.weight', 'img_attn.norm.query_norm.scale'],
  ['attn.norm_k.weight', 'img_attn.norm.key_norm.scale'],
  ['attn.norm_added_q.weight', 'txt_attn.norm.query_norm.scale'],
  ['attn.norm_added_k.weight', 'txt_attn.norm.key_norm.scale'],
];

/** The shapes of a checkpoint's tensors under BFL names (a WeightSet's `tensors` fits). */
export type ShapesByName = ReadonlyMap<string, { readonly shape: readonly number[] }>;

/**
 * Every diffusers name a BFL-named FLUX checkpoint provides → how it is cut from the stored
 * tensors. `inner` is the model width (img_in's output rows). Biases are cut like their
 * weights (a 1-D tensor's rows are its elements). Tensors the checkpoint lacks (guidance_in in
 * FLUX.1-schnell) give no entry.
 */
export function bflToDiffusers(tensors: ShapesByName, inner: number): Map<string, CanonicalTensor> {
  const out = new Map<string, CanonicalTensor>();
  const has = (n: string) => tensors.has(n);
  const both = (canonical: string, source: string, rows?: (suffix: 'weight' | 'bias') => CanonicalTensor['rows']) => {
    for (const suffix of ['weight', 'bias'] as const) {
      if (!has(`${source}.${suffix}`)) continue;
      const r = rows?.(suffix);
      out.set(`${canonical}.${suffix}`, r ? { source: `${source}.${suffix}`, rows: r } : { source: `${source}.${suffix}` });
    }
  };
  for (const [canonical, source] of renames) both(canonical, source);
  both('norm_out.linear', 'final_layer.adaLN_modulation.1', () => swapHalves(inner));

  const indices = (re: RegExp) => [...new Set([...tensors.keys()].map((n) => re.exec(n)?.[1]).filter((s): s is string => s !== undefined))]
    .map(Number).sort((a, b) => a - b);

  for (const i of indices(/^double_blocks\.(\d+)\./)) {
    const src = `double_blocks.${i}`;
    const dst = `transformer_blocks.${i}`;
    for (const [canonical, source] of doubleRenames) both(`${dst}.${canonical}`, `${src}.${source}`);
    for (const [canonical, source] of doubleNorms) if (has(`${src}.${source}`)) out.set(`${dst}.${canonical}`, { source: `${src}.${source}` });
    ['to_q', 'to_k', 'to_v'].forEach((proj, j) => both(`${dst}.attn.${proj}`, `${src}.img_attn.qkv`, () => rowRange(j * inner, inner)));
    ['add_q_proj', 'add_k_proj', 'add_v_proj'].forEach((proj, j) => both(`${dst}.attn.${proj}`, `${src}.txt_attn.qkv`, () => rowRange(j * inner, inner)));
  }

  for (const i of indices(/^single_blocks\.(\d+)\./)) {
    const src = `single_blocks.${i}`;
    const dst = `single_transformer_blocks.${i}`;
    both(`${dst}.norm.linear`, `${src}.modulation.lin`);
    both(`${dst}.proj_out`, `${src}.linear2`);
    if (has(`${src}.norm.query_norm.scale`)) out.set(`${dst}.attn.norm_q.weight`, { source: `${src}.norm.query_norm.scale` });
    if (has(`${src}.norm.key_norm.scale`)) out.set(`${dst}.attn.norm_k.weight`, { source: `${src}.norm.key_norm.scale` });
    const linear1 = tensors.get(`${src}.linear1.weight`);
    if (linear1) {
      const mlp = linear1.shape[0]! - 3 * inner;
      if (mlp <= 0) throw new RangeError(`${src}.linear1.weight has ${linear1.shape[0]} rows, not 3·${inner} + the MLP's`);
      ['to_q', 'to_k', 'to_v'].forEach((proj, j) => both(`${dst}.attn.${proj}`, `${src}.linear1`, () => rowRange(j * inner, inner)));
      both(`${dst}.proj_mlp`, `${src}.linear1`, () => rowRange(3 * inner, mlp));
    }
  }
  return out;
}
