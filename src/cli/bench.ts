import { UsageError } from '../errors.ts';
import { formatTable } from './table.ts';

/** The benchmarks `multigpu bench` runs: bench/<name>.ts, built to dist/bench/<name>.js. */
export const BENCHMARKS: Readonly<Record<string, string>> = Object.freeze({
  matmul: 'f32 / f16 / subgroup-matrix matmul (4096³) and decode shapes against PyTorch on the same GPU',
  gemv: 'batch-1 GEMV bandwidth over rotating bf16 weight matrices against PyTorch',
  attention: 'attention at sequence 4096 against PyTorch scaled_dot_product_attention',
  'cpu-matmul': 'WebAssembly SIMD matmul and GEMV against onnxruntime-web (and onnxruntime-node) on this CPU',
});

interface BenchRow {
  readonly metric: string;
  readonly ours: number;
  readonly baseline: number;
  readonly ratio: number;
  readonly unit: string;
}

const fmt = (n: number) => (Number.isFinite(n) ? (Math.abs(n) >= 100 ? n.toFixed(0) : n.toPrecision(3)) : '-');

/**
 * `multigpu bench <name> [--out file.json]`: runs one benchmark module's `run()`, which
 * checks every output before timing it, and prints its rows (ours, baseline, ratio).
 */
export async function benchCommand(name: string | undefined, out: string | undefined): Promise<string> {
  if (!name || !Object.hasOwn(BENCHMARKS, name)) {
    throw new UsageError(`bench needs one of: ${Object.keys(BENCHMARKS).join(', ')}${name ? ` (got "${name}")` : ''}`, {
      hint: Object.entries(BENCHMARKS).map(([k, v]) => `${k}: ${v}`).join('; '),
    });
  }
  const module = await import(new URL(`../../bench/${name}.js`, import.meta.url).href) as {
    run(options: { out?: string }): Promise<{ device: string; rows: readonly BenchRow[] }>;
  };
  const report = await module.run({ out });
  return [`${name} on ${report.device}`, '',
    formatTable(['metric', 'ours', 'baseline', 'ratio', 'unit'], report.rows.map((r) => [r.metric, fmt(r.ours), fmt(r.baseline), fmt(r.ratio), r.unit])),
  ].join('\n');
}
