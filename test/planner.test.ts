import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { AllocationError } from '../src/allocation/errors.ts';
import { plan, PlanCapacityError, type Plan, type PlanDevice } from '../src/allocation/planner.ts';
import { UsageError } from '../src/errors.ts';
import type { Block, BlockMap } from '../src/models/blocks.ts';

const MIB = 1024 ** 2;
const GIB = 1024 ** 3;

/** A Llama-7B-like model: 512 MiB embedding, 32 layers of 256 MiB, a 16 KiB norm, a 512 MiB head. */
function model(layers = 32, layerBytes = 256 * MIB): BlockMap {
  const block = (name: string, kind: Block['kind'], bytes: number): Block => ({ name, kind, tensors: [name], shared: [], storedBytes: bytes, parameters: bytes / 2 });
  return {
    family: 'llama', scheme: 'transformers',
    blocks: [
      block('embed_tokens', 'embedding', 512 * MIB),
      ...Array.from({ length: layers }, (_, i) => block(`layers.${i}`, 'layer', layerBytes)),
      block('norm', 'norm', 16 * 1024),
      block('lm_head', 'head', 512 * MIB),
    ],
  };
}

const DEVICES: PlanDevice[] = [
  { name: 'gpu:0', capacity: 24 * GIB },
  { name: 'gpu:1', capacity: 24 * GIB },
  { name: 'cpu', capacity: 64 * GIB },
];

/** "gpu:0 0-4" for each device's run of layers, in model order. */
function runs(p: Plan): string[] {
  const out: string[] = [];
  let current: { device: string; first: number; last: number } | null = null;
  for (const b of p.blocks) {
    const m = /^layers\.(\d+)$/.exec(b.name);
    if (!m) continue;
    const i = Number(m[1]);
    if (current && current.device === b.device && current.last === i - 1) current.last = i;
    else {
      if (current) out.push(`${current.device} ${current.first}-${current.last}`);
      current = { device: b.device, first: i, last: i };
    }
  }
  if (current) out.push(`${current.device} ${current.first}-${current.last}`);
  return out;
}

const pinnedOn = (p: Plan) => p.blocks.filter((b) => b.pinned).map((b) => `${b.name}@${b.device}`);

describe('the seed\'s allocation strings (7B-like model: 512 MiB embedding, 32 × 256 MiB layers, 512 MiB head)', () => {
  it.each([
    ['cuda:0,2.5gb;cpu,*', ['gpu:0 0-4', 'cpu 5-31']],
    ['cuda:0,500mb;cuda:1,3.0g;cpu,5gb*', ['gpu:1 0-11', 'cpu 12-31']],
    ['cuda:0,25%;cpu,75%', ['gpu:0 0-3', 'cpu 4-31']],
    ['cuda:0,8%;cuda:1,8%;cpu,4%', ['gpu:0 0-9', 'gpu:1 10-23', 'cpu 24-31']],
    ['cuda:0,0.1;cpu,0.5', ['gpu:0 0-4', 'cpu 5-31']],
    ['cuda:0,4gb;cuda:1,2gb;cpu,*', ['gpu:0 0-10', 'gpu:1 11-18', 'cpu 19-31']],
    ['cuda:0,60%;cuda:1,30%;cpu,10%', ['gpu:0 0-16', 'gpu:1 17-26', 'cpu 27-31']],
  ])('%s → %j', (allocation, expected) => {
    const p = plan(model(), { allocation, devices: DEVICES, mode: 'stream' });
    expect(runs(p)).toEqual(expected);
    // Embedding, final norm and head stay on the compute device whatever its share.
    expect(pinnedOn(p)).toEqual(['embed_tokens@gpu:0', 'norm@gpu:0', 'lm_head@gpu:0']);
    expect(p.blocks).toHaveLength(35);
    expect(p.devices.reduce((a, d) => a + d.bytes, 0)).toBe(p.totalBytes);
  });

  it('the seed\'s "5gb*" form warns that the number is ignored; gpu:0 reports the pinned excess', () => {
    const p = plan(model(), { allocation: 'cuda:0,500mb;cuda:1,3.0g;cpu,5gb*', devices: DEVICES });
    expect(p.warnings.join('\n')).toMatch(/5gb/);
    const gpu0 = p.devices.find((d) => d.name === 'gpu:0')!;
    expect(gpu0).toMatchObject({ share: 500 * MIB, bytes: GIB + 16 * 1024, excess: GIB + 16 * 1024 - 500 * MIB });
    expect(p.warnings).toContain('pinned blocks put 524 MiB more on gpu:0 than its share');
  });

  it('stream mode: blocks on cpu live in host-visible buffers and run on the compute device; others on GPUs stay device buffers', () => {
    const p = plan(model(), { allocation: 'cuda:0,4gb;cuda:1,2gb;cpu,*', devices: DEVICES, mode: 'stream' });
    const byName = new Map(p.blocks.map((b) => [b.name, b]));
    expect(byName.get('layers.0')).toMatchObject({ exec: 'resident', execDevice: 'gpu:0', storage: 'device-buffer' });
    expect(byName.get('layers.12')).toMatchObject({ exec: 'stream', execDevice: 'gpu:0', storage: 'device-buffer', device: 'gpu:1' });
    expect(byName.get('layers.31')).toMatchObject({ exec: 'stream', execDevice: 'gpu:0', storage: 'host-visible', device: 'cpu' });
  });

  it('pipeline mode: every block runs where it is stored; cpu blocks in WebAssembly memory', () => {
    const p = plan(model(), { allocation: 'cuda:0,4gb;cuda:1,2gb;cpu,*', devices: DEVICES, mode: 'pipeline' });
    const byName = new Map(p.blocks.map((b) => [b.name, b]));
    expect(byName.get('layers.12')).toMatchObject({ exec: 'pipeline', execDevice: 'gpu:1', storage: 'device-buffer' });
    expect(byName.get('layers.31')).toMatchObject({ exec: 'pipeline', execDevice: 'cpu', storage: 'wasm-memory' });
  });

  it('auto mode decides per block with the cost model and says why', () => {
    const p = plan(model(), { allocation: 'cuda:0,4gb;cuda:1,2gb;cpu,*', devices: DEVICES, mode: 'auto' });
    const layer31 = p.blocks.find((b) => b.name === 'layers.31')!;
    // 256 MiB over 12 GB/s (~22 ms) against 2 × 128 Mi params × 512 tokens on a 100 GFLOP/s cpu (~1.4 s): stream.
    expect(layer31).toMatchObject({ exec: 'stream', storage: 'host-visible' });
    expect(layer31.reason).toMatch(/^stream: copying it takes [\d.]+ ms a pass, running it on cpu [\d.]+ ms$/);
    const tiny = plan(model(4, 4 * MIB), { allocation: 'gpu:0,0%;gpu:1,100%', devices: DEVICES, mode: 'auto', costModel: {
      hostToGpuBytesPerSecond: 12e9, gpuToGpuBytesPerSecond: 1e6, gpuFlopsPerSecond: 20e12, cpuFlopsPerSecond: 1e11, hopSeconds: 1e-4, tokensPerPass: 1,
    } });
    // With a very slow GPU→GPU path, running on gpu:1 wins.
    expect(tiny.blocks.find((b) => b.name === 'layers.0')).toMatchObject({ exec: 'pipeline', execDevice: 'gpu:1' });
  });
});

describe('remainders (SPEC §2: a share is a ceiling)', () => {
  it('bytes without a wildcard: cpu takes the rest even when it is not listed, and the plan says so', () => {
    const p = plan(model(), { allocation: 'gpu:0,2gb;gpu:1,2gb', devices: DEVICES });
    expect(runs(p)).toEqual(['gpu:0 0-2', 'gpu:1 3-10', 'cpu 11-31']);
    expect(p.devices.find((d) => d.name === 'cpu')).toMatchObject({ share: null, absorbsRemainder: true });
    expect(p.warnings).toContain('no wildcard in a bytes allocation: cpu takes whatever the listed devices leave (as in DisTorch2)');
  });

  it('ratio without a wildcard: the last device listed absorbs what rounding leaves', () => {
    const p = plan(model(), { allocation: 'gpu:0,50%;gpu:1,50%', devices: DEVICES });
    expect(runs(p)).toEqual(['gpu:0 0-12', 'gpu:1 13-31']);
    expect(p.devices.find((d) => d.name === 'gpu:1')).toMatchObject({ absorbsRemainder: true });
    expect(p.warnings).toContain('no wildcard: the last device listed (gpu:1) takes what rounding to whole blocks leaves over');
  });

  it('pinned bytes over the compute device\'s share: they go there anyway, and the excess is reported', () => {
    const p = plan(model(), { allocation: 'gpu:0,256mb;cpu,*', devices: DEVICES });
    expect(runs(p)).toEqual(['cpu 0-31']);
    expect(p.devices.find((d) => d.name === 'gpu:0')).toMatchObject({ share: 256 * MIB, excess: GIB + 16 * 1024 - 256 * MIB });
  });

  it('compute device not listed: it holds the pinned blocks only', () => {
    const p = plan(model(), { allocation: 'gpu:1,4gb;cpu,*', devices: DEVICES, compute: 'gpu:0' });
    expect(runs(p)).toEqual(['gpu:1 0-15', 'cpu 16-31']);
    expect(pinnedOn(p)).toEqual(['embed_tokens@gpu:0', 'norm@gpu:0', 'lm_head@gpu:0']);
    expect(p.warnings).toContain('compute device gpu:0 is not in the allocation: it holds the pinned blocks only');
  });

  it('a wildcard listed first takes what the others leave, first in model order, and what rounding leaves at the end', () => {
    const p = plan(model(), { allocation: 'cpu,*;gpu:0,4gb', devices: DEVICES });
    expect(runs(p)).toEqual(['cpu 0-19', 'gpu:0 20-30', 'cpu 31-31']);
    expect(p.warnings).toContain('cpu takes the remainder, so its blocks are not one contiguous run (it is not listed last)');
  });
});

describe('options', () => {
  it('simple mode: virtual VRAM keeps that many bytes off the compute device, on the donors in order', () => {
    const p = plan(model(), { allocation: '', devices: DEVICES, virtualVram: 4 * GIB, donors: ['gpu:1', 'cpu'] });
    expect(runs(p)).toEqual(['gpu:0 0-15', 'gpu:1 16-31']);
    const small = plan(model(), { allocation: '', devices: [{ name: 'gpu:0', capacity: 24 * GIB }, { name: 'gpu:1', capacity: 2 * GIB }, { name: 'cpu', capacity: 64 * GIB }], virtualVram: 4 * GIB, donors: ['gpu:1', 'cpu'] });
    expect(runs(small)).toEqual(['gpu:0 0-15', 'gpu:1 16-22', 'cpu 23-31']); // 2 GiB − 10% reserve holds 7 layers
    expect(() => plan(model(), { allocation: 'gpu:0,1gb', devices: DEVICES, virtualVram: GIB })).toThrow(UsageError);
  });

  it('a large embedding table can stay on cpu, where its rows are gathered', () => {
    const p = plan(model(), { allocation: 'gpu:0,4gb;cpu,*', devices: DEVICES, embeddingsOn: 'cpu' });
    expect(p.blocks.find((b) => b.name === 'embed_tokens')).toMatchObject({ device: 'cpu', exec: 'pipeline', execDevice: 'cpu', storage: 'wasm-memory' });
    expect(runs(p)[0]).toBe('gpu:0 0-12'); // 4 GiB − 512 MiB head − 16 KiB norm holds 13 layers
  });

  it('blocks under 0.01% of the model are pinned to the compute device', () => {
    const m = model();
    const tiny: Block = { name: 'rope_freqs', kind: 'io', tensors: ['rope_freqs'], shared: [], storedBytes: 1024, parameters: 256 };
    const p = plan({ ...m, blocks: [m.blocks[0]!, tiny, ...m.blocks.slice(1)] }, { allocation: 'cpu,*', devices: DEVICES });
    expect(p.blocks.find((b) => b.name === 'rope_freqs')).toMatchObject({ device: 'gpu:0', pinned: 'under 0.01% of the model' });
  });

  it('the reserve: default min(1 GiB, 10%), settable; the plan never fills it', () => {
    const p = plan(model(), { allocation: 'gpu:0,*', devices: [{ name: 'gpu:0', capacity: 16 * GIB }, { name: 'cpu', capacity: 8 * GIB }] });
    expect(p.devices[0]).toMatchObject({ reserve: GIB, available: 15 * GIB });
    const small = plan(model(2, MIB), { allocation: 'gpu:0,*', devices: [{ name: 'gpu:0', capacity: 4 * GIB }, { name: 'cpu', capacity: GIB }], reserve: 512 * MIB });
    expect(small.devices[0]).toMatchObject({ reserve: 512 * MIB });
    expect(plan(model(2, MIB), { allocation: 'gpu:0,*', devices: [{ name: 'gpu:0', capacity: 4 * GIB }] }).devices[0]!.reserve).toBe(Math.floor(0.4 * GIB));
  });

  it('the ledger counts: bytes already in use are not free', () => {
    const attempt = () => plan(model(), { allocation: 'gpu:0,*', devices: [{ name: 'gpu:0', capacity: 24 * GIB, used: 20 * GIB }, { name: 'cpu', capacity: 64 * GIB }] });
    expect(attempt).toThrow(PlanCapacityError);
  });
});

describe('typed errors a user can act on', () => {
  it('an allocation that cannot hold the model names each short device and by how many bytes', () => {
    const devices = [{ name: 'gpu:0', capacity: 4 * GIB }, { name: 'cpu', capacity: 4 * GIB }];
    const attempt = () => plan(model(), { allocation: 'gpu:0,8gb;cpu,*', devices });
    expect(attempt).toThrow(PlanCapacityError);
    try {
      attempt();
    } catch (error) {
      const e = error as PlanCapacityError;
      expect(e.shortfalls.map((s) => s.device)).toEqual(['gpu:0']);
      expect(e.message).toContain('allocation "gpu:0,8gb;cpu,*" cannot hold the model: gpu:0 would hold 7.75 GiB but has 3.60 GiB free: 4.15 GiB (4456044953 bytes) short');
      expect(e.hint).toContain('cpu,*');
    }
    expect(() => plan(model(), { allocation: 'gpu:0,1gb;cpu,*', devices })).toThrow(/cpu would hold [\d.]+ GiB but has 4.00 GiB free/);
  });

  it('devices the machine lacks are the parser\'s typed error; so is a compute device that is absent', () => {
    expect(() => plan(model(), { allocation: 'gpu:2,1gb;cpu,*', devices: DEVICES })).toThrow(AllocationError);
    expect(() => plan(model(), { allocation: 'cpu,*', devices: DEVICES, compute: 'gpu:5' })).toThrow('compute device gpu:5 is not present on this machine');
  });
});

describe('properties (fast-check)', () => {
  const device = fc.constantFrom('gpu:0', 'gpu:1', 'cpu');
  const blockMapArb = fc.array(fc.integer({ min: 1, max: 512 * MIB }), { minLength: 1, maxLength: 40 }).map((sizes): BlockMap => ({
    family: 'synthetic', scheme: 'transformers',
    blocks: sizes.map((bytes, i) => ({
      name: `b${i}`, kind: i === 0 ? 'embedding' : i === sizes.length - 1 && i > 0 ? 'head' : 'layer', tensors: [`b${i}`], shared: [], storedBytes: bytes, parameters: bytes,
    })),
  }));
  const amount = fc.oneof(
    fc.integer({ min: 0, max: 20 * 1024 }).map((m) => ({ text: `${m}mb`, mode: 'bytes' })),
    fc.integer({ min: 0, max: 100 }).map((p) => ({ text: `${p}%`, mode: 'ratio' })),
    fc.integer({ min: 0, max: 100 }).map((f) => ({ text: `${f / 100}`, mode: 'fraction' })),
  );
  const allocationArb = fc.tuple(fc.uniqueArray(device, { minLength: 1, maxLength: 3 }), fc.constantFrom('bytes', 'ratio', 'fraction'), fc.array(amount, { minLength: 3, maxLength: 3 }), fc.integer({ min: -1, max: 2 }))
    .map(([devs, mode, amounts, wildcardAt]) => devs.map((d, i) => {
      if (i === wildcardAt) return `${d},*`;
      const a = amounts.map((x) => x).find((x) => x.mode === mode) ?? { text: mode === 'bytes' ? '1gb' : mode === 'ratio' ? '10%' : '0.1' };
      return `${d},${i === 0 ? a.text : amounts[i]!.mode === mode ? amounts[i]!.text : a.text}`;
    }).join(';'));

  it('10,000 allocations: every block placed exactly once, shares respected but by the absorber and pinned blocks, deterministic', () => {
    let runsCount = 0;
    let capacityErrors = 0;
    fc.assert(fc.property(blockMapArb, allocationArb, fc.constantFrom('gpu:0', 'gpu:1', 'cpu'), fc.constantFrom('stream', 'pipeline', 'auto' as const),
      (map, allocation, compute, mode) => {
        runsCount++;
        let p: Plan;
        try {
          p = plan(map, { allocation, devices: DEVICES, compute, mode });
        } catch (error) {
          // Only the capacity check may refuse a well-formed allocation over these devices.
          if (error instanceof PlanCapacityError) {
            capacityErrors++;
            return;
          }
          // ...and the parser, for ratios that leave nothing: all zero, or over 100% beside a wildcard.
          if (error instanceof AllocationError && ['E_ALLOC_ALL_ZERO_RATIOS', 'E_ALLOC_RATIO_OVER_100'].includes(error.code)) return;
          throw error;
        }
        expect(p.blocks.map((b) => b.name)).toEqual(map.blocks.map((b) => b.name));
        expect(p.blocks.every((b) => ['gpu:0', 'gpu:1', 'cpu'].includes(b.device))).toBe(true);
        expect(p.devices.reduce((a, d) => a + d.bytes, 0)).toBe(p.totalBytes);
        for (const d of p.devices) {
          const pinned = p.blocks.filter((b) => b.device === d.name && b.pinned).reduce((a, b) => a + b.bytes, 0);
          if (!d.absorbsRemainder && d.share !== null) expect(d.bytes - pinned).toBeLessThanOrEqual(Math.max(0, d.share - pinned));
          expect(d.bytes).toBeLessThanOrEqual(d.available);
          expect(d.excess).toBe(d.share === null ? 0 : Math.max(0, d.bytes - d.share));
        }
        expect(p.blocks.filter((b) => b.pinned && b.pinned !== 'embedding kept on cpu').every((b) => b.device === compute)).toBe(true);
        expect(plan(map, { allocation, devices: DEVICES, compute, mode })).toEqual(p);
      }), { numRuns: 10_000 });
    console.log(`planner properties: ${runsCount} allocations (${capacityErrors} refused for capacity)`);
    expect(runsCount).toBeGreaterThanOrEqual(10_000);
  });
});
