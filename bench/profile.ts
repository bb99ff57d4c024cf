import { kernelProfile, resetKernelProfile, setKernelProfiling, type KernelTime } from '../src/kernels/profiler.ts';
import type { LoadedModel } from '../src/runtime/model.ts';

/**
 * GPU time per kernel of one decoded token: two profiled generations (prefill + 1 token, prefill
 * + 9 tokens), the difference over 8. Profiling gives each dispatch its own timed pass, so run it
 * apart from the timed generation.
 */
export async function decodeKernelProfile(model: LoadedModel, prompt: readonly number[]): Promise<KernelTime[]> {
  const profiled = async (tokens: number) => {
    resetKernelProfile();
    setKernelProfiling(true);
    try {
      await model.generate(prompt, tokens);
      return new Map((await kernelProfile()).map((k) => [k.label, k]));
    } finally {
      setKernelProfiling(false);
    }
  };
  const one = await profiled(2);
  const nine = await profiled(10);
  const rows: KernelTime[] = [];
  for (const [label, k] of nine) {
    const base = one.get(label);
    rows.push({ label, dispatches: (k.dispatches - (base?.dispatches ?? 0)) / 8, ms: (k.ms - (base?.ms ?? 0)) / 8 });
  }
  resetKernelProfile();
  return rows.filter((k) => k.dispatches > 0).sort((a, b) => b.ms - a.ms);
}
