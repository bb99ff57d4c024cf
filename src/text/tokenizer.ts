/**
 * Text ↔ token ids through a Hugging Face `tokenizer.json`, with the pure-JavaScript
 * `@huggingface/tokenizers` (Node, Deno and browsers alike: no Node imports here). Encoding adds
 * the tokenizer's special tokens through its post-processor, as transformers' AutoTokenizer does
 * by default (Llama's <s>, CLIP's <|startoftext|> … <|endoftext|>, T5's </s>).
 */
import { MultiGpuError } from '../errors.ts';
import type { FileProvider } from '../formats/folder.ts';

/** A tokenizer.json (or its tokenizer_config.json) that cannot be read or is not one this library can run. */
export class TokenizerError extends MultiGpuError {
  readonly file: string;
  readonly reason: string;

  constructor(file: string, reason: string, options: { hint?: string; cause?: unknown } = {}) {
    super('E_TOKENIZER', `${file}: ${reason}`, {
      hint: options.hint ?? 'use the tokenizer.json that came with the model (the `tokenizers` library\'s format, "version": "1.0")',
      cause: options.cause,
    });
    this.file = file;
    this.reason = reason;
  }
}

export interface DecodeOptions {
  /** Leave out the tokenizer's special tokens (<s>, </s>, <|endoftext|>, …). Default false, as in transformers. */
  readonly skipSpecialTokens?: boolean;
}

/**
 * Text printed as tokens arrive: each push gives the text those ids add, holding back a
 * character whose UTF-8 bytes are not all there yet (byte-fallback and byte-level tokenizers
 * split characters over tokens); end() gives what is still held back.
 */
export interface DecodeStream {
  /** The prompt's ids, decoded: the text the stream continues. */
  readonly prompt: string;
  push(id: number): string;
  end(): string;
  /** All the text after the prompt so far (what push and end returned, together). */
  readonly text: string;
}

export interface TextTokenizer {
  /** One more than the largest id the tokenizer can produce or decode: the embedding rows it needs. */
  readonly vocabSize: number;
  /** Ids of the special (added) tokens. */
  readonly specialIds: ReadonlySet<number>;
  /** Where it came from, for messages. */
  readonly file: string;
  /** Ids with the tokenizer's special tokens (addSpecialTokens: false leaves them out). */
  encode(text: string, options?: { readonly addSpecialTokens?: boolean }): number[];
  /** Text of the ids; ids the tokenizer has no token for are skipped, as the `tokenizers` library skips them. */
  decode(ids: readonly number[], options?: DecodeOptions): string;
  /** A stream that decodes a continuation of `prompt` as its tokens arrive. */
  decodeStream(prompt: readonly number[], options?: DecodeOptions): DecodeStream;
  tokenToId(token: string): number | undefined;
  idToToken(id: number): string | undefined;
}

type Hf = import('@huggingface/tokenizers').Tokenizer;

class HfTextTokenizer implements TextTokenizer {
  readonly vocabSize: number;
  readonly specialIds: ReadonlySet<number>;
  readonly file: string;
  readonly #t: Hf;

  constructor(t: Hf, file: string) {
    this.#t = t;
    this.file = file;
    let max = -1;
    for (const id of t.get_vocab(true).values()) max = Math.max(max, id);
    this.vocabSize = max + 1;
    this.specialIds = new Set([...t.get_added_tokens_decoder()].filter(([, a]) => a.special).map(([id]) => id));
  }

  encode(text: string, options: { readonly addSpecialTokens?: boolean } = {}): number[] {
    if (typeof text !== 'string') throw new TypeError(`encode takes a string, got ${typeof text}`);
    return this.#t.encode(text, { add_special_tokens: options.addSpecialTokens ?? true }).ids;
  }

  decode(ids: readonly number[], options: DecodeOptions = {}): string {
    const known = ids.filter((id) => Number.isInteger(id) && this.#t.id_to_token(id) !== undefined);
    if (known.length === 0) return '';
    return this.#t.decode(known, { skip_special_tokens: options.skipSpecialTokens ?? false });
  }

  decodeStream(prompt: readonly number[], options: DecodeOptions = {}): DecodeStream {
    const ids = [...prompt];
    const promptText = this.decode(ids, options);
    // Decoding all ids each time keeps the text exactly what one decode of the whole sequence
    // gives (decoders such as Llama's strip a leading space, which a window would get wrong).
    let emitted = promptText.length;
    let all = promptText;
    const take = (final: boolean): string => {
      all = this.decode(ids, options);
      const ready = final ? all.length : all.endsWith('\uFFFD') ? all.length - 1 : all.length;
      if (ready <= emitted) return '';
      const piece = all.slice(emitted, ready);
      emitted = ready;
      return piece;
    };
    return {
      prompt: promptText,
      push(id: number) {
        ids.push(id);
        return take(false);
      },
      end: () => take(true),
      get text() {
        return all.slice(promptText.length, emitted);
      },
    };
  }

  tokenToId(token: string): number | undefined {
    return this.#t.token_to_id(token);
  }

  idToToken(id: number): string | undefined {
    return this.#t.id_to_token(id);
  }
}

function parseJson(text: string, file: string): Record<string, unknown> {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (cause) {
    throw new TokenizerError(file, `is not valid JSON (${(cause as Error).message})`, { cause });
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) throw new TokenizerError(file, 'is not a JSON object');
  return parsed as Record<string, unknown>;
}

/** The `model.type` values of a tokenizer.json that @huggingface/tokenizers 0.2 implements. */
const MODEL_TYPES = ['BPE', 'WordPiece', 'Unigram'];

/** tokenizer_config.json spells tokens as strings or as AddedToken objects; the library reads strings. */
function tokenizerConfig(config: Record<string, unknown>): Record<string, unknown> {
  const content = (v: unknown) => (typeof v === 'object' && v !== null && typeof (v as { content?: unknown }).content === 'string' ? (v as { content: string }).content : v);
  const out: Record<string, unknown> = { ...config };
  for (const key of ['bos_token', 'eos_token', 'unk_token', 'pad_token', 'sep_token', 'cls_token', 'mask_token']) if (key in out) out[key] = content(out[key]);
  if (Array.isArray(out.additional_special_tokens)) out.additional_special_tokens = out.additional_special_tokens.map(content);
  return out;
}

/**
 * A tokenizer from the text (or parsed object) of a tokenizer.json; `config` is the model's
 * tokenizer_config.json when it has one (clean_up_tokenization_spaces and the like; without it
 * decoding leaves spaces as they are, as the `tokenizers` library does).
 */
export async function loadTokenizer(json: string | object, options: { readonly config?: object | string; readonly file?: string } = {}): Promise<TextTokenizer> {
  const file = options.file ?? 'tokenizer.json';
  const data = typeof json === 'string' ? parseJson(json, file) : json as Record<string, unknown>;
  if (typeof data !== 'object' || data === null || Array.isArray(data)) throw new TokenizerError(file, 'is not a JSON object');
  const configFile = file.replace(/[^/\\]*$/, 'tokenizer_config.json');
  const config = tokenizerConfig(typeof options.config === 'string' ? parseJson(options.config, configFile) : (options.config ?? {}) as Record<string, unknown>);
  const model = data.model as Record<string, unknown> | null | undefined;
  if (typeof model !== 'object' || model === null) throw new TokenizerError(file, 'has no "model" object (is it a tokenizer.json?)');
  if (model.type !== undefined && !MODEL_TYPES.includes(model.type as string)) {
    throw new TokenizerError(file, `has model type ${JSON.stringify(model.type)}, which @huggingface/tokenizers does not run (it runs ${MODEL_TYPES.join(', ')})`, {
      hint: 'pass token ids instead of text',
    });
  }
  if (data.added_tokens !== undefined && !Array.isArray(data.added_tokens)) throw new TokenizerError(file, '"added_tokens" is not a list');
  // The library reads these keys without checking them: give it what a tokenizer.json always has.
  const full = { normalizer: null, pre_tokenizer: null, post_processor: null, decoder: null, added_tokens: [], ...data };
  let Tokenizer: typeof import('@huggingface/tokenizers').Tokenizer;
  try {
    ({ Tokenizer } = await import('@huggingface/tokenizers'));
  } catch (cause) {
    throw new TokenizerError(file, `cannot load @huggingface/tokenizers (${(cause as Error).message})`, { cause, hint: 'install the package (npm install @huggingface/tokenizers)' });
  }
  let t: Hf;
  try {
    t = new Tokenizer(full, { clean_up_tokenization_spaces: false, ...config });
    t.encode('a');
  } catch (cause) {
    throw new TokenizerError(file, `cannot be used: ${(cause as Error).message} (model type ${JSON.stringify(model.type ?? 'none')})`, {
      cause, hint: 'the file is corrupt, or uses a part @huggingface/tokenizers does not implement: pass token ids instead',
    });
  }
  return new HfTextTokenizer(t, file);
}

/** tokenizer.json files are a few MB (Llama 3: 9 MB, Gemma: 34 MB); above this one is not a tokenizer. */
const MAX_TOKENIZER_BYTES = 256 * 1024 * 1024;

async function readText(provider: FileProvider, file: string): Promise<string> {
  const source = await provider.open(file);
  try {
    if (source.size > MAX_TOKENIZER_BYTES) throw new TokenizerError(source.name, `is ${source.size} bytes, over the ${MAX_TOKENIZER_BYTES}-byte limit for a tokenizer file`);
    const bytes = new Uint8Array(source.size);
    await source.readInto(0, bytes);
    try {
      return new TextDecoder('utf-8', { fatal: true }).decode(bytes);
    } catch (cause) {
      throw new TokenizerError(source.name, 'is not UTF-8 text', { cause });
    }
  } finally {
    await source.close();
  }
}

/**
 * The tokenizer of a model folder (a directory through nodeFolder, or the files a user picked
 * through blobFolder): tokenizer.json, with tokenizer_config.json when it is there. Null when the
 * folder has no tokenizer.json.
 */
export async function tokenizerFromFolder(provider: FileProvider): Promise<TextTokenizer | null> {
  const files = await provider.list();
  if (!files.includes('tokenizer.json')) return null;
  const json = await readText(provider, 'tokenizer.json');
  const config = files.includes('tokenizer_config.json') ? await readText(provider, 'tokenizer_config.json') : undefined;
  const base = provider.name.replace(/[/\\]+$/, '');
  return loadTokenizer(json, { config, file: `${base}/tokenizer.json` });
}
