import type { CanonicalTensor } from '../program.ts';

/**
 * A UNet's level structure, the block map's name for each diffusers-form block
 * (`down.0.res.0`, `mid.attn.0`, `up.1.upsample`, `time_embedding`, …) and the canonical
 * (diffusers) tensor names → stored names where they differ.
 */
export interface UnetLayout {
  readonly down: readonly { readonly resnets: number; readonly attentions: number; readonly resample: boolean }[];
  readonly mid: { readonly resnets: number; readonly attentions: number } | null;
  readonly up: readonly { readonly resnets: number; readonly attentions: number; readonly resample: boolean }[];
  readonly blocks: Readonly<Record<string, string>>;
  readonly canonical: ReadonlyMap<string, CanonicalTensor>;
}

type Part = 'res' | 'attn' | 'down' | 'up';

/** What an LDM sequence part is, from the names of its tensors. */
function partKind(tensorSuffixes: readonly string[]): Part {
  if (tensorSuffixes.some((s) => s.startsWith('op.'))) return 'down';
  if (tensorSuffixes.some((s) => s.startsWith('in_layers.'))) return 'res';
  if (tensorSuffixes.some((s) => s.startsWith('proj_in.') || s.startsWith('transformer_blocks.'))) return 'attn';
  if (tensorSuffixes.some((s) => s.startsWith('conv.'))) return 'up';
  throw new RangeError(`an LDM UNet part with tensors ${tensorSuffixes.slice(0, 3).join(', ')} is neither a resblock, a transformer nor a resampler`);
}

/** ResBlock → ResnetBlock2D tensor names. */
const RESNET: ReadonlyArray<readonly [RegExp, string]> = [
  [/^in_layers\.0\./, 'norm1.'],
  [/^in_layers\.2\./, 'conv1.'],
  [/^emb_layers\.1\./, 'time_emb_proj.'],
  [/^out_layers\.0\./, 'norm2.'],
  [/^out_layers\.3\./, 'conv2.'],
  [/^skip_connection\./, 'conv_shortcut.'],
];

function partName(kind: Part, suffix: string): string {
  if (kind === 'res') {
    for (const [re, to] of RESNET) if (re.test(suffix)) return suffix.replace(re, to);
    throw new RangeError(`unknown LDM resblock tensor ${suffix}`);
  }
  if (kind === 'down') return suffix.replace(/^op\./, 'conv.');
  return suffix; // SpatialTransformer and Upsample (conv.) names are diffusers' own
}

/**
 * The original (LDM) UNet names ComfyUI keeps under model.diffusion_model. (prefix stripped):
 * `input_blocks.N.M`, `middle_block.M`, `output_blocks.N.M` are sequences of resblocks,
 * transformers and resamplers, mapped onto diffusers' down_blocks/mid_block/up_blocks as
 * diffusers' single-file conversion does; `time_embed.{0,2}` → `time_embedding.linear_{1,2}`,
 * `label_emb.0.{0,2}` → `add_embedding.linear_{1,2}`, `input_blocks.0.0` → `conv_in`,
 * `out.{0,2}` → `conv_norm_out`, `conv_out`.
 */
export function ldmUnetLayout(tensorNames: Iterable<string>): UnetLayout {
  const names = [...tensorNames];
  const canonical = new Map<string, CanonicalTensor>();
  const blocks: Record<string, string> = {};
  const put = (to: string, from: string) => {
    if (to !== from) canonical.set(to, { source: from });
  };

  // Parts of the three sequences: index → part → tensor suffixes.
  const input = new Map<number, Map<number, string[]>>();
  const output = new Map<number, Map<number, string[]>>();
  const middle = new Map<number, string[]>();
  for (const n of names) {
    let m: RegExpExecArray | null;
    if ((m = /^time_embed\.([02])\.(weight|bias)$/.exec(n))) {
      put(`time_embedding.linear_${m[1] === '0' ? 1 : 2}.${m[2]}`, n);
      blocks['time_embedding'] = 'time_embedding';
    } else if ((m = /^label_emb\.0\.([02])\.(weight|bias)$/.exec(n))) {
      put(`add_embedding.linear_${m[1] === '0' ? 1 : 2}.${m[2]}`, n);
      blocks['add_embedding'] = 'add_embedding';
    } else if ((m = /^input_blocks\.0\.0\.(weight|bias)$/.exec(n))) {
      put(`conv_in.${m[1]}`, n);
      blocks['conv_in'] = 'conv_in';
    } else if ((m = /^out\.([02])\.(weight|bias)$/.exec(n))) {
      put(`${m[1] === '0' ? 'conv_norm_out' : 'conv_out'}.${m[2]}`, n);
      blocks['conv_out'] = 'conv_out';
    } else if ((m = /^(input|output)_blocks\.(\d+)\.(\d+)\.(.+)$/.exec(n))) {
      const seq = m[1] === 'input' ? input : output;
      const k = Number(m[2]);
      let parts = seq.get(k);
      if (!parts) seq.set(k, (parts = new Map()));
      const j = Number(m[3]);
      parts.set(j, [...(parts.get(j) ?? []), m[4]!]);
    } else if ((m = /^middle_block\.(\d+)\.(.+)$/.exec(n))) {
      const j = Number(m[1]);
      middle.set(j, [...(middle.get(j) ?? []), m[2]!]);
    }
  }
  const sorted = <T>(m: Map<number, T>) => [...m.entries()].sort((a, b) => a[0] - b[0]);
  const mapPart = (kind: Part, suffixes: readonly string[], from: string, to: string) => {
    for (const s of suffixes) put(`${to}.${partName(kind, s)}`, `${from}.${s}`);
  };

  // Down levels: resblock (+ transformer) entries, a downsampler entry closes a level.
  const down: { resnets: number; attentions: number; resample: boolean }[] = [];
  let level = { resnets: 0, attentions: 0, resample: false };
  for (const [k, parts] of sorted(input)) {
    if (k === 0) continue;
    const items = sorted(parts).map(([j, suffixes]) => ({ j, suffixes, kind: partKind(suffixes) }));
    const i = down.length;
    for (const { j, suffixes, kind } of items) {
      const from = `input_blocks.${k}.${j}`;
      if (kind === 'down') {
        mapPart(kind, suffixes, from, `down_blocks.${i}.downsamplers.0`);
        blocks[`down.${i}.downsample`] = `input.${k}.${j}`;
        level.resample = true;
      } else if (kind === 'res') {
        mapPart(kind, suffixes, from, `down_blocks.${i}.resnets.${level.resnets}`);
        blocks[`down.${i}.res.${level.resnets}`] = `input.${k}.${j}`;
        level.resnets++;
      } else if (kind === 'attn') {
        mapPart(kind, suffixes, from, `down_blocks.${i}.attentions.${level.attentions}`);
        blocks[`down.${i}.attn.${level.attentions}`] = `input.${k}.${j}`;
        level.attentions++;
      } else {
        throw new RangeError(`input_blocks.${k}.${j}: an upsampler in the down path`);
      }
    }
    if (level.resample) {
      down.push(level);
      level = { resnets: 0, attentions: 0, resample: false };
    }
  }
  if (level.resnets > 0) down.push(level);

  // Mid block: resblock, transformer, resblock, ….
  let mid: { resnets: number; attentions: number } | null = null;
  if (middle.size > 0) {
    mid = { resnets: 0, attentions: 0 };
    for (const [j, suffixes] of sorted(middle)) {
      const kind = partKind(suffixes);
      const from = `middle_block.${j}`;
      if (kind === 'res') {
        mapPart(kind, suffixes, from, `mid_block.resnets.${mid.resnets}`);
        blocks[`mid.res.${mid.resnets++}`] = `middle.${j}`;
      } else if (kind === 'attn') {
        mapPart(kind, suffixes, from, `mid_block.attentions.${mid.attentions}`);
        blocks[`mid.attn.${mid.attentions++}`] = `middle.${j}`;
      } else {
        throw new RangeError(`middle_block.${j}: a resampler in the mid block`);
      }
    }
  }

  // Up levels: an upsampler closes a level; the last level has none.
  const up: { resnets: number; attentions: number; resample: boolean }[] = [];
  level = { resnets: 0, attentions: 0, resample: false };
  for (const [k, parts] of sorted(output)) {
    const i = up.length;
    for (const [j, suffixes] of sorted(parts)) {
      const kind = partKind(suffixes);
      const from = `output_blocks.${k}.${j}`;
      if (kind === 'up') {
        mapPart(kind, suffixes, from, `up_blocks.${i}.upsamplers.0`);
        blocks[`up.${i}.upsample`] = `output.${k}.${j}`;
        level.resample = true;
      } else if (kind === 'res') {
        mapPart(kind, suffixes, from, `up_blocks.${i}.resnets.${level.resnets}`);
        blocks[`up.${i}.res.${level.resnets++}`] = `output.${k}.${j}`;
      } else if (kind === 'attn') {
        mapPart(kind, suffixes, from, `up_blocks.${i}.attentions.${level.attentions}`);
        blocks[`up.${i}.attn.${level.attentions++}`] = `output.${k}.${j}`;
      } else {
        throw new RangeError(`output_blocks.${k}.${j}: a downsampler in the up path`);
      }
    }
    if (level.resample) {
      up.push(level);
      level = { resnets: 0, attentions: 0, resample: false };
    }
  }
  if (level.resnets > 0) up.push(level);

  return { down, mid, up, blocks, canonical };
}
