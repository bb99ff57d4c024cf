import { MultiGpuError } from '../../errors.ts';
import type { WeightSet } from '../../formats/weights.ts';
import type { CanonicalTensor } from '../program.ts';

/**
 * llama.cpp's GGUF layout of a Llama-style model, mapped back onto transformers' names and
 * layout.
 *
 * Names: token_embd → model.embed_tokens, blk.N.attn_q/k/v/output → self_attn.q/k/v/o_proj,
 * blk.N.ffn_gate/up/down → mlp.gate/up/down_proj, attn_norm → input_layernorm, ffn_norm →
 * post_attention_layernorm, output_norm → model.norm, output → lm_head.
 *
 * Rows: llama.cpp's "llama" architecture rotates interleaved pairs (2i, 2i+1) where
 * transformers rotates split halves (i, i + D/2), so its converter (convert_hf_to_gguf.py,
 * LlamaModel.permute) reorders the rows of q and k (weights and biases) within each head:
 * `w.reshape(heads, 2, D/2, …).swapaxes(1, 2)`. GGUF row h·D + 2j + s holds transformers row
 * h·D + s·D/2 + j; ggufPermutedRowOf inverts that. Architectures whose llama.cpp RoPE is
 * already NeoX-style (split halves: qwen2) are stored unpermuted.
 */

const LAYER_PARTS: Readonly<Record<string, string>> = {
  attn_q: 'self_attn.q_proj',
  attn_k: 'self_attn.k_proj',
  attn_v: 'self_attn.v_proj',
  attn_output: 'self_attn.o_proj',
  ffn_gate: 'mlp.gate_proj',
  ffn_up: 'mlp.up_proj',
  ffn_down: 'mlp.down_proj',
  attn_norm: 'input_layernorm',
  ffn_norm: 'post_attention_layernorm',
};

const TOP_LEVEL: Readonly<Record<string, string>> = {
  'token_embd.weight': 'model.embed_tokens.weight',
  'output_norm.weight': 'model.norm.weight',
  'output.weight': 'lm_head.weight',
};

/** llama.cpp's tensor name → transformers' name; null for tensors with no transformers twin (rope_freqs, attn_rot_embd). */
export function ggufToTransformersName(name: string): string | null {
  const top = TOP_LEVEL[name];
  if (top) return top;
  const m = /^blk\.(\d+)\.([a-z_]+)\.(weight|bias)$/.exec(name);
  if (!m) return null;
  const part = LAYER_PARTS[m[2]!];
  return part ? `model.layers.${m[1]}.${part}.${m[3]}` : null;
}

/**
 * For a q or k tensor of `rows` rows in `heads` heads stored by llama.cpp's permute: the
 * stored row that holds transformers row i. Within a head of D rows, transformers row
 * s·D/2 + j (s ∈ {0, 1}, j < D/2) is stored at 2j + s.
 */
export function ggufPermutedRowOf(rows: number, heads: number): (i: number) => number {
  if (!Number.isInteger(heads) || heads < 1 || rows % (2 * heads) !== 0) {
    throw new RangeError(`gguf: ${rows} rows do not split into ${heads} heads of an even size`);
  }
  const D = rows / heads;
  const half = D / 2;
  return (i: number) => {
    const h = Math.floor(i / D);
    const r = i - h * D;
    const s = r >= half ? 1 : 0;
    const j = r - s * half;
    return h * D + 2 * j + s;
  };
}

/** The forward permutation llama.cpp's converter applies: transformers row of GGUF row r (for tests and writers). */
export function ggufPermuteRowOf(rows: number, heads: number): (r: number) => number {
  const D = rows / heads;
  const half = D / 2;
  return (r: number) => {
    const h = Math.floor(r / D);
    const k = r - h * D;
    return h * D + (k % 2) * half + Math.floor(k / 2);
  };
}

/** Architectures whose llama.cpp graph rotates interleaved pairs, so q/k rows were permuted on conversion. */
const PERMUTED_ARCHS = new Set(['llama']);
/** Architectures this family reads from GGUF. */
export const GGUF_LLAMA_ARCHS: ReadonlySet<string> = new Set(['llama', 'qwen2']);

export class UnsupportedGgufError extends MultiGpuError {
  constructor(file: string, message: string, hint?: string) {
    super('E_GGUF_UNSUPPORTED', `${file}: ${message}`, { hint: hint ?? 'this family reads GGUF files of the llama and qwen2 architectures' });
  }
}

/** general.architecture of a GGUF, checked against what this family reads. */
export function ggufArchitecture(weights: WeightSet): string {
  const arch = weights.metadata.get('general.architecture');
  if (typeof arch !== 'string') throw new UnsupportedGgufError(weights.name, 'no general.architecture in the GGUF metadata');
  if (!GGUF_LLAMA_ARCHS.has(arch)) throw new UnsupportedGgufError(weights.name, `GGUF architecture "${arch}" is not a Llama-style model`);
  return arch;
}

/**
 * canonical (transformers) name → stored GGUF tensor, with q/k rows put back into
 * transformers' order where the architecture's converter permuted them.
 */
export function ggufCanonical(weights: WeightSet, o: { arch: string; heads: number; kvHeads: number }): Map<string, CanonicalTensor> {
  const map = new Map<string, CanonicalTensor>();
  const permuted = PERMUTED_ARCHS.has(o.arch);
  for (const tensor of weights.tensors.values()) {
    const canonical = ggufToTransformersName(tensor.name);
    if (!canonical) continue;
    const qk = /\.self_attn\.([qk])_proj\.(weight|bias)$/.exec(canonical);
    if (permuted && qk) {
      const heads = qk[1] === 'q' ? o.heads : o.kvHeads;
      const rows = tensor.shape[0]!;
      map.set(canonical, { source: tensor.name, rows: { count: rows, rowOf: ggufPermutedRowOf(rows, heads) } });
    } else {
      map.set(canonical, { source: tensor.name });
    }
  }
  return map;
}
