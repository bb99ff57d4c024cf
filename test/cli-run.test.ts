// `multigpu generate` (the README's main command) and `multigpu forward`, as a user runs them.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { openSafetensors } from '../src/formats/safetensors.ts';
import { writeSafetensorsFile } from '../src/formats/safetensors-writer.ts';
import { cli } from './helpers.ts';
import { fixturePath } from './fixtures.ts';

const dir = mkdtempSync(join(tmpdir(), 'multigpu-cli-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('multigpu generate', () => {
  it('runs the bundled tiny Llama over gpu:0 and cpu: placement, tokens equal to transformers\' greedy ones, timings', async () => {
    const r = await cli(['generate'], { timeoutMs: 120_000 });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/allocation "gpu:0,50%;cpu,\*"/);
    expect(r.stdout).toMatch(/layers\.1 .* cpu /);
    expect(r.stdout).toMatch(/generated: 174 107 107 107 109 98 18 6/);
    expect(r.stdout).toMatch(/identical/);
    expect(r.stdout).toMatch(/prefill [\d.]+ ms \(11 tokens\), decode [\d.]+ ms/);
  }, 130_000);

  it('bad --prompt and --tokens exit 2 with one paragraph', async () => {
    const a = await cli(['generate', '--prompt', '1,x']);
    expect(a.code).toBe(2);
    expect(a.stderr).toMatch(/--prompt "1,x" is not a list of token ids\n  hint: give non-negative integers/);
    const b = await cli(['generate', '--tokens', '0']);
    expect(b.code).toBe(2);
    expect(b.stderr).toMatch(/--tokens "0" is not a positive integer/);
  });
});

describe('multigpu forward', () => {
  it('writes the reference-named outputs and greedy_tokens of a causal LM, split over gpu:0 and cpu in pipeline mode', async () => {
    const out = join(dir, 'llama.safetensors');
    const r = await cli(['forward', '--model', fixturePath('llama-tiny'), '--inputs', fixturePath('llama-tiny', 'expected.safetensors'),
      '--out', out, '--alloc', 'gpu:0,50%;cpu,*', '--mode', 'pipeline'], { timeoutMs: 120_000 });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/wrote 7 tensors .*logits, hidden_states\.0/);
    const got = await openSafetensors(out);
    const ref = await openSafetensors(fixturePath('llama-tiny', 'expected.safetensors'));
    try {
      expect(got.tensors.get('logits')!.dtype).toBe('F32');
      expect([...await got.readF32('greedy_tokens')]).toEqual([...await ref.readF32('greedy_tokens')]);
      const a = await got.readF32('logits');
      const b = await ref.readF32('logits');
      const scale = Math.max(...b.map(Math.abs));
      expect(Math.max(...a.map((v, i) => Math.abs(v - b[i]!))) / scale).toBeLessThan(1e-3);
    } finally {
      await got.close();
      await ref.close();
    }
  }, 130_000);

  it('inputs no entry takes, and missing options, exit 2 naming what the model wants', async () => {
    const bad = join(dir, 'bad.safetensors');
    await writeSafetensorsFile(bad, [{ name: 'tokens', dtype: 'I64', shape: [1, 2], data: BigInt64Array.of(1n, 2n) }]);
    const r = await cli(['forward', '--model', fixturePath('llama-tiny'), '--inputs', bad, '--out', join(dir, 'x.safetensors')], { timeoutMs: 60_000 });
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/holds tokens, which no entry of llama takes \(forward: input_ids\)/);
    const m = await cli(['forward', '--model', fixturePath('llama-tiny')]);
    expect(m.code).toBe(2);
    expect(m.stderr).toMatch(/forward needs --model <folder\|file> --inputs <file.safetensors> --out <file.safetensors>/);
  }, 70_000);
});
