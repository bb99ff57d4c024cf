import type { CanonicalTensor } from '../program.ts';

/**
 * The original (LDM / CompVis) autoencoder names that ComfyUI single-file checkpoints keep
 * under first_stage_model. (prefix already stripped) → diffusers' AutoencoderKL names, as
 * diffusers' own single-file conversion does:
 *
 * - `{encoder,decoder}.mid.block_{1,2}` → `mid_block.resnets.{0,1}`; `mid.attn_1.{norm,q,k,v,proj_out}`
 *   → `mid_block.attentions.0.{group_norm,to_q,to_k,to_v,to_out.0}` (q/k/v/proj_out stay 1×1
 *   convs [C, C, 1, 1]: the math applies them as convs);
 * - `encoder.down.{i}.block.{j}` → `encoder.down_blocks.{i}.resnets.{j}`, `down.{i}.downsample`
 *   → `down_blocks.{i}.downsamplers.0`;
 * - `decoder.up.{k}` → `decoder.up_blocks.{n−1−k}` (LDM numbers the decoder's levels from the
 *   output side), `upsample` → `upsamplers.0`;
 * - resnets' `nin_shortcut` → `conv_shortcut`; `{encoder,decoder}.norm_out` → `conv_norm_out`.
 *
 * Tensors whose names are already diffusers' (conv_in, conv_out, quant_conv, post_quant_conv)
 * are left out of the map (identity).
 */
export function ldmVaeToDiffusers(tensors: ReadonlyMap<string, unknown> | Iterable<string>): Map<string, CanonicalTensor> {
  const names = [...(isMap(tensors) ? tensors.keys() : tensors)];
  let decoderLevels = 0;
  for (const n of names) {
    const m = /^decoder\.up\.(\d+)\./.exec(n);
    if (m) decoderLevels = Math.max(decoderLevels, Number(m[1]) + 1);
  }
  const map = new Map<string, CanonicalTensor>();
  for (const source of names) {
    const canonical = ldmVaeName(source, decoderLevels);
    if (canonical !== null && canonical !== source) map.set(canonical, { source });
  }
  return map;
}

const isMap = (x: unknown): x is ReadonlyMap<string, unknown> => x instanceof Map;

const ATTN: Record<string, string> = { norm: 'group_norm', q: 'to_q', k: 'to_k', v: 'to_v', proj_out: 'to_out.0' };

/** One LDM name → its diffusers name (null: not a VAE tensor this mapping knows). */
export function ldmVaeName(name: string, decoderLevels: number): string | null {
  const resnet = (rest: string) => rest.replace(/^nin_shortcut\./, 'conv_shortcut.');
  let m: RegExpExecArray | null;
  if ((m = /^(encoder|decoder)\.(conv_in|conv_out)\.(weight|bias)$/.exec(name))) return name;
  if ((m = /^(quant_conv|post_quant_conv)\.(weight|bias)$/.exec(name))) return name;
  if ((m = /^(encoder|decoder)\.norm_out\.(weight|bias)$/.exec(name))) return `${m[1]}.conv_norm_out.${m[2]}`;
  if ((m = /^(encoder|decoder)\.mid\.block_([12])\.(.+)$/.exec(name))) return `${m[1]}.mid_block.resnets.${Number(m[2]) - 1}.${resnet(m[3]!)}`;
  if ((m = /^(encoder|decoder)\.mid\.attn_1\.(norm|q|k|v|proj_out)\.(weight|bias)$/.exec(name))) {
    return `${m[1]}.mid_block.attentions.0.${ATTN[m[2]!]}.${m[3]}`;
  }
  if ((m = /^encoder\.down\.(\d+)\.block\.(\d+)\.(.+)$/.exec(name))) return `encoder.down_blocks.${m[1]}.resnets.${m[2]}.${resnet(m[3]!)}`;
  if ((m = /^encoder\.down\.(\d+)\.downsample\.conv\.(weight|bias)$/.exec(name))) return `encoder.down_blocks.${m[1]}.downsamplers.0.conv.${m[2]}`;
  if ((m = /^decoder\.up\.(\d+)\.block\.(\d+)\.(.+)$/.exec(name))) {
    return `decoder.up_blocks.${decoderLevels - 1 - Number(m[1])}.resnets.${m[2]}.${resnet(m[3]!)}`;
  }
  if ((m = /^decoder\.up\.(\d+)\.upsample\.conv\.(weight|bias)$/.exec(name))) {
    return `decoder.up_blocks.${decoderLevels - 1 - Number(m[1])}.upsamplers.0.conv.${m[2]}`;
  }
  return null;
}
