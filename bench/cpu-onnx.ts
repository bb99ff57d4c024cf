/**
 * Tiny ONNX models for the CPU benchmark, written as protobuf bytes by hand (onnx.proto3's
 * field numbers), so the baseline needs no protobuf package: a MatMul with a constant
 * weight initializer, and com.microsoft's MatMulNBits (4-bit blocks, the Q4_0 equivalent).
 */

// ---- protobuf wire format -------------------------------------------------------------

class Pb {
  private readonly parts: Uint8Array[] = [];
  private length = 0;

  private push(bytes: Uint8Array): this {
    this.parts.push(bytes);
    this.length += bytes.length;
    return this;
  }

  private varint(value: number | bigint): this {
    let v = BigInt(value);
    if (v < 0n) v += 1n << 64n;
    const out: number[] = [];
    do {
      let byte = Number(v & 0x7fn);
      v >>= 7n;
      if (v > 0n) byte |= 0x80;
      out.push(byte);
    } while (v > 0n);
    return this.push(Uint8Array.from(out));
  }

  int(field: number, value: number | bigint): this {
    return this.varint(field << 3).varint(value);
  }

  bytes(field: number, value: Uint8Array): this {
    return this.varint((field << 3) | 2).varint(value.length).push(value);
  }

  string(field: number, value: string): this {
    return this.bytes(field, new TextEncoder().encode(value));
  }

  message(field: number, value: Pb): this {
    return this.bytes(field, value.finish());
  }

  finish(): Uint8Array {
    const out = new Uint8Array(this.length);
    let at = 0;
    for (const p of this.parts) {
      out.set(p, at);
      at += p.length;
    }
    return out;
  }
}

/** onnx.TensorProto.DataType values used here. */
export const OnnxType = { FLOAT: 1, UINT8: 2, FLOAT16: 10, BFLOAT16: 16 } as const;

function valueInfo(name: string, elemType: number, dims: readonly (number | string)[]): Pb {
  const shape = new Pb();
  for (const d of dims) shape.message(1, typeof d === 'number' ? new Pb().int(1, d) : new Pb().string(2, d));
  const tensorType = new Pb().int(1, elemType).message(2, shape);
  return new Pb().string(1, name).message(2, new Pb().message(1, tensorType));
}

function tensor(name: string, elemType: number, dims: readonly number[], raw: Uint8Array): Pb {
  const t = new Pb();
  for (const d of dims) t.int(1, d);
  return t.int(2, elemType).string(8, name).bytes(9, raw);
}

interface NodeSpec {
  readonly op: string;
  readonly domain?: string;
  readonly inputs: readonly string[];
  readonly outputs: readonly string[];
  readonly intAttributes?: Readonly<Record<string, number>>;
}

interface GraphSpec {
  readonly node: NodeSpec;
  readonly inputs: ReadonlyArray<{ name: string; type: number; dims: readonly (number | string)[] }>;
  readonly outputs: ReadonlyArray<{ name: string; type: number; dims: readonly (number | string)[] }>;
  readonly initializers: ReadonlyArray<{ name: string; type: number; dims: readonly number[]; raw: Uint8Array }>;
}

function model(spec: GraphSpec): Uint8Array {
  const node = new Pb();
  for (const i of spec.node.inputs) node.string(1, i);
  for (const o of spec.node.outputs) node.string(2, o);
  node.string(3, 'n0').string(4, spec.node.op);
  for (const [name, value] of Object.entries(spec.node.intAttributes ?? {})) {
    node.message(5, new Pb().string(1, name).int(3, value).int(20, 2 /* INT */));
  }
  if (spec.node.domain) node.string(7, spec.node.domain);
  const graph = new Pb().message(1, node).string(2, 'g');
  for (const t of spec.initializers) graph.message(5, tensor(t.name, t.type, t.dims, t.raw));
  for (const i of spec.inputs) graph.message(11, valueInfo(i.name, i.type, i.dims));
  for (const o of spec.outputs) graph.message(12, valueInfo(o.name, o.type, o.dims));
  const m = new Pb().int(1, 8 /* IR version 8 */).string(2, 'multigpu-web-bench');
  m.message(8, new Pb().string(1, '').int(2, 17));
  if (spec.node.domain) m.message(8, new Pb().string(1, spec.node.domain).int(2, 1));
  return m.message(7, graph).finish();
}

/** y[M, N] = x[M, K] · b[K, N], b a constant initializer of `type` (FLOAT, FLOAT16 or BFLOAT16 bytes). */
export function matmulModel(m: number, k: number, n: number, b: Uint8Array, type: number = OnnxType.FLOAT): Uint8Array {
  return model({
    node: { op: 'MatMul', inputs: ['x', 'b'], outputs: ['y'] },
    inputs: [{ name: 'x', type, dims: [m, k] }],
    outputs: [{ name: 'y', type, dims: [m, n] }],
    initializers: [{ name: 'b', type, dims: [k, n], raw: b }],
  });
}

/**
 * com.microsoft MatMulNBits, 4 bits, blocks of 32 along K, no zero points (so 8, as Q4_0):
 * y[M, N] = x[M, K] · dequant(b)ᵀ with b [N, K/32, 16] nibbles and scales [N·K/32] f32.
 */
export function matmulNBitsModel(m: number, k: number, n: number, b: Uint8Array, scales: Float32Array, accuracyLevel = 0): Uint8Array {
  const blocks = k / 32;
  return model({
    node: {
      op: 'MatMulNBits', domain: 'com.microsoft', inputs: ['x', 'b', 'scales'], outputs: ['y'],
      intAttributes: { K: k, N: n, bits: 4, block_size: 32, ...(accuracyLevel ? { accuracy_level: accuracyLevel } : {}) },
    },
    inputs: [{ name: 'x', type: OnnxType.FLOAT, dims: [m, k] }],
    outputs: [{ name: 'y', type: OnnxType.FLOAT, dims: [m, n] }],
    initializers: [
      { name: 'b', type: OnnxType.UINT8, dims: [n, blocks, 16], raw: b },
      { name: 'scales', type: OnnxType.FLOAT, dims: [n * blocks], raw: new Uint8Array(scales.buffer, scales.byteOffset, scales.byteLength) },
    ],
  });
}
