// diffusers' AutoencoderKL: the tiny fixture (2 levels, GroupNorm 32, mid attention), encode
// (encoded_mean = latent_dist.mean after quant_conv) and decode (post_quant_conv + decoder, the
// latents as given: no scaling_factor), under the three allocations with f32 and bf16 weights,
// plus a split that puts most of the encoder on the cpu (the 50% split leaves the encoder
// whole on gpu:0); the same weights under the original LDM names inside a ComfyUI single-file
// checkpoint (first_stage_model.); and table tests of the name mapping and of the structure
// read off the checkpoint.
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
import { ldmVaeName, ldmVaeToDiffusers } from '../../src/models/sd-vae/ldm-names.ts';
import { configureSdVae, sdVaeModel } from '../../src/models/sd-vae/model.ts';
import { loadModel } from '../../src/runtime/model.ts';
import { fixturePath } from '../fixtures.ts';
import { ALLOCATIONS, expectClose, expectedOf, expectIdentical, fixtureDevices, runFixture, TOLERANCE, WEIGHT_FILES } from './harness.ts';

const FIXTURE = 'vae-tiny';
const ENTRIES = [
  { entry: 'encode', input: 'image', output: 'encoded_mean' },
  { entry: 'decode', input: 'latents', output: 'decoded' },
] as const;
const WEIGHTS = [WEIGHT_FILES.f32, WEIGHT_FILES.bf16] as const;
/** Most of the encoder on the cpu: the first 10% of the model's bytes stay on gpu:0. */
const ENCODER_SPLIT = { label: 'gpu:0,10%;cpu,* pipeline', allocation: 'gpu:0,10%;cpu,*', mode: 'pipeline' } as const;
const TIMEOUT = 240_000;

describe.each(WEIGHTS)('vae-tiny, $dtype weights', ({ dtype, file, tol }) => {
  for (const { entry, output } of ENTRIES) {
    it(`${entry}: ${output} within tolerance under the three allocations${entry === 'encode' ? ' and an encoder split' : ''}; stream bit-identical to all on gpu:0`, async () => {
      const runs: Map<string, HostTensor>[] = [];
      // The 50% split runs the decoder across both devices; the encoder needs a smaller share.
      const splitting = entry === 'encode' ? ENCODER_SPLIT : ALLOCATIONS[1]!;
      for (const a of entry === 'encode' ? [...ALLOCATIONS, ENCODER_SPLIT] : ALLOCATIONS) {
        const { model, outputs, expected } = await runFixture(FIXTURE, { allocation: a.allocation, mode: a.mode, weightsFile: file, entry });
        if (a === splitting) {
          // The split really splits the half this entry runs.
          const half = entry === 'encode' ? 'encoder.' : 'decoder.';
          const devices = new Set(model.plan.blocks.filter((b) => b.name.startsWith(half)).map((b) => b.execDevice));
          expect([...devices].sort(), a.label).toEqual(['cpu', 'gpu:0']);
        }
        const worst = expectClose(outputs, expected, [output], tol);
        console.log(`vae-tiny ${entry} ${dtype} [${a.label}]: ${output} ${worst[output]!.toExponential(2)}`);
        runs.push(outputs);
      }
      expectIdentical(runs[2]!, runs[0]!, [output]);
    }, TIMEOUT);
  }
});

/**
 * The fixture's diffusers tensors under LDM names, as a ComfyUI checkpoint stores them
 * (first_stage_model.; the mid attention's q/k/v/proj_out as 1×1 convs). Written from the
 * diffusers side, independently of ldm-names.ts.
 */
async function toLdm(weights: WeightSet): Promise<TensorToWrite[]> {
  const levels = 2; // the fixture's decoder levels
  const out: TensorToWrite[] = [];
  for (const [name, t] of weights.tensors) {
    const ldm = name
      .replace(/^(encoder|decoder)\.conv_norm_out\./, '$1.norm_out.')
      .replace(/^(encoder|decoder)\.mid_block\.resnets\.(\d)\./, (_, h: string, i: string) => `${h}.mid.block_${Number(i) + 1}.`)
      .replace(/^(encoder|decoder)\.mid_block\.attentions\.0\.group_norm\./, '$1.mid.attn_1.norm.')
      .replace(/^(encoder|decoder)\.mid_block\.attentions\.0\.to_(q|k|v)\./, '$1.mid.attn_1.$2.')
      .replace(/^(encoder|decoder)\.mid_block\.attentions\.0\.to_out\.0\./, '$1.mid.attn_1.proj_out.')
      .replace(/^encoder\.down_blocks\.(\d+)\.resnets\.(\d+)\./, 'encoder.down.$1.block.$2.')
      .replace(/^encoder\.down_blocks\.(\d+)\.downsamplers\.0\./, 'encoder.down.$1.downsample.')
      .replace(/^decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\./, (_, i: string, j: string) => `decoder.up.${levels - 1 - Number(i)}.block.${j}.`)
      .replace(/^decoder\.up_blocks\.(\d+)\.upsamplers\.0\./, (_, i: string) => `decoder.up.${levels - 1 - Number(i)}.upsample.`)
      .replace(/\.conv_shortcut\./, '.nin_shortcut.');
    const shape = /mid\.attn_1\.(q|k|v|proj_out)\.weight$/.test(ldm) ? [...t.shape, 1, 1] : t.shape;
    out.push({ name: `first_stage_model.${ldm}`, dtype: t.dtype as Dtype, shape, data: await weights.readRaw(name) });
  }
  return out;
}

describe('vae-tiny under LDM names (a ComfyUI checkpoint\'s first_stage_model)', () => {
  it('encodes and decodes as the diffusers-named weights do, whole and split', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'vae-ldm-'));
    const diffusers = await openWeights(fixturePath(FIXTURE, 'model.safetensors'));
    try {
      await writeSafetensorsFile(join(dir, 'checkpoint.safetensors'), await toLdm(diffusers));
      const checkpoint = await openWeights(join(dir, 'checkpoint.safetensors'));
      try {
        const vae = splitComfyCheckpoint(checkpoint).get('first_stage_model')!.weights;
        const devices = await fixtureDevices();
        const expected = await expectedOf(FIXTURE);
        const run = async (weights: WeightSet, entry: string, input: string, allocation: string, mode: 'stream' | 'pipeline') => {
          const model = await loadModel(devices, weights, { allocation, mode });
          try {
            expect(model.blockMap.scheme).toBe(weights === vae ? 'comfyui' : 'diffusers');
            return (await model.forward(new Map([[input, expected.get(input)!]]), entry)).outputs;
          } finally {
            await model.unload();
          }
        };
        for (const { entry, input, output } of ENTRIES) {
          const whole = await run(vae, entry, input, 'gpu:0,100%', 'stream');
          const worst = expectClose(whole, expected, [output], TOLERANCE.f32);
          // The 1×1-conv projections of the mid attention compute what the Linears do.
          const reference = await run(diffusers, entry, input, 'gpu:0,100%', 'stream');
          expectClose(whole, reference, [output], 1e-5);
          const split = await run(vae, entry, input, entry === 'encode' ? ENCODER_SPLIT.allocation : 'gpu:0,50%;cpu,*', 'pipeline');
          expectClose(split, expected, [output], TOLERANCE.f32);
          console.log(`vae-tiny LDM ${entry}: ${output} ${worst[output]!.toExponential(2)}`);
        }
      } finally {
        await checkpoint.close();
      }
    } finally {
      await diffusers.close();
      rmSync(dir, { recursive: true, force: true });
    }
  }, TIMEOUT);
});

describe('sd-vae details', () => {
  it('LDM names map onto diffusers\', the decoder\'s levels counted from the other end', () => {
    const cases: Array<[string, string]> = [
      ['encoder.conv_in.weight', 'encoder.conv_in.weight'],
      ['encoder.down.0.block.1.nin_shortcut.bias', 'encoder.down_blocks.0.resnets.1.conv_shortcut.bias'],
      ['encoder.down.2.downsample.conv.weight', 'encoder.down_blocks.2.downsamplers.0.conv.weight'],
      ['encoder.mid.block_1.norm1.weight', 'encoder.mid_block.resnets.0.norm1.weight'],
      ['decoder.mid.block_2.conv2.bias', 'decoder.mid_block.resnets.1.conv2.bias'],
      ['encoder.mid.attn_1.norm.bias', 'encoder.mid_block.attentions.0.group_norm.bias'],
      ['decoder.mid.attn_1.proj_out.weight', 'decoder.mid_block.attentions.0.to_out.0.weight'],
      ['decoder.mid.attn_1.k.bias', 'decoder.mid_block.attentions.0.to_k.bias'],
      // SD's VAE: 4 decoder levels; LDM up.3 runs first (diffusers up_blocks.0), up.0 last.
      ['decoder.up.3.block.0.conv1.weight', 'decoder.up_blocks.0.resnets.0.conv1.weight'],
      ['decoder.up.0.block.2.norm2.bias', 'decoder.up_blocks.3.resnets.2.norm2.bias'],
      ['decoder.up.1.upsample.conv.weight', 'decoder.up_blocks.2.upsamplers.0.conv.weight'],
      ['decoder.norm_out.weight', 'decoder.conv_norm_out.weight'],
      ['post_quant_conv.bias', 'post_quant_conv.bias'],
    ];
    for (const [ldm, diffusers] of cases) expect(ldmVaeName(ldm, 4), ldm).toBe(diffusers);
    expect(ldmVaeName('model_ema.decay', 4)).toBeNull();
    const map = ldmVaeToDiffusers(['decoder.up.0.block.0.conv1.weight', 'decoder.up.1.block.0.conv1.weight', 'quant_conv.weight']);
    expect(map.get('decoder.up_blocks.1.resnets.0.conv1.weight')?.source).toBe('decoder.up.0.block.0.conv1.weight');
    expect(map.get('decoder.up_blocks.0.resnets.0.conv1.weight')?.source).toBe('decoder.up.1.block.0.conv1.weight');
    expect(map.has('quant_conv.weight')).toBe(false); // identity
  });

  it('the structure comes from the checkpoint: levels, resnets, samplers, mid attention, quant convs', async () => {
    const weights = await openWeights(fixturePath(FIXTURE, 'model.safetensors'));
    try {
      const cfg = configureSdVae(weights, blockMapOf(weights));
      expect(cfg).toMatchObject({
        groups: 32,
        latentChannels: 4,
        encoderLevels: [{ resnets: 1, downsample: true }, { resnets: 1, downsample: false }],
        decoderLevels: [{ block: 0, resnets: 2, upsample: true }, { block: 1, resnets: 2, upsample: false }],
        encoderMid: { resnets: 2, attention: true },
        decoderMid: { resnets: 2, attention: true },
        quantConv: true,
        postQuantConv: true,
      });
      // Each step names one block of the map, once, in the map's order within each half.
      const names = blockMapOf(weights).blocks.map((b) => b.name);
      const encode = sdVaeModel.entries.encode!.steps(cfg, new Map()).map((s) => s.block!);
      const decode = sdVaeModel.entries.decode!.steps(cfg, new Map()).map((s) => s.block!);
      expect(new Set([...encode, ...decode]).size).toBe(encode.length + decode.length);
      expect([...encode, ...decode].sort()).toEqual([...names].sort());
      expect(encode).toEqual(names.filter((n) => encode.includes(n)));
      expect(decode).toEqual(names.filter((n) => decode.includes(n)));
    } finally {
      await weights.close();
    }
  });
});
