// The model manager (SPEC §4): several fixture models loaded together, selective unload,
// eviction under memory pressure, freeAll, and lost devices re-planned.
import { afterAll, describe, expect, it } from 'vitest';
import { openDevices } from '../src/devices/open.ts';
import type { DeviceSet } from '../src/devices/device-set.ts';
import { openWeights } from '../src/formats/open-weights.ts';
import { ManagerCapacityError, ModelManager, ModelUnusableError, allocationWithout } from '../src/manager/index.ts';
import type { HostTensor } from '../src/models/program.ts';
import { expectedOf, expectClose, expectIdentical, TOLERANCE } from './models/harness.ts';
import { fixturePath } from './fixtures.ts';
import { SWIFTSHADER } from './helpers.ts';

const sets: DeviceSet[] = [];
afterAll(async () => {
  for (const s of sets) await s.close();
});
async function devices(options: Parameters<typeof openDevices>[0] = {}): Promise<DeviceSet> {
  const s = await openDevices(options);
  sets.push(s);
  return s;
}

const ledgers = (set: DeviceSet) => Object.fromEntries(set.devices.map((d) => [d.name, d.ledger.used]));

async function inputsOf(fixture: string, names: readonly string[]): Promise<Map<string, HostTensor>> {
  const e = await expectedOf(fixture);
  return new Map(names.map((n) => [n, e.get(n)!]));
}

const CLIP_IN = ['input_ids'];
const FLUX_IN = ['hidden_states', 'encoder_hidden_states', 'pooled_projections', 'timestep', 'img_ids', 'txt_ids', 'guidance'];

describe('allocationWithout', () => {
  it('drops the lost device and gives its remainder to cpu', () => {
    expect(allocationWithout('gpu:0,50%;gpu:1,*', new Set(['gpu:1']))).toBe('gpu:0,50%;cpu,*');
    expect(allocationWithout('gpu:0,2gb;gpu:1,2gb;cpu,*', new Set(['gpu:0']))).toBe('gpu:1,2gb;cpu,*');
    expect(allocationWithout('gpu:1,50%;cpu,25%', new Set(['gpu:1']))).toBe('cpu,*');
    expect(allocationWithout('gpu:0,*', new Set())).toBe('gpu:0,*');
    expect(allocationWithout('', new Set(['gpu:0']))).toBe('');
  });
});

describe('ModelManager', () => {
  it('unloadAll frees exactly the unkept model\'s bytes on every device; the kept ones give identical outputs afterwards', async () => {
    const set = await devices();
    const lines: string[] = [];
    const manager = new ModelManager(set, { log: (l) => lines.push(l) });
    const base = ledgers(set);
    try {
      await manager.load('clip', await openWeights(fixturePath('clip-text-tiny')), { allocation: 'gpu:0,50%;cpu,*', mode: 'pipeline' });
      const afterClip = ledgers(set);
      await manager.load('flux', await openWeights(fixturePath('flux-dit-tiny')), { allocation: 'gpu:0,50%;cpu,*', mode: 'stream', keepLoaded: false });
      const afterFlux = ledgers(set);
      await manager.load('vae', await openWeights(fixturePath('vae-tiny')), { allocation: 'gpu:0,100%' });
      const afterAll3 = ledgers(set);
      const clipIn = await inputsOf('clip-text-tiny', CLIP_IN);
      const before = (await manager.forward('clip', clipIn)).outputs;
      const latents = await inputsOf('vae-tiny', ['latents']);
      const vaeBefore = (await manager.forward('vae', latents, 'decode')).outputs;
      const fluxOut = (await manager.forward('flux', await inputsOf('flux-dit-tiny', FLUX_IN))).outputs;
      expectClose(fluxOut, await expectedOf('flux-dit-tiny'), ['sample'], TOLERANCE.f32);

      // What flux holds: its weights (device buffers on gpu:0, host-visible copies on the cpu
      // ledger), the staging area its stream runs pooled, its RoPE table.
      const flux = manager.model('flux').heldBytes();
      expect(flux.cpu).toBeGreaterThan(0);
      expect(flux['gpu:0']!).toBeGreaterThanOrEqual(afterFlux['gpu:0']! - afterClip['gpu:0']!);
      const beforeUnload = ledgers(set);
      await manager.unloadAll();
      for (const d of set.devices) expect(beforeUnload[d.name]! - ledgers(set)[d.name]!, d.name).toBe(flux[d.name] ?? 0);
      expect(afterAll3.cpu).toBe(beforeUnload.cpu);
      expect(manager.list().map((m) => m.name)).toEqual(['clip', 'vae']);
      expect(lines).toEqual([
        '[CATEGORIZE_SUMMARY] kept_models: 2, models_to_unload: 1, total: 3',
        '[SELECTIVE_UNLOAD] Proceeding with selective unload: retaining 2, unloading 1',
        '[REMAINING_MODEL] 0: clip',
        '[REMAINING_MODEL] 1: vae',
      ]);
      expectIdentical((await manager.forward('clip', clipIn)).outputs, before, [...before.keys()]);
      expectIdentical((await manager.forward('vae', latents, 'decode')).outputs, vaeBefore, ['decoded']);
      await expect(manager.forward('flux', new Map())).rejects.toThrow(/no model named "flux" is loaded\n  hint: loaded: clip, vae/);
    } finally {
      await manager.close();
    }
    // freeAll: every ledger back to where it was before the first load (pipelines, attention
    // tables, staging areas and the cpu kernels' memories dropped too).
    expect(ledgers(set)).toEqual(base);
  });

  it('under memory pressure the least recently used idle model goes; kept and running models never do; else a typed error', async () => {
    // gpu:0 declared at 1940 KiB (10% reserve: 1746 KiB free): llama (850 KiB) and gpt2 (682 KiB) fit, t5 (386 KiB) on top does not.
    const set = await devices({ memory: 'gpu:0=1940kb' });
    const lines: string[] = [];
    const manager = new ModelManager(set, { log: (l) => lines.push(l) });
    const runs: Promise<unknown>[] = [];
    try {
      const opts = { allocation: 'gpu:0,*', keepLoaded: false } as const;
      await manager.load('llama', await openWeights(fixturePath('llama-tiny')), opts); // 870 KB
      await manager.load('gpt2', await openWeights(fixturePath('gpt2-tiny')), opts); // 700 KB
      await manager.forward('llama', await inputsOf('llama-tiny', ['input_ids'])); // llama is now the most recently used
      await manager.load('t5', await openWeights(fixturePath('t5-encoder-tiny')), opts); // 395 KB: too much with both
      expect(manager.list().map((m) => m.name)).toEqual(['llama', 't5']);
      expect(lines.at(-1)).toMatch(/^\[MEMORY_PRESSURE\] freeing gpt2 \(least recently used, idle, not kept\) for t5 on gpu:0$/);

      // A model in the middle of a run is never freed: start llama's run, then load gpt2 while it runs.
      const run = manager.forward('llama', await inputsOf('llama-tiny', ['input_ids']));
      runs.push(run);
      await manager.load('gpt2', await openWeights(fixturePath('gpt2-tiny')), opts);
      await run;
      expect(manager.list().map((m) => m.name).sort()).toEqual(['gpt2', 'llama']);
      expect(lines.at(-1)).toMatch(/freeing t5 .* for gpt2/);

      // Nothing evictable left (llama kept, gpt2 running): a typed error naming what holds the memory.
      await manager.load('llama', await openWeights(fixturePath('llama-tiny')), { allocation: 'gpu:0,*', keepLoaded: true });
      const slow = manager.forward('gpt2', await inputsOf('gpt2-tiny', ['input_ids']));
      runs.push(slow);
      const err = await manager.load('clip', await openWeights(fixturePath('clip-text-tiny')), { allocation: 'gpu:0,*' }).catch((e: unknown) => e);
      await slow;
      expect(err).toBeInstanceOf(ManagerCapacityError);
      expect((err as Error).message).toMatch(/model "clip" does not fit, and no idle model that is not kept is left to free: allocation "gpu:0,\*" cannot hold the model: gpu:0 .* short; loaded: llama \(kept; gpu:0\), gpt2 \(running; gpu:0\)/);
    } finally {
      await Promise.allSettled(runs);
      await manager.close();
    }
  });

  it('a lost GPU marks the models on it unusable; their next run re-plans onto the devices left; others are undisturbed', async () => {
    const set = await devices({ adapters: [SWIFTSHADER, SWIFTSHADER] });
    expect(set.gpus.length).toBe(2);
    const lines: string[] = [];
    const manager = new ModelManager(set, { log: (l) => lines.push(l) });
    try {
      const llamaIn = await inputsOf('llama-tiny', ['input_ids']);
      const clipIn = await inputsOf('clip-text-tiny', CLIP_IN);
      await manager.load('llama', await openWeights(fixturePath('llama-tiny')), { allocation: 'gpu:1,50%;gpu:0,*', compute: 'gpu:1', mode: 'pipeline' });
      await manager.load('clip', await openWeights(fixturePath('clip-text-tiny')), { allocation: 'gpu:0,*', compute: 'gpu:0' });
      const clipBefore = (await manager.forward('clip', clipIn)).outputs;
      expect([...manager.list().find((m) => m.name === 'llama')!.devices].sort()).toEqual(['gpu:0', 'gpu:1']);

      set.gpus[1]!.device.destroy();
      await set.gpus[1]!.device.lost;
      await new Promise((r) => setTimeout(r, 10));
      expect(manager.list().find((m) => m.name === 'llama')!.unusable).toMatch(/^gpu:1 was lost \(destroyed\)/);
      expect(manager.list().find((m) => m.name === 'clip')!.unusable).toBeNull();
      expect(lines).toContain('[DEVICE_LOST] gpu:1: llama is unusable until its next run re-plans it');

      const r = await manager.forward('llama', llamaIn);
      expectClose(r.outputs, await expectedOf('llama-tiny'), ['logits'], TOLERANCE.f32);
      const replanned = manager.model('llama').plan;
      expect(replanned.compute).toBe('gpu:0');
      expect(replanned.allocation.text).toBe('gpu:0,*');
      expect(replanned.blocks.every((b) => b.device !== 'gpu:1' && b.execDevice !== 'gpu:1')).toBe(true);
      expectIdentical((await manager.forward('clip', clipIn)).outputs, clipBefore, [...clipBefore.keys()]);
    } finally {
      await manager.close();
    }
  });

  it('a GPU lost in the middle of a run fails that run with a typed error; the next run re-plans and is right', async () => {
    const set = await devices({ adapters: [SWIFTSHADER, SWIFTSHADER] });
    const manager = new ModelManager(set);
    try {
      const llamaIn = await inputsOf('llama-tiny', ['input_ids']);
      await manager.load('llama', await openWeights(fixturePath('llama-tiny')), { allocation: 'gpu:0,50%;gpu:1,*', compute: 'gpu:1', mode: 'pipeline' });
      await manager.forward('llama', llamaIn); // compiled: the next run is quick, and the loss lands inside it
      const run = manager.forward('llama', llamaIn);
      set.gpus[1]!.device.destroy();
      const err = await run.then(() => null, (e: unknown) => e);
      console.log('lost during the run:', err !== null, String(err).split('\n')[0]);
      if (err !== null) {
        expect(err).toBeInstanceOf(ModelUnusableError);
        expect((err as Error).message).toMatch(/model "llama" can't be used: gpu:1 was lost \(destroyed\).* during the run; run it again to re-plan it/);
      } else {
        // The run finished before the loss took effect: then the loss is seen between runs.
        await set.gpus[1]!.device.lost;
      }
      const r = await manager.forward('llama', llamaIn);
      expectClose(r.outputs, await expectedOf('llama-tiny'), ['logits'], TOLERANCE.f32);
      expect(manager.model('llama').plan.blocks.every((b) => b.device !== 'gpu:1' && b.execDevice !== 'gpu:1')).toBe(true);
    } finally {
      await manager.close();
    }
  });
});
