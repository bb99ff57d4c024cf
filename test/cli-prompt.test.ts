// Text prompts: the tokenizer module (src/text/tokenizer.ts) on the test tokenizers made for the
// tiny fixtures (test/fixtures/tokenizers, see make-tokenizers.mjs there), and `multigpu run
// --prompt` on them. The CLI runs here compute on the cpu device: what is tested is the prompt's
// way through the CLI, which the device does not change, and a cpu run needs no pipeline
// compiles on SwiftShader (about 1 s a spawn instead of 15-25 s).
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openDevices } from '../src/devices/open.ts';
import { blobFolder } from '../src/formats/folder.ts';
import { openWeights } from '../src/formats/open-weights.ts';
import { readHostTensors } from '../src/runtime/host-tensors.ts';
import { loadModel } from '../src/runtime/model.ts';
import { loadTokenizer, TokenizerError, tokenizerFromFolder, type TextTokenizer } from '../src/text/tokenizer.ts';
import { cli } from './helpers.ts';
import { fixturePath } from './fixtures.ts';

const dir = mkdtempSync(join(tmpdir(), 'multigpu-prompt-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const tokenizerJson = (model: string) => readFileSync(fixturePath('tokenizers', model, 'tokenizer.json'), 'utf8');

/** A model folder as a user has it: the fixture's config and weights, and a tokenizer.json beside them. */
function modelWithTokenizer(model: string, tokenizer: string = tokenizerJson(model)): string {
  const to = join(dir, `${model}-${Math.random().toString(36).slice(2, 8)}`);
  mkdirSync(to);
  for (const f of ['config.json', 'model.safetensors']) copyFileSync(fixturePath(model, f), join(to, f));
  writeFileSync(join(to, 'tokenizer.json'), tokenizer);
  return to;
}

let llama: TextTokenizer;
let clip: TextTokenizer;
beforeAll(async () => {
  llama = await loadTokenizer(tokenizerJson('llama-tiny'));
  clip = await loadTokenizer(tokenizerJson('clip-text-tiny'));
});

/** Strings without the tokenizers' special-token spellings (those encode to the special ids, as in `tokenizers`). */
const plainText = (specials: readonly string[]) => fc.string({ unit: 'binary', maxLength: 40 }).filter((s) => !specials.some((t) => s.includes(t)));
const LLAMA_SPECIALS = ['<s>', '</s>', '<unk>', '\u2581']; // "▁" is Llama's space: it decodes as one, as in transformers
const CLIP_SPECIALS = ['<|startoftext|>', '<|endoftext|>'];

describe('the tokenizer module', () => {
  it('reads the test tokenizers: vocabularies that fit the tiny models, special tokens added as AutoTokenizer adds them', () => {
    expect(llama.vocabSize).toBe(256);
    expect([...llama.specialIds].sort()).toEqual([0, 1, 2]);
    const ids = llama.encode('the model');
    expect(ids[0]).toBe(1); // <s>, from the post-processor
    expect(llama.idToToken(ids[1]!)).toBe('▁the'); // a merge
    expect(llama.encode('the model', { addSpecialTokens: false })).toEqual(ids.slice(1));
    expect(llama.decode(ids)).toBe('<s> the model');
    expect(llama.decode(ids, { skipSpecialTokens: true })).toBe('the model');
    expect(llama.decode([])).toBe('');
    expect(llama.decode([999, ...ids.slice(1)])).toBe('the model'); // no such id: skipped
    expect(clip.vocabSize).toBe(512);
    const c = clip.encode('a photo of the model');
    expect([c[0], c[c.length - 1]]).toEqual([510, 511]);
  });

  it('decode(encode(s)) is s for any text without special-token spellings (fast-check)', () => {
    for (const [t, specials, vocab] of [[llama, LLAMA_SPECIALS, 256], [clip, CLIP_SPECIALS, 512]] as const) {
      fc.assert(fc.property(plainText(specials), (s) => {
        const ids = t.encode(s);
        expect(ids.every((id) => Number.isInteger(id) && id >= 0 && id < vocab)).toBe(true);
        expect(t.decode(ids, { skipSpecialTokens: true })).toBe(s);
      }), { numRuns: 200 });
    }
  });

  it('a decode stream gives, piece by piece, the text one decode of the whole sequence gives (fast-check)', () => {
    fc.assert(fc.property(plainText(LLAMA_SPECIALS), plainText(LLAMA_SPECIALS), (a, b) => {
      const prompt = llama.encode(a);
      const more = llama.encode(b, { addSpecialTokens: false });
      const stream = llama.decodeStream(prompt, { skipSpecialTokens: true });
      const pieces = more.map((id) => stream.push(id));
      pieces.push(stream.end());
      const whole = llama.decode([...prompt, ...more], { skipSpecialTokens: true });
      expect(stream.prompt).toBe(a);
      expect(stream.prompt + pieces.join('')).toBe(whole);
      expect(stream.text).toBe(pieces.join(''));
      // A character split over byte tokens comes out whole, never as U+FFFD halves.
      expect(pieces.join('').includes('\uFFFD')).toBe(whole.includes('\uFFFD'));
    }), { numRuns: 100 });
  });

  it('a malformed tokenizer.json is a TokenizerError naming the file and the reason', async () => {
    for (const [text, reason] of [
      ['{"model": ', /x\/tokenizer\.json: is not valid JSON/],
      ['[1, 2]', /x\/tokenizer\.json: is not a JSON object/],
      ['{"version": "1.0"}', /x\/tokenizer\.json: has no "model" object/],
      ['{"model": {"type": "Quantum", "vocab": 3}}', /x\/tokenizer\.json: has model type "Quantum", which @huggingface\/tokenizers does not run/],
      ['{"model": {"type": "BPE", "vocab": {"a": 0}, "merges": []}, "decoder": {"type": "Quantum"}}', /x\/tokenizer\.json: cannot be used: Unknown Decoder type: Quantum/],
      ['{"model": {"type": "BPE", "vocab": {"a": 0}, "merges": []}, "added_tokens": {}}', /"added_tokens" is not a list/],
    ] as const) {
      const error = await loadTokenizer(text, { file: 'x/tokenizer.json' }).then(() => null, (e: unknown) => e);
      expect(error, text).toBeInstanceOf(TokenizerError);
      expect((error as TokenizerError).code).toBe('E_TOKENIZER');
      expect((error as TokenizerError).file).toBe('x/tokenizer.json');
      expect((error as Error).message).toMatch(reason);
    }
  });

  it('finds tokenizer.json (and tokenizer_config.json) among picked files, as the browser demo has them', async () => {
    const files = new Map<string, Blob>([['config.json', new Blob(['{}'])], ['tokenizer.json', new Blob([tokenizerJson('llama-tiny')])],
      ['tokenizer_config.json', new Blob([JSON.stringify({ clean_up_tokenization_spaces: true, eos_token: { content: '</s>' } })])]]);
    const t = await tokenizerFromFolder(blobFolder('picked', files));
    expect(t?.file).toBe('picked/tokenizer.json');
    expect(t?.decode(t.encode('a , b'), { skipSpecialTokens: true })).toBe('a, b'); // the config's clean-up applies
    files.delete('tokenizer.json');
    expect(await tokenizerFromFolder(blobFolder('picked', files))).toBeNull();
  });
});

describe('multigpu run --prompt', () => {
  const PROMPT = 'the model runs on';

  it('a causal LM with a tokenizer.json: the continuation of the text, with the ids generate gives for the encoded prompt', async () => {
    const folder = modelWithTokenizer('llama-tiny');
    const r = await cli(['run', '--model', folder, '--prompt', PROMPT, '--tokens', '8', '--compute', 'cpu', '--progress'], { timeoutMs: 60_000 });
    expect(r.code, r.stderr).toBe(0);
    const ids = llama.encode(PROMPT);
    expect(r.stdout).toContain(`prompt: ${ids.length} tokens: ${ids.join(' ')}`);
    const printed = /generated: \d+ tokens: ([\d ]*)/.exec(r.stdout)![1]!.split(' ').map(Number);

    const devices = await openDevices({ cpuOnly: true });
    const weights = await openWeights(folder);
    let want: number[];
    try {
      const model = await loadModel(devices, weights, { compute: 'cpu' });
      try {
        const g = await model.generate(ids, 8);
        const eos = g.tokens.indexOf(2);
        want = eos < 0 ? g.tokens : g.tokens.slice(0, eos + 1); // transformers' generate stops at eos
      } finally {
        await model.unload();
      }
    } finally {
      await devices.close();
      await weights.close();
    }
    expect(printed).toEqual(want);
    // The text first: the prompt and its continuation, decoded together (special tokens left out).
    expect(r.stdout.startsWith(`${llama.decode([...ids, ...want], { skipSpecialTokens: true })}\n\n`)).toBe(true);
    expect(r.stdout).toMatch(/decode [\d.]+ ms \(\d+ tokens, [\d.]+ tokens\/s\)/);
    // --progress on a pipe: the bars' lines on stderr, none on stdout.
    expect(r.stderr).toMatch(/loading +\[█+\] 100% \| [\d.]+ KiB \/ [\d.]+ KiB \| [\d.]+ s/);
    expect(r.stderr).toMatch(/generating \[[█░]+\] +\d+% \| \d\/8 tokens/);
    expect(r.stdout).not.toMatch(/loading|generating|█/);

    // Token ids need no tokenizer (the fixture folder has none) and give the same tokens; no bars without --progress.
    const byIds = await cli(['run', '--model', fixturePath('llama-tiny'), '--prompt', ids.join(','), '--tokens', '8', '--compute', 'cpu'], { timeoutMs: 60_000 });
    expect(byIds.code, byIds.stderr).toBe(0);
    expect(byIds.stdout).toContain(`generated: ${want.length} tokens: ${want.join(' ')}`);
    expect(byIds.stderr).not.toMatch(/loading|generating/);
  }, 90_000);

  it('a text encoder: the outputs of the encoded text, and with the reference ids the reference outputs', async () => {
    const folder = modelWithTokenizer('clip-text-tiny');
    const out = join(dir, 'clip.safetensors');
    const text = 'a photo of the model';
    const r = await cli(['run', '--model', folder, '--prompt', text, '--compute', 'cpu', '--out', out], { timeoutMs: 60_000 });
    expect(r.code, r.stderr).toBe(0);
    const ids = clip.encode(text);
    const expected = await readHostTensors(fixturePath('clip-text-tiny', 'expected.safetensors'));
    const hidden = expected.get('last_hidden_state')!.shape.at(-1)!;
    expect(r.stdout).toContain(`input_ids [1, ${ids.length}]: ${ids.join(' ')}`);
    expect(r.stdout).toMatch(new RegExp(`last_hidden_state \\[1, ${ids.length}, ${hidden}\\]: mean -?[\\d.e-]+, std`));
    const got = await readHostTensors(out);
    expect([...got.get('input_ids')!.data]).toEqual(ids);
    expect(got.get('last_hidden_state')!.shape).toEqual([1, ids.length, hidden]);
    expect(got.get('pooler_output')!.shape).toEqual([1, hidden]);

    // input_ids[0] of the reference, as ids: last_hidden_state[0] of the reference.
    const ref = expected.get('input_ids')!;
    const L = ref.shape[1]!;
    const out2 = join(dir, 'clip-ids.safetensors');
    const r2 = await cli(['run', '--model', folder, '--prompt', [...ref.data.subarray(0, L)].join(','), '--compute', 'cpu', '--out', out2], { timeoutMs: 60_000 });
    expect(r2.code, r2.stderr).toBe(0);
    const a = (await readHostTensors(out2)).get('last_hidden_state')!;
    expect(a.shape).toEqual([1, L, hidden]);
    const b = [...expected.get('last_hidden_state')!.data.subarray(0, L * hidden)];
    const scale = Math.max(...b.map(Math.abs));
    expect(Math.max(...[...a.data].map((v, i) => Math.abs(v - b[i]!))) / scale).toBeLessThan(1e-3);
  }, 90_000);

  it('a text prompt without tokenizer.json, a broken tokenizer.json, a model that takes no prompt, and mixed forms exit 2 saying what to do', async () => {
    const noTokenizer = await cli(['run', '--model', fixturePath('llama-tiny'), '--prompt', 'hello there']);
    expect(noTokenizer.code).toBe(2);
    expect(noTokenizer.stderr).toMatch(/--prompt "hello there" is text, and .*llama-tiny has no tokenizer\.json to turn it into token ids \(looked for .*llama-tiny\/tokenizer\.json\)/);
    expect(noTokenizer.stderr).toMatch(/hint: put the model's tokenizer\.json .* beside its config\.json, or give token ids: --prompt 1,15043,3186/);
    expect(noTokenizer.stderr.trim().split('\n')).toHaveLength(2); // one paragraph, no stack

    const forcedText = await cli(['run', '--model', fixturePath('llama-tiny'), '--prompt', '1,2,3', '--text']);
    expect(forcedText.code).toBe(2);
    expect(forcedText.stderr).toMatch(/--prompt "1,2,3" is text/);

    const broken = await cli(['run', '--model', modelWithTokenizer('llama-tiny', '{"model": '), '--prompt', 'hello']);
    expect(broken.code).toBe(2);
    expect(broken.stderr).toMatch(/tokenizer\.json: is not valid JSON/);

    const vae = await cli(['run', '--model', fixturePath('vae-tiny'), '--prompt', '1,2,3']);
    expect(vae.code).toBe(2);
    expect(vae.stderr).toMatch(/sd-vae does not take a prompt/);

    const both = await cli(['run', '--model', fixturePath('llama-tiny'), '--prompt', '1,2', '--stage', 'a: model=x', '--out', join(dir, 'x.safetensors')]);
    expect(both.code).toBe(2);
    expect(both.stderr).toMatch(/run takes either --stage .* or --model\/--prompt .*, not both/);

    const neither = await cli(['run', '--out', join(dir, 'x.safetensors')]);
    expect(neither.code).toBe(2);
    expect(neither.stderr).toMatch(/run needs --prompt/);
  }, 60_000);
});
