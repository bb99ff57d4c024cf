// Model folders, sharded checkpoints, ComfyUI single files, and the byte sources behind them.
import { createServer, type Server } from 'node:http';
import { copyFileSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isComfyCheckpoint, splitComfyCheckpoint } from '../src/formats/comfyui.ts';
import { WeightsFormatError, WeightsNotFoundError } from '../src/formats/errors.ts';
import { blobFolder } from '../src/formats/folder.ts';
import { chooseWeightsFile, openFolder, openWeights } from '../src/formats/open-weights.ts';
import { openSafetensors, SafetensorsFile } from '../src/formats/safetensors.ts';
import { writeSafetensorsFile, type TensorToWrite } from '../src/formats/safetensors-writer.ts';
import { blobSource, httpSource } from '../src/formats/source.ts';
import type { WeightSet } from '../src/formats/weights.ts';
import { fixtureBytes, FIXTURE_FOLDERS, fixturePath } from './fixtures.ts';

const tmp = () => mkdtempSync(join(tmpdir(), 'weights-'));

async function tensorsOf(set: WeightSet, prefix = ''): Promise<TensorToWrite[]> {
  const out: TensorToWrite[] = [];
  for (const t of set.tensors.values()) out.push({ name: prefix + t.name, dtype: t.dtype as TensorToWrite['dtype'], shape: t.shape, data: await t.readRaw() });
  return out;
}

async function expectSameTensors(actual: WeightSet, expected: WeightSet): Promise<void> {
  expect([...actual.tensors.keys()].sort()).toEqual([...expected.tensors.keys()].sort());
  for (const name of expected.tensors.keys()) {
    expect(Buffer.compare(Buffer.from(await actual.readRaw(name)), Buffer.from(await expected.readRaw(name))), name).toBe(0);
    expect(actual.tensor(name).shape).toEqual(expected.tensor(name).shape);
  }
}

describe('Hugging Face model folders', () => {
  it.each(FIXTURE_FOLDERS.filter((f) => f !== 'gguf-quant-vectors'))('%s opens with its config.json and the right weights file', async (folder) => {
    const set = await openWeights(fixturePath(folder));
    try {
      const config = JSON.parse(readFileSync(fixturePath(folder, 'config.json'), 'utf8'));
      expect(set.config).toEqual(config);
      const expectedFile = folder === 'llama-gguf-tiny' ? 'model.gguf' : 'model.safetensors';
      expect([...set.tensors.values()][0]!.file).toBe(fixturePath(folder, expectedFile));
      expect(set.byteLength).toBeGreaterThan(0);
    } finally {
      await set.close();
    }
  });

  it('a variant picks model.<variant>.safetensors; a missing one is a typed error that lists the files', async () => {
    const set = await openWeights(fixturePath('llama-tiny'), { variant: 'bf16' });
    expect([...set.tensors.values()].every((t) => t.dtype === 'BF16')).toBe(true);
    await set.close();
    const attempt = openWeights(fixturePath('llama-tiny'), { variant: 'fp8' });
    await expect(attempt).rejects.toThrow(WeightsNotFoundError);
    await expect(attempt).rejects.toThrow('no weights for variant "fp8"');
  });

  it('chooses like transformers and diffusers, and refuses to guess between several files', () => {
    expect(chooseWeightsFile(['config.json', 'model.safetensors', 'model.bf16.safetensors'])).toBe('model.safetensors');
    expect(chooseWeightsFile(['diffusion_pytorch_model.fp16.safetensors', 'diffusion_pytorch_model.safetensors'], 'fp16')).toBe('diffusion_pytorch_model.fp16.safetensors');
    expect(chooseWeightsFile(['model.safetensors.index.json', 'model-00001-of-00002.safetensors'])).toBe('model.safetensors.index.json');
    expect(chooseWeightsFile(['flux1-dev.safetensors'])).toBe('flux1-dev.safetensors');
    expect(chooseWeightsFile(['a.safetensors', 'b.safetensors'])).toBeNull();
    expect(chooseWeightsFile(['x.gguf'])).toBe('x.gguf');
  });

  it('a single file gets the config.json beside it; other files are typed errors', async () => {
    const set = await openWeights(fixturePath('gpt2-tiny', 'model.f16.safetensors'));
    expect(set.config).toMatchObject({ model_type: 'gpt2' });
    await set.close();
    await expect(openWeights(fixturePath('gpt2-tiny', 'config.json'))).rejects.toThrow('is not a .safetensors, .safetensors.index.json or .gguf file');
    await expect(openWeights('/nonexistent/model')).rejects.toThrow(WeightsFormatError);
  });

  it('files picked in a browser open the same way (Blob slices)', async () => {
    const folder = 't5-encoder-tiny';
    const files = new Map(['config.json', 'model.safetensors'].map((f) => [f, new Blob([fixtureBytes(folder, f)])]));
    const fromBlobs = await openFolder(blobFolder(folder, files));
    const fromDisk = await openWeights(fixturePath(folder));
    expect(fromBlobs.config).toEqual(fromDisk.config);
    await expectSameTensors(fromBlobs, fromDisk);
    await fromDisk.close();
  });
});

describe('sharded checkpoints (*.safetensors.index.json)', () => {
  async function shard(dir: string, weightMap: Record<string, string>, extra: Record<string, unknown> = {}): Promise<void> {
    const whole = await openWeights(fixturePath('llama-tiny'));
    const names = [...whole.tensors.keys()];
    const halves = [names.slice(0, 20), names.slice(20)];
    for (const [i, part] of halves.entries()) {
      const tensors = (await tensorsOf(whole)).filter((t) => part.includes(t.name));
      await writeSafetensorsFile(join(dir, `model-0000${i + 1}-of-00002.safetensors`), tensors, { format: 'pt' });
      for (const n of part) weightMap[n] ??= `model-0000${i + 1}-of-00002.safetensors`;
    }
    writeFileSync(join(dir, 'model.safetensors.index.json'), JSON.stringify({ metadata: { total_size: whole.byteLength }, weight_map: weightMap, ...extra }));
    copyFileSync(fixturePath('llama-tiny', 'config.json'), join(dir, 'config.json'));
    await whole.close();
  }

  it('reads the same tensors as the single file, from the shard the index names', async () => {
    const dir = tmp();
    await shard(dir, {});
    const sharded = await openWeights(dir);
    const single = await openWeights(fixturePath('llama-tiny'));
    expect(sharded.config).toEqual(single.config);
    expect(new Set([...sharded.tensors.values()].map((t) => t.file)).size).toBe(2);
    expect(sharded.metadata.get('total_size')).toBe(single.byteLength);
    await expectSameTensors(sharded, single);
    await sharded.close();
    await single.close();
  });

  it('an index that names a tensor its shard lacks is a typed error', async () => {
    const dir = tmp();
    await shard(dir, { 'model.ghost.weight': 'model-00001-of-00002.safetensors' });
    await expect(openWeights(dir)).rejects.toThrow('says tensor "model.ghost.weight" is in model-00001-of-00002.safetensors, but model-00001-of-00002.safetensors has no such tensor');
  });

  it('an index cannot reach outside its folder', async () => {
    const dir = tmp();
    await shard(dir, { 'lm_head.weight': '../../etc/passwd' });
    await expect(openWeights(dir)).rejects.toThrow('names file "../../etc/passwd", which is not a plain file name in this folder');
  });

  it('an index without weight_map, or not JSON, is a typed error', async () => {
    const dir = tmp();
    writeFileSync(join(dir, 'model.safetensors.index.json'), '{"metadata":{}}');
    await expect(openWeights(dir)).rejects.toThrow('has no "weight_map" object');
    writeFileSync(join(dir, 'model.safetensors.index.json'), '{"weight_map":');
    await expect(openWeights(dir)).rejects.toThrow(/model\.safetensors\.index\.json: is not valid JSON/);
  });
});

describe('ComfyUI single-file checkpoints', () => {
  const parts: Array<[string, string]> = [
    ['model.diffusion_model.', 'unet-tiny'],
    ['first_stage_model.', 'vae-tiny'],
    ['cond_stage_model.', 'clip-text-tiny'],
  ];
  const sdxlParts: Array<[string, string]> = [
    ['model.diffusion_model.', 'unet-tiny'],
    ['conditioner.embedders.0.', 'clip-text-tiny'],
    ['conditioner.embedders.1.', 't5-encoder-tiny'],
    ['text_encoders.clip_l.', 'clip-text-tiny'],
  ];

  it.each([['SD1-style', parts, ['model.diffusion_model', 'first_stage_model', 'cond_stage_model']],
    ['SDXL/Flux-style', sdxlParts, ['model.diffusion_model', 'conditioner.embedders.0', 'conditioner.embedders.1', 'text_encoders.clip_l']]] as const)(
    '%s: split by key prefix, each component reads exactly as the model it came from', async (_label, layout, names) => {
      const dir = tmp();
      const tensors: TensorToWrite[] = [{ name: 'alphas_cumprod', dtype: 'F32', shape: [2], data: new Float32Array([1, 0.5]) }];
      for (const [prefix, folder] of layout) {
        const set = await openWeights(fixturePath(folder));
        tensors.push(...await tensorsOf(set, prefix));
        await set.close();
      }
      const path = join(dir, 'checkpoint.safetensors');
      await writeSafetensorsFile(path, tensors);
      const checkpoint = await openWeights(path);
      expect(isComfyCheckpoint(checkpoint)).toBe(true);
      const components = splitComfyCheckpoint(checkpoint);
      expect([...components.keys()]).toEqual(names);
      for (const [prefix, folder] of layout) {
        const component = components.get(prefix.slice(0, -1))!;
        expect(component.kind).toBe(prefix.startsWith('model.') ? 'diffusion_model' : prefix.startsWith('first') ? 'vae' : 'text_encoder');
        const original = await openWeights(fixturePath(folder));
        await expectSameTensors(component.weights, original);
        await original.close();
      }
      await checkpoint.close();
    });

  it('a plain model is not a ComfyUI checkpoint', async () => {
    const set = await openWeights(fixturePath('llama-tiny'));
    expect(isComfyCheckpoint(set)).toBe(false);
    expect(splitComfyCheckpoint(set).size).toBe(0);
    await set.close();
  });
});

describe('byte sources', () => {
  let server: Server;
  let base = '';
  const body = fixtureBytes('gpt2-tiny', 'expected.safetensors');
  beforeAll(async () => {
    server = createServer((req, res) => {
      const range = /bytes=(\d+)-(\d+)/.exec(req.headers.range ?? '');
      if (req.url === '/norange' || !range) {
        res.writeHead(200, { 'content-length': body.length });
        res.end(Buffer.from(body));
        return;
      }
      const [start, end] = [Number(range[1]), Math.min(Number(range[2]), body.length - 1)];
      res.writeHead(206, { 'content-range': `bytes ${start}-${end}/${body.length}`, 'content-length': end - start + 1 });
      res.end(Buffer.from(body.subarray(start, end + 1)));
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    base = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
  });
  afterAll(() => new Promise<void>((resolve) => server.close(() => resolve())));

  it('HTTP Range and Blob slices read the same tensors as the file handle', async () => {
    const disk = await openSafetensors(fixturePath('gpt2-tiny', 'expected.safetensors'));
    const http = await SafetensorsFile.open(await httpSource(`${base}/expected.safetensors`));
    const blob = await SafetensorsFile.open(blobSource(new Blob([body]), 'expected.safetensors'));
    for (const name of disk.tensors.keys()) {
      const want = Buffer.from(await disk.read(name));
      expect(Buffer.compare(Buffer.from(await http.read(name)), want)).toBe(0);
      expect(Buffer.compare(Buffer.from(await blob.read(name)), want)).toBe(0);
    }
    await disk.close();
  });

  it('a server without Range support is a typed error, not a whole download', async () => {
    await expect(httpSource(`${base}/norange`)).rejects.toThrow('the server does not answer range requests (HTTP 200)');
  });

  it('reads past the end are typed errors', async () => {
    const source = blobSource(new Blob([new Uint8Array(10)]), 'ten');
    await expect(source.readInto(8, new Uint8Array(4))).rejects.toThrow('ten: read of 4 bytes at offset 8 is past the end of the file (10 bytes)');
  });
});
