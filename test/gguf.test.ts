import { gguf as hfGguf } from '@huggingface/gguf';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { CountingAllocator } from '../src/formats/allocator.ts';
import { WeightsFormatError, WeightsNotFoundError } from '../src/formats/errors.ts';
import {
  canDequantize, CHUNK_BYTES, dequantize, GGML_TYPES, GgmlType, ggmlTypeById, GgufFile, GgufValueType, openGguf, type GgufValue,
} from '../src/formats/gguf/index.ts';
import { openSafetensors } from '../src/formats/safetensors.ts';
import { bytesSource, type ByteSource } from '../src/formats/source.ts';
import { fixtureBytes, fixturePath } from './fixtures.ts';

const VECTORS = fixturePath('gguf-quant-vectors', 'vectors.gguf');
const VECTORS_EXPECTED = fixturePath('gguf-quant-vectors', 'expected.safetensors');
const MODEL = fixturePath('llama-gguf-tiny', 'model.gguf');
const MODEL_DEQUANT = fixturePath('llama-gguf-tiny', 'model.dequant.safetensors');

/** Index of the first element whose float32 bit pattern differs, or -1 (a length mismatch counts). */
function firstBitMismatch(actual: Float32Array, expected: Float32Array): number {
  const a = new Uint32Array(actual.buffer, actual.byteOffset, actual.length);
  const b = new Uint32Array(expected.buffer, expected.byteOffset, expected.length);
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return i;
  return a.length === b.length ? -1 : n;
}

function expectBitExact(actual: Float32Array, expected: Float32Array, what: string): void {
  const at = firstBitMismatch(actual, expected);
  const detail = at < 0 ? 'equal' : `first mismatch at ${at}: ${actual[at]} vs ${expected[at]} (lengths ${actual.length}/${expected.length})`;
  expect(detail, what).toBe('equal');
}

// ---- (a) ggml's known-answer vectors ------------------------------------------------------

describe('dequantization equals ggml bit for bit (gguf-quant-vectors)', async () => {
  const file = await openGguf(VECTORS);
  const expected = await openSafetensors(VECTORS_EXPECTED);
  afterAll(async () => {
    await file.close();
    await expected.close();
  });

  it('has one tensor per type, 6 × 512', () => {
    expect([...file.tensors.values()].map((t) => t.typeName)).toEqual(
      ['Q8_0', 'Q4_0', 'Q4_1', 'Q5_0', 'Q5_1', 'Q2_K', 'Q3_K', 'Q4_K', 'Q5_K', 'Q6_K', 'F16', 'BF16', 'F32'],
    );
    for (const t of file.tensors.values()) {
      expect(t.dims).toEqual([512, 6]);
      expect(t.shape).toEqual([6, 512]);
      expect(t.elements).toBe(3072);
    }
  });

  it.each(['q8_0', 'q4_0', 'q4_1', 'q5_0', 'q5_1', 'q2_K', 'q3_K', 'q4_K', 'q5_K', 'q6_K', 'f16', 'bf16', 'f32'])('%s', async (name) => {
    expect(expected.tensor(`${name}.dequant`).shape).toEqual([...file.tensor(name).shape]);
    expectBitExact(await file.readF32(name), await expected.readF32(`${name}.dequant`), name);
  });

  it('F32 reads back the source values exactly', async () => {
    expectBitExact(await file.readF32('f32'), await expected.readF32('source'), 'f32 vs source');
  });

  it('dequantize() takes ids, names and table entries alike, and readRaw is the exact byte range', async () => {
    const info = file.tensor('q4_K');
    const raw = await file.readRaw('q4_K');
    expect(raw.byteLength).toBe(info.byteLength);
    expect(raw).toEqual(fixtureBytes('gguf-quant-vectors', 'vectors.gguf').subarray(info.offset, info.offset + info.byteLength));
    const byId = dequantize(GgmlType.Q4_K, raw, info.elements);
    expectBitExact(dequantize('Q4_K', raw, info.elements), byId, 'by name');
    expectBitExact(dequantize(ggmlTypeById(12)!, raw, info.elements), byId, 'by entry');
    // A subarray at an odd offset (as a pooled allocator may hand out) gives the same values.
    const shifted = new Uint8Array(raw.byteLength + 1);
    shifted.set(raw, 1);
    expectBitExact(dequantize('Q4_K', shifted.subarray(1), info.elements), byId, 'unaligned');
    const f32raw = await file.readRaw('f32');
    const odd = new Uint8Array(f32raw.byteLength + 3);
    odd.set(f32raw, 3);
    expectBitExact(dequantize('F32', odd.subarray(3), 3072), await file.readF32('f32'), 'unaligned f32');
  });

  it('dequantize() refuses misuse with RangeErrors', () => {
    expect(() => dequantize('Q4_0', new Uint8Array(18), 31)).toThrow(RangeError);
    expect(() => dequantize('Q4_0', new Uint8Array(17), 32)).toThrow(/need 18 bytes, got 17/);
    expect(() => dequantize(16, new Uint8Array(66), 256)).toThrow(/cannot dequantize ggml type IQ2_XXS/);
    expect(() => dequantize(4, new Uint8Array(64), 32)).toThrow(/unknown ggml type 4/);
    expect(canDequantize('Q6_K')).toBe(true);
    expect(canDequantize('IQ4_XS')).toBe(false);
  });
});

describe('Q8_K and the integer types (no fixture: hand-computed)', () => {
  it('Q8_K is d × q with an f32 d', () => {
    const block = new Uint8Array(292);
    const view = new DataView(block.buffer);
    view.setFloat32(0, 0.1, true);
    for (let j = 0; j < 256; j++) view.setInt8(4 + j, j - 128);
    const out = dequantize('Q8_K', block, 256);
    for (let j = 0; j < 256; j++) expect(out[j]).toBe(Math.fround(Math.fround(0.1) * (j - 128)));
  });

  it('I8, I16, I32, F64 convert to float32', () => {
    expect([...dequantize('I8', new Uint8Array([0xff, 0x7f]), 2)]).toEqual([-1, 127]);
    expect([...dequantize('I16', new Uint8Array([0x00, 0x80]), 1)]).toEqual([-32768]);
    expect([...dequantize('I32', new Uint8Array([1, 0, 0, 0]), 1)]).toEqual([1]);
    const f64 = new Uint8Array(new Float64Array([0.1]).buffer);
    expect([...dequantize('F64', f64, 1)]).toEqual([Math.fround(0.1)]);
  });
});

// ---- (b) the header against an independent parser ------------------------------------------

/** hf's parser returns plain values; ours the same, so deep equality compares them directly. */
async function compareWithHuggingFace(path: string, file: GgufFile): Promise<void> {
  const theirs = await hfGguf(path, { allowLocalFile: true, typedMetadata: true });
  const { version, tensor_count, kv_count, ...rest } = theirs.metadata as unknown as Record<string, GgufValue> & {
    version: number; tensor_count: bigint; kv_count: bigint;
  };
  expect(file.version).toBe(version);
  expect(BigInt(file.tensors.size)).toBe(tensor_count);
  expect(BigInt(file.metadata.size)).toBe(kv_count);
  // hf returns a plain object, where a `__proto__` key sets the prototype instead of a key
  // (the pollution our Map avoids): compare every other key.
  const keys = [...file.metadata.keys()].filter((k) => k !== '__proto__');
  expect(keys).toEqual(Object.keys(rest));
  for (const key of keys) {
    const value = file.metadata.get(key);
    expect(value, key).toEqual(rest[key]);
    const typed = (theirs.typedMetadata as Record<string, { type: number; subType?: number }>)[key]!;
    expect(file.metadataTypes.get(key)!.type, key).toBe(typed.type);
    if (typed.subType !== undefined) expect(file.metadataTypes.get(key)!.item!.type, key).toBe(typed.subType);
  }
  expect(file.dataOffset).toBe(Number(theirs.tensorDataOffset));
  expect([...file.tensors.keys()]).toEqual(theirs.tensorInfos.map((t) => t.name));
  for (const t of theirs.tensorInfos) {
    const ours = file.tensor(t.name);
    expect(ours.type, t.name).toBe(t.dtype);
    expect(ours.dims.length, t.name).toBe(t.n_dims);
    expect(ours.dims.map(BigInt), t.name).toEqual(t.shape);
    expect(ours.shape.map(BigInt), t.name).toEqual([...t.shape].reverse());
    expect(BigInt(ours.offset), t.name).toBe(theirs.tensorDataOffset + t.offset);
  }
}

describe('metadata and tensor infos equal @huggingface/gguf', () => {
  it.each([['vectors.gguf', VECTORS], ['model.gguf', MODEL]])('%s', async (_label, path) => {
    const file = await openGguf(path);
    try {
      await compareWithHuggingFace(path, file);
    } finally {
      await file.close();
    }
  });

  it('model.gguf metadata values, spelled out', async () => {
    const file = await openGguf(MODEL);
    await file.close();
    expect(file.version).toBe(3);
    expect(file.alignment).toBe(32);
    expect(file.dataOffset).toBe(1760);
    expect(file.metadata.get('general.architecture')).toBe('llama');
    expect(file.metadata.get('llama.attention.head_count')).toBe(4);
    expect(file.metadata.get('llama.attention.head_count_kv')).toBe(2);
    expect(file.metadata.get('llama.attention.layer_norm_rms_epsilon')).toBe(Math.fround(1e-5));
    expect(file.tensor('blk.0.attn_k.weight')).toEqual({
      name: 'blk.0.attn_k.weight', type: 12, typeName: 'Q4_K', dims: [256, 128], shape: [128, 256],
      elements: 32768, offset: 1760 + 219136, byteLength: 128 * 144,
    });
  });

  it('a synthetic header with every value type, nested arrays and a 200 KB string array (crossing read chunks) equals hf too', async () => {
    const tokens = Array.from({ length: 20_000 }, (_, i) => `token-${i}-${'é'.repeat(i % 7)}`);
    const bytes = buildGguf({
      kvs: [
        { key: 'u8', type: GgufValueType.UINT8, value: 200 },
        { key: 'i8', type: GgufValueType.INT8, value: -100 },
        { key: 'u16', type: GgufValueType.UINT16, value: 60000 },
        { key: 'i16', type: GgufValueType.INT16, value: -30000 },
        { key: 'u32', type: GgufValueType.UINT32, value: 4_000_000_000 },
        { key: 'i32', type: GgufValueType.INT32, value: -2_000_000_000 },
        { key: 'f32', type: GgufValueType.FLOAT32, value: 0.1 },
        { key: 'bool', type: GgufValueType.BOOL, value: true },
        { key: 'string', type: GgufValueType.STRING, value: 'héllo ✓' },
        { key: 'u64', type: GgufValueType.UINT64, value: 2n ** 64n - 1n },
        { key: 'i64', type: GgufValueType.INT64, value: -(2n ** 63n) },
        { key: 'f64', type: GgufValueType.FLOAT64, value: 0.1 },
        { key: 'tokens', type: GgufValueType.ARRAY, itemType: GgufValueType.STRING, value: tokens },
        { key: 'scores', type: GgufValueType.ARRAY, itemType: GgufValueType.FLOAT32, value: [0.5, -1, 3] },
        { key: 'nested', type: GgufValueType.ARRAY, itemType: GgufValueType.ARRAY, value: [[1, 2], [3]], nestedItemType: GgufValueType.INT32 },
        { key: '__proto__', type: GgufValueType.STRING, value: 'just a key' },
        { key: 'general.alignment', type: GgufValueType.UINT32, value: 64 },
      ],
      tensors: [{ name: 'w', dims: [32, 2], type: GgmlType.F32, offset: 0 }],
      alignment: 64,
    });
    expect(bytes.byteLength).toBeGreaterThan(3 * CHUNK_BYTES);
    const dir = mkdtempSync(join(tmpdir(), 'gguf-test-'));
    try {
      const path = join(dir, 'synthetic.gguf');
      writeFileSync(path, bytes);
      const allocator = new CountingAllocator();
      const file = await openGguf(path, { allocator });
      await file.close();
      await compareWithHuggingFace(path, file);
      expect(file.metadata.get('tokens')).toEqual(tokens);
      expect(file.metadata.get('nested')).toEqual([[1, 2], [3]]);
      expect(file.metadata.get('u64')).toBe(2n ** 64n - 1n);
      expect(file.metadata.get('__proto__')).toBe('just a key');
      expect(Object.getPrototypeOf(file.metadata)).toBe(Map.prototype);
      expect(file.alignment).toBe(64);
      expect(file.dataOffset % 64).toBe(0);
      // The header was read in chunks from one reused window, never a buffer per item.
      expect(allocator.largest).toBeLessThanOrEqual(bytes.byteLength);
      expect(allocator.count).toBeLessThanOrEqual(3);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

// ---- (c) a llama.cpp-style model against the reference's dequantized weights ---------------

/** llama.cpp's tensor names → transformers'. */
function transformersName(name: string): string {
  const fixed: Record<string, string> = {
    'token_embd.weight': 'model.embed_tokens.weight',
    'output_norm.weight': 'model.norm.weight',
    'output.weight': 'lm_head.weight',
  };
  if (fixed[name]) return fixed[name];
  const m = /^blk\.(\d+)\.(\w+)\.weight$/.exec(name);
  const parts: Record<string, string> = {
    attn_q: 'self_attn.q_proj', attn_k: 'self_attn.k_proj', attn_v: 'self_attn.v_proj', attn_output: 'self_attn.o_proj',
    ffn_gate: 'mlp.gate_proj', ffn_up: 'mlp.up_proj', ffn_down: 'mlp.down_proj',
    attn_norm: 'input_layernorm', ffn_norm: 'post_attention_layernorm',
  };
  if (!m || !parts[m[2]!]) throw new Error(`no transformers name for ${name}`);
  return `model.layers.${m[1]}.${parts[m[2]!]}.weight`;
}

/**
 * llama.cpp's converter reorders each head's rows of q and k from transformers' "halves"
 * RoPE layout to interleaved pairs: GGUF row h·D + 2i + t holds transformers' row
 * h·D + t·D/2 + i. This undoes it (test-side only: the reader returns what the file holds).
 */
function unpermuteRope(values: Float32Array, rows: number, cols: number, heads: number): Float32Array {
  const headDim = rows / heads;
  const half = headDim / 2;
  const out = new Float32Array(values.length);
  for (let h = 0; h < heads; h++) {
    for (let i = 0; i < half; i++) {
      for (let t = 0; t < 2; t++) {
        const from = (h * headDim + 2 * i + t) * cols;
        const to = (h * headDim + t * half + i) * cols;
        out.set(values.subarray(from, from + cols), to);
      }
    }
  }
  return out;
}

describe('llama-gguf-tiny: every tensor equals the reference dequantization bit for bit', async () => {
  const file = await openGguf(MODEL);
  const reference = await openSafetensors(MODEL_DEQUANT);
  afterAll(async () => {
    await file.close();
    await reference.close();
  });
  const heads = file.metadata.get('llama.attention.head_count') as number;
  const kvHeads = file.metadata.get('llama.attention.head_count_kv') as number;

  it('names map one to one, with the types the README lists', () => {
    expect(heads).toBe(4);
    expect(kvHeads).toBe(2);
    expect([...file.tensors.keys()].map(transformersName).sort()).toEqual([...reference.tensors.keys()].sort());
    const types = Object.fromEntries([...file.tensors.values()].map((t) => [t.name.replace(/^blk\.\d+\./, ''), t.typeName]));
    expect(types).toEqual({
      'token_embd.weight': 'Q4_K', 'attn_q.weight': 'Q4_K', 'attn_k.weight': 'Q4_K', 'ffn_gate.weight': 'Q4_K', 'ffn_up.weight': 'Q4_K',
      'attn_output.weight': 'Q5_K', 'attn_v.weight': 'Q6_K', 'ffn_down.weight': 'Q6_K', 'output.weight': 'Q6_K',
      'attn_norm.weight': 'F32', 'ffn_norm.weight': 'F32', 'output_norm.weight': 'F32',
    });
  });

  it('the RoPE un-permutation helper is right (a permutation that a plain compare would catch)', () => {
    // 2 heads of dim 4, 1 column: GGUF rows [a0 b0 a1 b1] per head → transformers [a0 a1 b0 b1].
    expect([...unpermuteRope(new Float32Array([0, 1, 2, 3, 4, 5, 6, 7]), 8, 1, 2)]).toEqual([0, 2, 1, 3, 4, 6, 5, 7]);
  });

  it.each([
    'token_embd.weight', 'output_norm.weight', 'output.weight',
    ...[0, 1].flatMap((n) => ['attn_q', 'attn_k', 'attn_v', 'attn_output', 'ffn_gate', 'ffn_up', 'ffn_down', 'attn_norm', 'ffn_norm']
      .map((part) => `blk.${n}.${part}.weight`)),
  ])('%s', async (name) => {
    const info = file.tensor(name);
    const target = transformersName(name);
    expect(reference.tensor(target).shape).toEqual([...info.shape]);
    let values = await file.readF32(name);
    const [rows, cols] = [info.shape[0]!, info.shape[1] ?? 1];
    if (name.endsWith('attn_q.weight')) values = unpermuteRope(values, rows, cols, heads);
    if (name.endsWith('attn_k.weight')) values = unpermuteRope(values, rows, cols, kvHeads);
    expectBitExact(values, await reference.readF32(target), `${name} → ${target}`);
  });
});

// ---- (d) typed errors for hand-made bad files ---------------------------------------------

interface KvSpec {
  key: string;
  type: number;
  value: unknown;
  itemType?: number;
  nestedItemType?: number;
}
interface TensorSpec {
  name: string;
  dims: readonly (number | bigint)[];
  type: number;
  offset: number | bigint;
}

/** A little-endian byte writer for hand-made files. */
class Writer {
  #bytes = new Uint8Array(1024);
  #view = new DataView(this.#bytes.buffer);
  length = 0;

  #grow(n: number): number {
    if (this.length + n > this.#bytes.length) {
      const bigger = new Uint8Array(Math.max(this.#bytes.length * 2, this.length + n));
      bigger.set(this.#bytes);
      this.#bytes = bigger;
      this.#view = new DataView(bigger.buffer);
    }
    const at = this.length;
    this.length += n;
    return at;
  }
  /** Reserves n bytes and returns the view to write them through (after any growth). */
  #at(n: number): [DataView, number] {
    const at = this.#grow(n);
    return [this.#view, at];
  }
  u8(v: number): void { const [d, at] = this.#at(1); d.setUint8(at, v); }
  i8(v: number): void { const [d, at] = this.#at(1); d.setInt8(at, v); }
  u16(v: number): void { const [d, at] = this.#at(2); d.setUint16(at, v, true); }
  i16(v: number): void { const [d, at] = this.#at(2); d.setInt16(at, v, true); }
  u32(v: number): void { const [d, at] = this.#at(4); d.setUint32(at, v, true); }
  i32(v: number): void { const [d, at] = this.#at(4); d.setInt32(at, v, true); }
  f32(v: number): void { const [d, at] = this.#at(4); d.setFloat32(at, v, true); }
  f64(v: number): void { const [d, at] = this.#at(8); d.setFloat64(at, v, true); }
  u64(v: number | bigint): void { const [d, at] = this.#at(8); d.setBigUint64(at, BigInt(v), true); }
  i64(v: number | bigint): void { const [d, at] = this.#at(8); d.setBigInt64(at, BigInt(v), true); }
  raw(bytes: Uint8Array): void {
    const at = this.#grow(bytes.length); // before reading #bytes: growing replaces it
    this.#bytes.set(bytes, at);
  }
  str(s: string): void {
    const bytes = new TextEncoder().encode(s);
    this.u64(bytes.length);
    this.raw(bytes);
  }
  pad(alignment: number): void {
    while (this.length % alignment) this.u8(0);
  }
  bytes(): Uint8Array {
    return this.#bytes.slice(0, this.length);
  }
}

function writeValue(w: Writer, type: number, value: unknown, itemType?: number, nestedItemType?: number): void {
  switch (type) {
    case GgufValueType.UINT8: return w.u8(value as number);
    case GgufValueType.INT8: return w.i8(value as number);
    case GgufValueType.UINT16: return w.u16(value as number);
    case GgufValueType.INT16: return w.i16(value as number);
    case GgufValueType.UINT32: return w.u32(value as number);
    case GgufValueType.INT32: return w.i32(value as number);
    case GgufValueType.FLOAT32: return w.f32(value as number);
    case GgufValueType.BOOL: return w.u8(typeof value === 'number' ? value : value ? 1 : 0); // numbers: raw bytes, for bad files
    case GgufValueType.STRING: return w.str(value as string);
    case GgufValueType.UINT64: return w.u64(value as bigint);
    case GgufValueType.INT64: return w.i64(value as bigint);
    case GgufValueType.FLOAT64: return w.f64(value as number);
    case GgufValueType.ARRAY: {
      const items = value as unknown[];
      w.u32(itemType!);
      w.u64(items.length);
      for (const item of items) writeValue(w, itemType!, item, nestedItemType, nestedItemType);
      return;
    }
    default:
      // Types GGUF does not define: the caller passes the raw bytes to put there.
      if (value instanceof Uint8Array) return w.raw(value);
      throw new Error(`test writer: type ${type}`);
  }
}

/** Bytes a tensor of these dims takes (for laying out hand-made data sections). */
function tensorBytes(spec: TensorSpec): number {
  const type = ggmlTypeById(spec.type);
  if (!type) return 0;
  const elements = spec.dims.reduce<number>((a, b) => a * Number(b), 1);
  return (elements / type.blockSize) * type.typeSize;
}

/**
 * A GGUF file: header fields overridable for the bad cases, data section sized to hold every
 * tensor (or `dataBytes`), filled with a recognisable pattern.
 */
function buildGguf(options: {
  magic?: string; version?: number; tensorCount?: bigint; kvCount?: bigint;
  kvs?: KvSpec[]; tensors?: TensorSpec[]; alignment?: number; dataBytes?: number;
}): Uint8Array {
  const { kvs = [], tensors = [], alignment = 32 } = options;
  const w = new Writer();
  w.raw(new TextEncoder().encode(options.magic ?? 'GGUF'));
  w.u32(options.version ?? 3);
  w.u64(options.tensorCount ?? BigInt(tensors.length));
  w.u64(options.kvCount ?? BigInt(kvs.length));
  for (const kv of kvs) {
    w.str(kv.key);
    w.u32(kv.type);
    writeValue(w, kv.type, kv.value, kv.itemType, kv.nestedItemType);
  }
  for (const t of tensors) {
    w.str(t.name);
    w.u32(t.dims.length);
    for (const d of t.dims) w.u64(d);
    w.u32(t.type);
    w.u64(t.offset);
  }
  w.pad(alignment);
  const data = options.dataBytes ?? Math.max(0, ...tensors.map((t) => Number(t.offset) + tensorBytes(t)));
  const fill = new Uint8Array(data);
  for (let i = 0; i < data; i++) fill[i] = (i * 7) & 0x3f; // small values: valid floats, no NaN
  w.raw(fill);
  return w.bytes();
}

const NAME = 'bad.gguf';

/** Opens (and reads every tensor of) a hand-made file; returns the WeightsFormatError it must throw. */
async function formatError(bytes: Uint8Array): Promise<WeightsFormatError> {
  try {
    const file = await GgufFile.open(bytesSource(bytes, NAME));
    for (const name of file.tensors.keys()) await file.readF32(name);
  } catch (error) {
    expect(error).toBeInstanceOf(WeightsFormatError);
    const e = error as WeightsFormatError;
    expect(e.file).toBe(NAME);
    expect(e.message.startsWith(`${NAME}: ${e.problem}`)).toBe(true);
    return e;
  }
  throw new Error('expected a WeightsFormatError, but the file opened and read');
}

const ONE_F32 = { name: 'w', dims: [32, 2], type: GgmlType.F32, offset: 0 } satisfies TensorSpec;

describe('hand-made bad files are typed errors that name the file and the problem', () => {
  it('the well-formed base case opens and reads', async () => {
    const file = await GgufFile.open(bytesSource(buildGguf({ tensors: [ONE_F32] }), NAME));
    expect((await file.readF32('w')).length).toBe(64);
    expect(file.version).toBe(3);
  });

  it('version 2 opens too', async () => {
    const file = await GgufFile.open(bytesSource(buildGguf({ version: 2, tensors: [ONE_F32] }), NAME));
    expect(file.version).toBe(2);
  });

  it.each<[string, Parameters<typeof buildGguf>[0], string]>([
    ['bad magic', { magic: 'GGML', tensors: [ONE_F32] },
      'not a GGUF file: the magic is 47 47 4d 4c, expected 47 47 55 46 ("GGUF")'],
    ['version 1', { version: 1, tensors: [ONE_F32] },
      'GGUF version 1 is not supported (only versions 2 and 3)'],
    ['version 4', { version: 4, tensors: [ONE_F32] },
      'unsupported GGUF version 4 (only versions 2 and 3)'],
    ['big-endian', { version: 0x03000000, tensors: [ONE_F32] },
      'big-endian GGUF files are not supported'],
    ['tensor count too large for the file', { tensorCount: 2n ** 40n, tensors: [ONE_F32] },
      'tensor count 1099511627776 is more than the file can hold (each tensor info takes at least 32 bytes, 328 bytes follow the counts)'],
    ['tensor count u64 max', { tensorCount: 2n ** 64n - 1n, tensors: [ONE_F32] },
      'tensor count 18446744073709551615 is more than the file can hold (each tensor info takes at least 32 bytes, 328 bytes follow the counts)'],
    ['metadata count too large for the file', { kvCount: 1000n, tensors: [ONE_F32] },
      'metadata count 1000 is more than the file can hold (each entry takes at least 13 bytes, 328 bytes follow the counts)'],
    ['counts that fit alone but not together', { kvCount: 20n, tensorCount: 5n, tensors: [ONE_F32] },
      '20 metadata entries and 5 tensor infos are more than the file can hold (328 bytes follow the counts)'],
    ['misaligned tensor offset', { tensors: [{ ...ONE_F32, offset: 16 }] },
      'tensor "w": offset 16 is not a multiple of the alignment 32'],
    ['overlapping tensors', { tensors: [ONE_F32, { ...ONE_F32, name: 'v', offset: 128 }] },
      'tensors "w" [128, 384) and "v" [256, 512) overlap'],
    ['unknown tensor type', { tensors: [{ ...ONE_F32, type: 4 }] },
      'tensor "w": unknown ggml type 4'],
    ['data past the end of the file', { tensors: [ONE_F32], dataBytes: 255 },
      'tensor "w": data [96, 352) runs past the end of the file (351 bytes)'],
    ['a tensor larger than the file', { tensors: [{ ...ONE_F32, dims: [2n ** 20n, 2n ** 20n] }], dataBytes: 0 },
      'tensor "w": 1048576 × 1048576 F32 is 4398046511104 bytes, more than the whole file (96 bytes)'],
    ['element count beyond safe integers', { tensors: [{ ...ONE_F32, dims: [2n ** 32n, 2n ** 32n, 2n] }], dataBytes: 0 },
      'tensor "w": 4294967296 × 4294967296 × … elements is more than can be addressed'],
    ['u64 dim that is huge', { tensors: [{ ...ONE_F32, dims: [2n ** 64n - 1n] }], dataBytes: 0 },
      'tensor "w": 18446744073709551615 elements is more than can be addressed'],
    ['zero dimension', { tensors: [{ ...ONE_F32, dims: [32, 0] }] },
      'tensor "w": dimension 1 is 0 (every dimension must be at least 1)'],
    ['five dimensions', { tensors: [{ ...ONE_F32, dims: [1, 1, 1, 1, 1] }] },
      'tensor "w": 5 dimensions (GGUF tensors have 1 to 4)'],
    ['ne0 not a multiple of the block size', { tensors: [{ ...ONE_F32, type: GgmlType.Q4_0, dims: [48, 2] }] },
      'tensor "w": ne0 = 48 is not a multiple of Q4_0\'s block size 32'],
    ['duplicate tensor names', { tensors: [ONE_F32, { ...ONE_F32, offset: 256 }] },
      'tensor name "w" appears twice (the second at offset 65)'],
    ['duplicate metadata keys', {
      kvs: [{ key: 'a', type: GgufValueType.UINT8, value: 1 }, { key: 'a', type: GgufValueType.UINT8, value: 2 }], tensors: [ONE_F32],
    }, 'metadata key "a" appears twice (the second at offset 38)'],
    ['unknown metadata value type', { kvs: [{ key: 'a', type: 13, value: new Uint8Array([0]) }], tensors: [] },
      'metadata "a": unknown metadata value type 13 at offset 33'],
    ['general.alignment not a power of two', { kvs: [{ key: 'general.alignment', type: GgufValueType.UINT32, value: 48 }], tensors: [ONE_F32] },
      'general.alignment must be a u32 power of two, not 48'],
    ['general.alignment zero', { kvs: [{ key: 'general.alignment', type: GgufValueType.UINT32, value: 0 }], tensors: [ONE_F32] },
      'general.alignment must be a u32 power of two, not 0'],
    ['general.alignment as a u64', { kvs: [{ key: 'general.alignment', type: GgufValueType.UINT64, value: 32n }], tensors: [ONE_F32] },
      'general.alignment must be a u32 power of two, not a u64'],
    ['a boolean that is neither 0 nor 1', { kvs: [{ key: 'b', type: GgufValueType.BOOL, value: 2 }], tensors: [] },
      'metadata "b": boolean byte 2 at offset 37 is neither 0 nor 1'],
    ['arrays nested too deep', {
      kvs: [{ key: 'deep', type: GgufValueType.ARRAY, itemType: GgufValueType.ARRAY, nestedItemType: GgufValueType.ARRAY, value: [[[[]]]] }], tensors: [],
    }, 'metadata "deep"[0][0][0]: arrays nested more than 3 deep (at offset 76)'],
  ])('%s', async (_label, spec, problem) => {
    expect((await formatError(buildGguf(spec))).problem).toBe(problem);
  });

  it('string length past the end of the file (a key and a value)', async () => {
    const base = buildGguf({ kvs: [{ key: 'name', type: GgufValueType.STRING, value: 'tiny' }], tensors: [] });
    const view = new DataView(base.buffer);
    const key = base.slice();
    new DataView(key.buffer).setBigUint64(24, 2n ** 64n - 1n, true);
    expect((await formatError(key)).problem).toBe(
      'metadata key #0: length 18446744073709551615 bytes at offset 24 runs past the end of the file (64 bytes, 32 left)',
    );
    view.setBigUint64(24 + 8 + 4 + 4, 1000n, true);
    expect((await formatError(base)).problem).toBe(
      'metadata "name": length 1000 bytes at offset 40 runs past the end of the file (64 bytes, 16 left)',
    );
  });

  it('array length past the end of the file', async () => {
    const bytes = buildGguf({ kvs: [{ key: 'xs', type: GgufValueType.ARRAY, itemType: GgufValueType.UINT32, value: [1, 2] }], tensors: [] });
    new DataView(bytes.buffer).setBigUint64(24 + 8 + 2 + 4 + 4, 2n ** 62n, true);
    expect((await formatError(bytes)).problem).toBe(
      'metadata "xs" (array of u32): length 4611686018427387904 items of at least 4 bytes at offset 42 runs past the end of the file (64 bytes, 14 left)',
    );
  });

  it('a file cut inside the header', async () => {
    const cut = buildGguf({ tensors: [ONE_F32] }).subarray(0, 50);
    expect((await formatError(cut)).problem).toBe(
      'tensor count 1 is more than the file can hold (each tensor info takes at least 32 bytes, 26 bytes follow the counts)',
    );
    const value = buildGguf({ kvs: [{ key: 'a', type: GgufValueType.UINT32, value: 7 }], tensors: [] }).subarray(0, 39);
    expect((await formatError(value)).problem).toBe('the file ends at 39 bytes, inside metadata "a" (at offset 37, 4 bytes needed)');
    expect((await formatError(new Uint8Array(5))).problem).toBe('5 bytes is too short for a GGUF file');
  });

  it('invalid UTF-8 in a tensor name', async () => {
    const bytes = buildGguf({ tensors: [{ ...ONE_F32, name: 'x' }] });
    bytes[32] = 0xff;
    expect((await formatError(bytes)).problem).toBe('the name of tensor #0 at offset 32 is not valid UTF-8');
  });

  it('a type this reader cannot dequantize: the header opens, readRaw works, readF32 is a typed error', async () => {
    const bytes = buildGguf({ tensors: [{ name: 'iq', dims: [256], type: 16, offset: 0 }] });
    const file = await GgufFile.open(bytesSource(bytes, NAME));
    expect(file.tensor('iq').typeName).toBe('IQ2_XXS');
    expect((await file.readRaw('iq')).byteLength).toBe(66);
    await expect(file.readF32('iq')).rejects.toThrow(WeightsFormatError);
    await expect(file.readF32('iq')).rejects.toThrow('bad.gguf: tensor "iq" is IQ2_XXS, which this reader cannot dequantize');
  });

  it('a missing tensor is WeightsNotFoundError listing what there is', async () => {
    const file = await GgufFile.open(bytesSource(buildGguf({ tensors: [ONE_F32] }), NAME));
    expect(() => file.tensor('nope')).toThrow(WeightsNotFoundError);
    expect(() => file.tensor('nope')).toThrow('bad.gguf: no tensor "nope"');
    await expect(file.readRaw('nope')).rejects.toThrow(WeightsNotFoundError);
  });

  it('a nonexistent path is a typed error', async () => {
    await expect(openGguf('/nonexistent/x.gguf')).rejects.toThrow(WeightsFormatError);
  });
});

// ---- streaming: what opening costs --------------------------------------------------------

describe('the reader never loads a whole file', () => {
  /** A source that records every range read. */
  function recording(bytes: Uint8Array): ByteSource & { reads: [number, number][] } {
    const inner = bytesSource(bytes, 'recorded.gguf');
    const reads: [number, number][] = [];
    return {
      name: inner.name, size: inner.size, reads,
      readInto: (offset, target) => {
        reads.push([offset, target.length]);
        return inner.readInto(offset, target);
      },
      close: () => inner.close(),
    };
  }

  it('opening model.gguf (930 KB) reads one 64 KiB chunk; readRaw reads exactly the tensor', async () => {
    const bytes = fixtureBytes('llama-gguf-tiny', 'model.gguf');
    const source = recording(bytes);
    const allocator = new CountingAllocator();
    const file = await GgufFile.open(source, { allocator });
    expect(source.reads).toEqual([[0, CHUNK_BYTES]]);
    expect(allocator.total).toBe(CHUNK_BYTES);
    const info = file.tensor('blk.1.ffn_down.weight');
    await file.readRaw(info.name);
    expect(source.reads[1]).toEqual([info.offset, info.byteLength]);
    expect(allocator.largest).toBe(Math.max(CHUNK_BYTES, info.byteLength));
    expect(allocator.total).toBe(CHUNK_BYTES + info.byteLength);
  });

  it('every ggml type with a layout has a sane one', () => {
    for (const t of GGML_TYPES) {
      expect(t.blockSize === 1 || t.blockSize === 32 || t.blockSize === 256, t.name).toBe(true);
      expect(t.typeSize).toBeGreaterThan(0);
      expect(canDequantize(t.id)).toBe(t.dequantizable);
    }
  });
});
