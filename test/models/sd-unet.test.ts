// diffusers' UNet2DConditionModel: the tiny fixture (CrossAttnDownBlock2D + DownBlock2D, a
// cross-attention mid block, UpBlock2D + CrossAttnUpBlock2D) under the three allocations with
// f32 and bf16 weights — the split puts the up blocks on the cpu, so the skip connections the
// down blocks made on gpu:0 travel to them —; the same weights under the original LDM names
// inside a ComfyUI single-file checkpoint (model.diffusion_model., no config.json); and table
// tests of the LDM layout (SD 1.5's), the config and the GEGLU halves cut at load.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { splitComfyCheckpoint } from '../../src/formats/comfyui.ts';
import type { Dtype } from '../../src/formats/dtypes.ts';
import { openWeights } from '../../src/formats/open-weights.ts';
import { writeSafetensorsFile, type TensorToWrite } from '../../src/formats/safetensors-writer.ts';
import type { WeightSet } from '../../src/formats/weights.ts';
import type { HostTensor } from '../../src/models/program.ts';
import { blockMapOf } from '../../src/models/registry.ts';
import { ldmUnetLayout } from '../../src/models/sd-unet/ldm-names.ts';
import { configureSdUnet, sdUnetModel } from '../../src/models/sd-unet/model.ts';
import { loadModel } from '../../src/runtime/model.ts';
import { fixturePath } from '../fixtures.ts';
import { ALLOCATIONS, expectClose, expectedOf, expectIdentical, fixtureDevices, runFixture, TOLERANCE, WEIGHT_FILES } from './harness.ts';

const FIXTURE = 'unet-tiny';
const WEIGHTS = [WEIGHT_FILES.f32, WEIGHT_FILES.bf16] as const;
/** The first run of a file compiles every pipeline: minutes on a loaded SwiftShader. */
const TIMEOUT = 300_000;

/** The f32 all-on-gpu:0 outputs, kept for the LDM-named run to match bit for bit. */
let f32Reference: Map<string, HostTensor> | undefined;

describe.each(WEIGHTS)('unet-tiny, $dtype weights', ({ dtype, file, tol }) => {
  let reference: Map<string, HostTensor> | undefined;
  it.each(ALLOCATIONS)('$label: out within tolerance', async ({ label, allocation, mode }) => {
    const { model, outputs, expected } = await runFixture(FIXTURE, { weightsFile: file, allocation, mode });
    if (allocation.includes('cpu')) {
      // The split really splits: the up blocks are stored on (pipeline: run by) the cpu and
      // read skips made on gpu:0.
      const up = model.plan.blocks.filter((b) => b.name.startsWith('up.'));
      expect(up.length).toBeGreaterThan(0);
      expect(up.every((b) => b.device === 'cpu')).toBe(true);
      expect(up.every((b) => b.execDevice === (mode === 'pipeline' ? 'cpu' : 'gpu:0'))).toBe(true);
      expect(model.plan.blocks.find((b) => b.name === 'down.0.res.0')?.execDevice).toBe('gpu:0');
    }
    const worst = expectClose(outputs, expected, ['out'], tol);
    console.log(`unet-tiny ${dtype} [${label}]: out ${worst.out!.toExponential(2)}`);
    if (mode === 'stream') {
      if (!reference) reference = outputs;
      else expectIdentical(outputs, reference, ['out']);
      if (dtype === 'f32' && !f32Reference) f32Reference = outputs;
    }
  }, TIMEOUT);
});

/** The fixture's diffusers prefixes → LDM's (layers_per_block 1, two levels; written by hand). */
const LDM_PREFIXES: ReadonlyArray<readonly [string, string]> = [
  ['conv_in.', 'input_blocks.0.0.'],
  ['time_embedding.linear_1.', 'time_embed.0.'],
  ['time_embedding.linear_2.', 'time_embed.2.'],
  ['down_blocks.0.resnets.0.', 'input_blocks.1.0.'],
  ['down_blocks.0.attentions.0.', 'input_blocks.1.1.'],
  ['down_blocks.0.downsamplers.0.conv.', 'input_blocks.2.0.op.'],
  ['down_blocks.1.resnets.0.', 'input_blocks.3.0.'],
  ['mid_block.resnets.0.', 'middle_block.0.'],
  ['mid_block.attentions.0.', 'middle_block.1.'],
  ['mid_block.resnets.1.', 'middle_block.2.'],
  ['up_blocks.0.resnets.0.', 'output_blocks.0.0.'],
  ['up_blocks.0.resnets.1.', 'output_blocks.1.0.'],
  ['up_blocks.0.upsamplers.0.', 'output_blocks.1.1.'],
  ['up_blocks.1.resnets.0.', 'output_blocks.2.0.'],
  ['up_blocks.1.attentions.0.', 'output_blocks.2.1.'],
  ['up_blocks.1.resnets.1.', 'output_blocks.3.0.'],
  ['up_blocks.1.attentions.1.', 'output_blocks.3.1.'],
  ['conv_norm_out.', 'out.0.'],
  ['conv_out.', 'out.2.'],
];
const LDM_RESNET: ReadonlyArray<readonly [string, string]> = [
  ['norm1.', 'in_layers.0.'], ['conv1.', 'in_layers.2.'], ['time_emb_proj.', 'emb_layers.1.'],
  ['norm2.', 'out_layers.0.'], ['conv2.', 'out_layers.3.'], ['conv_shortcut.', 'skip_connection.'],
];

async function toLdm(weights: WeightSet): Promise<TensorToWrite[]> {
  const out: TensorToWrite[] = [];
  for (const [name, t] of weights.tensors) {
    const hit = LDM_PREFIXES.find(([d]) => name.startsWith(d));
    if (!hit) throw new Error(`no LDM name for ${name}`);
    let rest = name.slice(hit[0].length);
    if (/\.resnets\.\d+\.$/.test(hit[0])) {
      const r = LDM_RESNET.find(([d]) => rest.startsWith(d));
      if (!r) throw new Error(`no LDM resblock name for ${name}`);
      rest = r[1] + rest.slice(r[0].length);
    }
    out.push({ name: `model.diffusion_model.${hit[1]}${rest}`, dtype: t.dtype as Dtype, shape: t.shape, data: await weights.readRaw(name) });
  }
  return out;
}

describe('unet-tiny under LDM names (a ComfyUI checkpoint\'s model.diffusion_model, no config.json)', () => {
  it('gives the same out as the diffusers-named weights, bit for bit on gpu:0, and split', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'unet-ldm-'));
    const diffusers = await openWeights(fixturePath(FIXTURE, 'model.safetensors'));
    try {
      await writeSafetensorsFile(join(dir, 'checkpoint.safetensors'), await toLdm(diffusers));
      const checkpoint = await openWeights(join(dir, 'checkpoint.safetensors'));
      try {
        const unet = splitComfyCheckpoint(checkpoint).get('model.diffusion_model')!.weights;
        const devices = await fixtureDevices();
        const expected = await expectedOf(FIXTURE);
        const inputs = new Map([...expected].filter(([name]) => name !== 'out'));
        const run = async (weights: WeightSet, allocation: string, mode: 'stream' | 'pipeline') => {
          const model = await loadModel(devices, weights, { allocation, mode });
          try {
            expect(model.blockMap.scheme).toBe(weights === unet ? 'comfyui' : 'diffusers');
            if (allocation.includes('cpu')) expect(model.plan.blocks.some((b) => b.execDevice === 'cpu')).toBe(true);
            return (await model.forward(inputs)).outputs;
          } finally {
            await model.unload();
          }
        };
        const whole = await run(unet, 'gpu:0,100%', 'stream');
        expectIdentical(whole, f32Reference ?? await run(diffusers, 'gpu:0,100%', 'stream'), ['out']);
        const split = await run(unet, 'gpu:0,50%;cpu,*', 'pipeline');
        const worst = expectClose(split, expected, ['out'], TOLERANCE.f32);
        console.log(`unet-tiny LDM [gpu:0,50%;cpu,* pipeline]: out ${worst.out!.toExponential(2)}`);
      } finally {
        await checkpoint.close();
      }
    } finally {
      await diffusers.close();
      rmSync(dir, { recursive: true, force: true });
    }
  }, TIMEOUT);
});

/** SD 1.5's LDM UNet, one tensor per part: which parts are resblocks, transformers, resamplers. */
function sd15LdmNames(): string[] {
  const names = ['time_embed.0.weight', 'time_embed.2.weight', 'input_blocks.0.0.weight', 'out.0.weight', 'out.2.weight'];
  const res = (p: string) => names.push(`${p}.in_layers.0.weight`, `${p}.in_layers.2.weight`, `${p}.emb_layers.1.weight`, `${p}.out_layers.3.weight`);
  const attn = (p: string) => names.push(`${p}.proj_in.weight`, `${p}.transformer_blocks.0.ff.net.0.proj.weight`, `${p}.transformer_blocks.0.ff.net.2.weight`);
  for (const k of [1, 2, 4, 5, 7, 8, 10, 11]) res(`input_blocks.${k}.0`);
  for (const k of [1, 2, 4, 5, 7, 8]) attn(`input_blocks.${k}.1`);
  for (const k of [3, 6, 9]) names.push(`input_blocks.${k}.0.op.weight`);
  res('middle_block.0');
  attn('middle_block.1');
  res('middle_block.2');
  for (let k = 0; k < 12; k++) res(`output_blocks.${k}.0`);
  for (let k = 3; k < 12; k++) attn(`output_blocks.${k}.1`);
  names.push('output_blocks.2.1.conv.weight', 'output_blocks.5.2.conv.weight', 'output_blocks.8.2.conv.weight');
  return names;
}

describe('sd-unet details', () => {
  it("SD 1.5's LDM layout: levels, the block of each diffusers part, and tensor names", () => {
    const layout = ldmUnetLayout(sd15LdmNames());
    expect(layout.down).toEqual([
      { resnets: 2, attentions: 2, resample: true }, { resnets: 2, attentions: 2, resample: true },
      { resnets: 2, attentions: 2, resample: true }, { resnets: 2, attentions: 0, resample: false },
    ]);
    expect(layout.mid).toEqual({ resnets: 2, attentions: 1 });
    expect(layout.up).toEqual([
      { resnets: 3, attentions: 0, resample: true }, { resnets: 3, attentions: 3, resample: true },
      { resnets: 3, attentions: 3, resample: true }, { resnets: 3, attentions: 3, resample: false },
    ]);
    expect(layout.blocks).toMatchObject({
      time_embedding: 'time_embedding', conv_in: 'conv_in', conv_out: 'conv_out',
      'down.0.res.0': 'input.1.0', 'down.0.attn.1': 'input.2.1', 'down.0.downsample': 'input.3.0',
      'down.2.downsample': 'input.9.0', 'down.3.res.1': 'input.11.0',
      'mid.res.0': 'middle.0', 'mid.attn.0': 'middle.1', 'mid.res.1': 'middle.2',
      'up.0.res.2': 'output.2.0', 'up.0.upsample': 'output.2.1', 'up.1.attn.0': 'output.3.1',
      'up.1.upsample': 'output.5.2', 'up.3.res.2': 'output.11.0', 'up.3.attn.2': 'output.11.1',
    });
    const source = (canonical: string) => layout.canonical.get(canonical)?.source;
    expect(source('time_embedding.linear_2.weight')).toBe('time_embed.2.weight');
    expect(source('conv_in.weight')).toBe('input_blocks.0.0.weight');
    expect(source('conv_norm_out.weight')).toBe('out.0.weight');
    expect(source('down_blocks.1.resnets.1.time_emb_proj.weight')).toBe('input_blocks.5.0.emb_layers.1.weight');
    expect(source('down_blocks.0.downsamplers.0.conv.weight')).toBe('input_blocks.3.0.op.weight');
    expect(source('mid_block.attentions.0.proj_in.weight')).toBe('middle_block.1.proj_in.weight');
    expect(source('up_blocks.2.resnets.0.conv2.weight')).toBe('output_blocks.6.0.out_layers.3.weight');
    expect(source('up_blocks.1.upsamplers.0.conv.weight')).toBe('output_blocks.5.2.conv.weight');
    expect(source('up_blocks.3.attentions.2.transformer_blocks.0.ff.net.2.weight')).toBe('output_blocks.11.1.transformer_blocks.0.ff.net.2.weight');
  });

  it('the config: heads from attention_head_dim (diffusers\' naming quirk), levels from the checkpoint', async () => {
    const weights = await openWeights(fixturePath(FIXTURE, 'model.safetensors'));
    try {
      const blockMap = blockMapOf(weights);
      const cfg = configureSdUnet(weights, blockMap);
      expect(cfg).toMatchObject({
        groups: 32, eps: 1e-5, timeChannels: 32, flipSinToCos: true, freqShift: 0, downsamplePadding: 1,
        down: [{ resnets: 1, attentions: 1, resample: true, heads: 8 }, { resnets: 1, attentions: 0, resample: false, heads: 8 }],
        mid: { resnets: 2, attentions: 1, heads: 8 },
        up: [{ resnets: 2, attentions: 0, resample: true, heads: 8 }, { resnets: 2, attentions: 2, resample: false, heads: 8 }],
        addTimeChannels: null,
      });
      const inputs = new Map<string, HostTensor>([['sample', { data: new Float32Array(4 * 16 * 16), shape: [1, 4, 16, 16] }]]);
      const steps = sdUnetModel.entries.forward!.steps(cfg, inputs).map((s) => s.block);
      expect(steps).toEqual(blockMap.blocks.map((b) => b.name));
      // A sample the down path cannot halve evenly is refused (diffusers' upsample_size path).
      expect(() => sdUnetModel.entries.forward!.steps(cfg, new Map([['sample', { data: new Float32Array(4 * 15 * 16), shape: [1, 4, 15, 16] }]])))
        .toThrow(/multiple of 2/);
    } finally {
      await weights.close();
    }
  });

  it('GEGLU projections are cut at load into the hidden half (first rows) and the gate half', async () => {
    const weights = await openWeights(fixturePath(FIXTURE, 'model.safetensors'));
    try {
      const canonical = sdUnetModel.canonical('diffusers', weights, configureSdUnet(weights, blockMapOf(weights)));
      const p = 'mid_block.attentions.0.transformer_blocks.0.ff.net.0.proj';
      const hidden = canonical.get(`${p}.hidden.weight`)!;
      const gate = canonical.get(`${p}.gate.bias`)!;
      expect(hidden.source).toBe(`${p}.weight`);
      expect(gate.source).toBe(`${p}.bias`);
      expect([hidden.rows!.count, hidden.rows!.rowOf(0), hidden.rows!.rowOf(255)]).toEqual([256, 0, 255]);
      expect([gate.rows!.count, gate.rows!.rowOf(0), gate.rows!.rowOf(255)]).toEqual([256, 256, 511]);
      expect([...canonical.keys()].filter((k) => k.endsWith('.hidden.weight'))).toHaveLength(4);
    } finally {
      await weights.close();
    }
  });
});
