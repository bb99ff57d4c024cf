import { MultiGpuError } from '../errors.ts';
import type { WeightSet } from '../formats/weights.ts';

/**
 * What a block is for, which decides where the planner may put it: embeddings, the final
 * norm and the output head are pinned to the compute device (SPEC §3).
 */
export type BlockKind = 'embedding' | 'layer' | 'norm' | 'head' | 'io';

/** A unit that moves between devices whole: a transformer layer, a resblock, a head. */
export interface Block {
  readonly name: string;
  readonly kind: BlockKind;
  /** Tensors this block owns, in file order. */
  readonly tensors: readonly string[];
  /** Tied tensors it reads but another block owns (gpt2's head reads the token embedding). */
  readonly shared: readonly string[];
  /** Sum of its own tensors' stored bytes. */
  readonly storedBytes: number;
  /** Sum of its own tensors' element counts (what the cost model turns into FLOPs). */
  readonly parameters: number;
}

/** The naming scheme a checkpoint uses for one family. */
export type NameScheme = 'transformers' | 'diffusers' | 'comfyui' | 'gguf' | 'openclip';

/** One family's map from tensor names to blocks, header-only. */
export interface BlockMap {
  readonly family: string;
  readonly scheme: NameScheme;
  /** In execution order. */
  readonly blocks: readonly Block[];
}

/**
 * A tensor-name rule: the first rule whose pattern matches a tensor gives its block. `block`
 * and `order` see the match, so one rule covers every layer index; `order` sorts blocks
 * into execution order (compared element by element).
 */
export interface BlockRule {
  readonly pattern: RegExp;
  readonly kind: BlockKind;
  readonly block: (m: RegExpExecArray) => string;
  readonly order: (m: RegExpExecArray) => readonly number[];
}

/** A family's rules under one naming scheme, plus tensors it ties to others. */
export interface SchemeRules {
  readonly scheme: NameScheme;
  readonly rules: readonly BlockRule[];
  /** Which tensors prove the scheme: all must be present (they usually are the embeddings). */
  readonly signature: readonly RegExp[];
  /** Blocks that read a tensor they don't own, when the checkpoint stores it once. */
  readonly ties?: (names: ReadonlySet<string>, config: Readonly<Record<string, unknown>> | null) => ReadonlyArray<{
    readonly block: string; readonly kind: BlockKind; readonly order: readonly number[]; readonly tensor: string;
  }>;
}

export interface ModelFamily {
  readonly id: string;
  readonly description: string;
  readonly schemes: readonly SchemeRules[];
}

export class UnmappedTensorsError extends MultiGpuError {
  readonly tensors: readonly string[];
  constructor(file: string, family: string, tensors: readonly string[]) {
    super('E_UNMAPPED_TENSORS', `${file}: ${tensors.length} tensor(s) fit no block of ${family}: ${tensors.slice(0, 5).join(', ')}${tensors.length > 5 ? ', …' : ''}`, {
      hint: 'the checkpoint is not this family, or a variant of it this version does not know; please report it with the tensor names',
    });
    this.tensors = tensors;
  }
}

export class UnknownModelError extends MultiGpuError {
  constructor(file: string, sample: readonly string[]) {
    super('E_UNKNOWN_MODEL', `${file}: no known model family matches its tensors (${sample.slice(0, 4).join(', ')}${sample.length > 4 ? ', …' : ''})`, {
      hint: 'families known: llama, gpt2, clip-text, t5-encoder, flux-dit, sd-vae, sd-unet; name one with --family if detection is wrong',
    });
  }
}

const compareOrder = (a: readonly number[], b: readonly number[]) => {
  for (let i = 0; i < Math.max(a.length, b.length); i++) {
    const d = (a[i] ?? -Infinity) - (b[i] ?? -Infinity);
    if (d !== 0) return d;
  }
  return 0;
};

export function schemeMatches(scheme: SchemeRules, names: ReadonlySet<string>): boolean {
  return scheme.signature.every((re) => [...names].some((n) => re.test(n)));
}

/** Groups a checkpoint's tensors into a family's blocks, in execution order. */
export function buildBlockMap(family: ModelFamily, scheme: SchemeRules, weights: WeightSet): BlockMap {
  const names = new Set(weights.tensors.keys());
  const byBlock = new Map<string, { kind: BlockKind; order: readonly number[]; tensors: string[]; shared: string[]; bytes: number; parameters: number }>();
  const unmapped: string[] = [];
  for (const tensor of weights.tensors.values()) {
    const hit = scheme.rules.map((rule) => ({ rule, m: rule.pattern.exec(tensor.name) })).find((r) => r.m);
    if (!hit) {
      unmapped.push(tensor.name);
      continue;
    }
    const name = hit.rule.block(hit.m!);
    let entry = byBlock.get(name);
    if (!entry) byBlock.set(name, (entry = { kind: hit.rule.kind, order: hit.rule.order(hit.m!), tensors: [], shared: [], bytes: 0, parameters: 0 }));
    entry.tensors.push(tensor.name);
    entry.bytes += tensor.byteLength;
    entry.parameters += tensor.shape.reduce((a, b) => a * b, 1);
  }
  if (unmapped.length > 0) throw new UnmappedTensorsError(weights.name, family.id, unmapped);
  for (const tie of scheme.ties?.(names, weights.config) ?? []) {
    let entry = byBlock.get(tie.block);
    if (!entry) byBlock.set(tie.block, (entry = { kind: tie.kind, order: tie.order, tensors: [], shared: [], bytes: 0, parameters: 0 }));
    entry.shared.push(tie.tensor);
  }
  const blocks = [...byBlock.entries()]
    .sort(([an, a], [bn, b]) => compareOrder(a.order, b.order) || (an < bn ? -1 : an > bn ? 1 : 0))
    .map(([name, e]): Block => ({ name, kind: e.kind, tensors: e.tensors, shared: e.shared, storedBytes: e.bytes, parameters: e.parameters }));
  return { family: family.id, scheme: scheme.scheme, blocks };
}

/** Rule helpers: most rules are "a fixed prefix" or "a prefix with a layer index". */
export const fixed = (pattern: RegExp, block: string, kind: BlockKind, order: readonly number[]): BlockRule =>
  ({ pattern, kind, block: () => block, order: () => order });

export const indexed = (pattern: RegExp, prefix: string, kind: BlockKind, stage: number): BlockRule =>
  ({ pattern, kind, block: (m) => `${prefix}.${m[1]}`, order: (m) => [stage, Number(m[1])] });

/** The general form, for names with several indices (UNet and VAE levels). */
export const rule = (pattern: RegExp, kind: BlockKind, block: BlockRule['block'], order: BlockRule['order']): BlockRule =>
  ({ pattern, kind, block, order });

/** A captured index as a number, for order keys. */
export const num = (s: string | undefined): number => Number(s);
