// `multigpu run`: several models in one invocation and one model manager, chained on named tensors.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { parseStage } from '../src/cli/run.ts';
import { openSafetensors } from '../src/formats/safetensors.ts';
import { writeSafetensorsFile } from '../src/formats/safetensors-writer.ts';
import { hostTensorToWrite } from '../src/runtime/host-tensors.ts';
import { UsageError } from '../src/errors.ts';
import { expectClose, expectedOf, TOLERANCE } from './models/harness.ts';
import type { HostTensor } from '../src/models/program.ts';
import { cli } from './helpers.ts';
import { fixturePath } from './fixtures.ts';

const dir = mkdtempSync(join(tmpdir(), 'multigpu-run-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const toWrite = hostTensorToWrite;

describe('parseStage', () => {
  it('reads name, keys and input links', () => {
    const s = parseStage('dec: model=models/vae alloc=gpu:0,50%;cpu,* mode=pipeline entry=decode keep=false in=latents<-enc.encoded_mean');
    expect(s).toMatchObject({ name: 'dec', model: 'models/vae', alloc: 'gpu:0,50%;cpu,*', mode: 'pipeline', entry: 'decode', keepLoaded: false });
    expect([...s.inputs]).toEqual([['latents', 'enc.encoded_mean']]);
    expect(parseStage('clip: model=x').keepLoaded).toBe(true);
  });

  it('says what is wrong with a stage and how to write one', () => {
    for (const [text, why] of [
      ['model=x', 'it does not start with a stage name and a colon'],
      ['a: alloc=gpu:0,*', 'model=PATH is missing'],
      ['a: model=x keep=maybe', 'keep=maybe: write keep=true or keep=false'],
      ['a: model=x color=red', 'unknown key "color"'],
      ['a: model=x in=latents', 'in=latents: write INPUT<-STAGE.OUTPUT'],
      ['a: model=x model=y', '"model" is given twice'],
    ] as const) {
      const err = (() => { try { parseStage(text); } catch (e) { return e; } })();
      expect(err, text).toBeInstanceOf(UsageError);
      expect((err as Error).message).toContain(why);
      expect((err as Error).message).toContain('hint: write a stage as "NAME: model=PATH');
    }
  });
});

describe('multigpu run', () => {
  it('runs a text encoder, a DiT and a VAE (encode, then decode of that) together; unloadAll keeps the kept ones', async () => {
    const clip = await expectedOf('clip-text-tiny');
    const flux = await expectedOf('flux-dit-tiny');
    const vae = await expectedOf('vae-tiny');
    const inputs = join(dir, 'in.safetensors');
    await writeSafetensorsFile(inputs, [
      toWrite('input_ids', clip.get('input_ids')!),
      ...['hidden_states', 'encoder_hidden_states', 'pooled_projections', 'timestep', 'img_ids', 'txt_ids', 'guidance'].map((n) => toWrite(n, flux.get(n)!)),
      toWrite('image', vae.get('image')!),
    ]);
    const out = join(dir, 'out.safetensors');
    const r = await cli(['run', '--inputs', inputs, '--out', out, '--log',
      '--stage', `clip: model=${fixturePath('clip-text-tiny')} alloc=gpu:0,50%;cpu,* mode=pipeline`,
      '--stage', `flux: model=${fixturePath('flux-dit-tiny')} alloc=gpu:0,50%;cpu,* mode=stream keep=false`,
      '--stage', `enc: model=${fixturePath('vae-tiny')} entry=encode`,
      '--stage', `dec: model=${fixturePath('vae-tiny')} entry=decode alloc=gpu:0,10%;cpu,* in=latents<-enc.encoded_mean`,
    ], { timeoutMs: 240_000 });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain('[CATEGORIZE_SUMMARY] kept_models: 3, models_to_unload: 1, total: 4');
    expect(r.stdout).toContain('[SELECTIVE_UNLOAD] Proceeding with selective unload: retaining 3, unloading 1');
    expect(r.stdout).toContain('[REMAINING_MODEL] 0: clip\n[REMAINING_MODEL] 1: enc\n[REMAINING_MODEL] 2: dec');
    expect(r.stdout).toContain('loaded after unloadAll: clip, enc, dec');
    const got = await openSafetensors(out);
    const read = async (name: string): Promise<HostTensor> => ({ data: await got.readF32(name), shape: [...got.tensors.get(name)!.shape] });
    try {
      expectClose(new Map([['last_hidden_state', await read('clip.last_hidden_state')]]), clip, ['last_hidden_state'], TOLERANCE.f32);
      expectClose(new Map([['sample', await read('flux.sample')]]), flux, ['sample'], TOLERANCE.f32);
      expectClose(new Map([['encoded_mean', await read('enc.encoded_mean')]]), vae, ['encoded_mean'], TOLERANCE.f32);
      expect(got.tensors.get('dec.decoded')!.shape).toEqual([1, 3, 16, 16]);
    } finally {
      await got.close();
    }
  }, 250_000);

  it('a link to a stage that has not run, and a missing input, exit 2 naming them', async () => {
    const a = await cli(['run', '--out', join(dir, 'x.safetensors'), '--stage', `dec: model=${fixturePath('vae-tiny')} entry=decode in=latents<-enc.encoded_mean`]);
    expect(a.code).toBe(2);
    expect(a.stderr).toMatch(/stage dec reads enc\.encoded_mean, but no earlier stage is named "enc"/);
    const b = await cli(['run', '--out', join(dir, 'x.safetensors'), '--stage', `clip: model=${fixturePath('clip-text-tiny')}`], { timeoutMs: 60_000 });
    expect(b.code).toBe(2);
    expect(b.stderr).toMatch(/stage clip needs input "input_ids" \(from file\.input_ids\), but no --inputs file was given/);
  }, 70_000);
});
