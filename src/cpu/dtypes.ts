/**
 * Weight layouts of the CPU device: the WGSL library's weight dtypes (src/kernels/tensor.ts),
 * decoded inside the WebAssembly kernels. Plain types (f32, f16, bf16, fp8) are stored as
 * panels of 8 rows (element (n, k) at ((n / 8)·K + k)·8 + n % 8, rows padded with zeros to
 * a multiple of 8) so one SIMD load reads 8 outputs' weights; GGUF blocks are stored byte
 * for byte as ggml lays them out.
 */

export type CpuWeightDtype =
  | 'f32' | 'f16' | 'bf16' | 'f8_e4m3' | 'f8_e5m2'
  | 'q8_0' | 'q4_0' | 'q4_1' | 'q5_0' | 'q5_1' | 'q4_k' | 'q5_k' | 'q6_k';

interface Layout {
  /** The kernels' type number (wasm/common.h). */
  readonly code: number;
  readonly blockElements: number;
  readonly blockBytes: number;
  readonly panels: boolean;
}

export const CPU_WEIGHT_LAYOUT: Readonly<Record<CpuWeightDtype, Layout>> = Object.freeze({
  f32: { code: 0, blockElements: 1, blockBytes: 4, panels: true },
  f16: { code: 1, blockElements: 1, blockBytes: 2, panels: true },
  bf16: { code: 2, blockElements: 1, blockBytes: 2, panels: true },
  f8_e4m3: { code: 3, blockElements: 1, blockBytes: 1, panels: true },
  f8_e5m2: { code: 4, blockElements: 1, blockBytes: 1, panels: true },
  q8_0: { code: 10, blockElements: 32, blockBytes: 34, panels: false },
  q4_0: { code: 11, blockElements: 32, blockBytes: 18, panels: false },
  q4_1: { code: 12, blockElements: 32, blockBytes: 20, panels: false },
  q5_0: { code: 13, blockElements: 32, blockBytes: 22, panels: false },
  q5_1: { code: 14, blockElements: 32, blockBytes: 24, panels: false },
  q4_k: { code: 15, blockElements: 256, blockBytes: 144, panels: false },
  q5_k: { code: 16, blockElements: 256, blockBytes: 176, panels: false },
  q6_k: { code: 17, blockElements: 256, blockBytes: 210, panels: false },
});

export const CPU_WEIGHT_DTYPES = Object.freeze(Object.keys(CPU_WEIGHT_LAYOUT) as CpuWeightDtype[]);

export function isCpuWeightDtype(value: unknown): value is CpuWeightDtype {
  return typeof value === 'string' && Object.hasOwn(CPU_WEIGHT_LAYOUT, value);
}

/** Bytes of an [n, k] weight as the checkpoint stores it (row-major, GGUF blocks along k). */
export function storedWeightBytes(dtype: CpuWeightDtype, n: number, k: number): number {
  const l = CPU_WEIGHT_LAYOUT[dtype];
  if (k % l.blockElements !== 0) throw new RangeError(`${dtype} weights need K to be a multiple of ${l.blockElements}, got ${k}`);
  return n * (k / l.blockElements) * l.blockBytes;
}

/** Bytes of rows [0, n) of an [n, k] weight as the kernels hold it (panels padded to 8 rows). */
export function residentWeightBytes(dtype: CpuWeightDtype, n: number, k: number): number {
  const l = CPU_WEIGHT_LAYOUT[dtype];
  return l.panels ? Math.ceil(n / 8) * 8 * k * l.blockBytes : storedWeightBytes(dtype, n, k);
}

/**
 * Writes rows [n0, n1) of a row-major [n, k] plain weight into `dst` as panels (rows past
 * n1 of the last panel are zero). `src` holds the whole stored tensor.
 */
export function packPanels(dtype: CpuWeightDtype, src: Uint8Array, k: number, n0: number, n1: number, dst: Uint8Array): void {
  const size = CPU_WEIGHT_LAYOUT[dtype].blockBytes;
  const rows = n1 - n0;
  const panels = Math.ceil(rows / 8);
  if (dst.byteLength !== panels * 8 * k * size) throw new RangeError('packPanels: destination size');
  // Aligned typed views of both sides (copy the source rows if its offset is unaligned).
  let s = src.subarray(n0 * k * size, n1 * k * size);
  if (s.byteOffset % size !== 0) s = s.slice();
  const pad = panels * 8 - rows;
  if (size === 4) permute(new Uint32Array(s.buffer, s.byteOffset, rows * k), new Uint32Array(dst.buffer, dst.byteOffset, panels * 8 * k), rows, k, pad);
  else if (size === 2) permute(new Uint16Array(s.buffer, s.byteOffset, rows * k), new Uint16Array(dst.buffer, dst.byteOffset, panels * 8 * k), rows, k, pad);
  else permute(s, dst, rows, k, pad);
}

function permute<T extends Uint32Array | Uint16Array | Uint8Array>(src: T, dst: T, rows: number, k: number, pad: number): void {
  for (let r = 0; r < rows; r++) {
    const base = (r >> 3) * k * 8 + (r & 7);
    const from = r * k;
    for (let c = 0; c < k; c++) dst[base + c * 8] = src[from + c]!;
  }
  if (pad > 0) {
    for (let r = rows; r < rows + pad; r++) {
      const base = (r >> 3) * k * 8 + (r & 7);
      for (let c = 0; c < k; c++) dst[base + c * 8] = 0;
    }
  }
}
