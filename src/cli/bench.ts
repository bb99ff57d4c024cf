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
 * `multigpu bench <name> [--out file.json]`: runs the benchmark script (which checks every
 * output before timing it) in a process of its own, as on the GPU machines, then prints its
 * rows (ours, baseline, ratio) from the results file it wrote.
 */
export async function benchCommand(name: string | undefined, out: string | undefined): Promise<string> {
  if (!name || !Object.hasOwn(BENCHMARKS, name)) {
    throw new UsageError(`bench needs one of: ${Object.keys(BENCHMARKS).join(', ')}${name ? ` (got "${name}")` : ''}`, {
      hint: Object.entries(BENCHMARKS).map(([k, v]) => `${k}: ${v}`).join('; '),
    });
  }
  const { spawnSync } = await import('node:child_process');
  const { readFileSync, mkdtempSync } = await import('node:fs');
  const { tmpdir } = await import('node:os');
  const { join } = await import('node:path');
  const { fileURLToPath } = await import('node:url');
  const file = out ?? join(mkdtempSync(join(tmpdir(), 'multigpu-bench-')), `${name}.json`);
  const script = fileURLToPath(new URL(`../../bench/${name}.js`, import.meta.url));
  const child = spawnSync(process.execPath, [script, '--out', file], { stdio: ['ignore', 'inherit', 'inherit'] });
  if (child.status !== 0) throw new Error(`bench ${name} exited with ${child.status ?? child.signal}`);
  const report = JSON.parse(readFileSync(file, 'utf8')) as { device: string; rows: readonly BenchRow[] };
  return [`${name} on ${report.device}`, '',
    formatTable(['metric', 'ours', 'baseline', 'ratio', 'unit'], report.rows.map((r) => [r.metric, fmt(r.ours), fmt(r.baseline), fmt(r.ratio), r.unit])),
  ].join('\n');
}
