// Block maps: which tensors form which block, header-only, for every family and naming scheme.
import { describe, expect, it } from 'vitest';
import { openWeights } from '../src/formats/open-weights.ts';
import { WeightSet, type WeightTensor } from '../src/formats/weights.ts';
import { UnknownModelError, UnmappedTensorsError } from '../src/models/blocks.ts';
import { blockMapOf } from '../src/models/registry.ts';
import { fixturePath } from './fixtures.ts';

/** A header-only WeightSet: names and sizes, no data. */
function namesOnly(names: readonly string[], config: Record<string, unknown> | null = null): WeightSet {
  const tensors = new Map<string, WeightTensor>(names.map((name) => [name, {
    name, dtype: 'F16', shape: [8], byteLength: 16, file: 'synthetic',
    readRaw: () => Promise.reject(new Error('header only')), readF32: () => Promise.reject(new Error('header only')),
  }]));
  return new WeightSet({ name: 'synthetic', format: 'safetensors', tensors, config });
}

async function mapOf(folder: string) {
  const weights = await openWeights(fixturePath(folder));
  try {
    const map = blockMapOf(weights);
    // Every tensor belongs to exactly one block.
    const owned = map.blocks.flatMap((b) => b.tensors);
    expect(owned.sort()).toEqual([...weights.tensors.keys()].sort());
    expect(map.blocks.reduce((a, b) => a + b.storedBytes, 0)).toBe(weights.byteLength);
    return map;
  } finally {
    await weights.close();
  }
}

const layers = (prefix: string, n: number) => Array.from({ length: n }, (_, i) => `${prefix}.${i}`);

describe('the fixtures, under transformers/diffusers names', () => {
  it.each([
    ['llama-tiny', 'llama', ['embed_tokens', ...layers('layers', 4), 'norm', 'lm_head']],
    ['llama-gguf-tiny', 'llama', ['embed_tokens', ...layers('layers', 2), 'norm', 'lm_head']],
    ['gpt2-tiny', 'gpt2', ['wte', 'wpe', ...layers('h', 3), 'ln_f', 'lm_head']],
    ['clip-text-tiny', 'clip-text', ['token_embedding', 'position_embedding', ...layers('layers', 3), 'final_layer_norm']],
    ['t5-encoder-tiny', 't5-encoder', ['shared', ...layers('block', 2), 'final_layer_norm']],
    ['flux-dit-tiny', 'flux-dit', ['x_embedder', 'context_embedder', 'time_text_embed', 'double.0', 'single.0', 'single.1', 'norm_out', 'proj_out']],
    ['vae-tiny', 'sd-vae', ['encoder.conv_in', 'encoder.down.0.res.0', 'encoder.down.0.downsample', 'encoder.down.1.res.0',
      'encoder.mid.res.0', 'encoder.mid.attn', 'encoder.mid.res.1', 'encoder.conv_out', 'quant_conv', 'post_quant_conv',
      'decoder.conv_in', 'decoder.mid.res.0', 'decoder.mid.attn', 'decoder.mid.res.1', 'decoder.up.0.res.0', 'decoder.up.0.res.1',
      'decoder.up.0.upsample', 'decoder.up.1.res.0', 'decoder.up.1.res.1', 'decoder.conv_out']],
    ['unet-tiny', 'sd-unet', ['time_embedding', 'conv_in', 'down.0.res.0', 'down.0.attn.0', 'down.0.downsample', 'down.1.res.0',
      'mid.res.0', 'mid.attn.0', 'mid.res.1', 'up.0.res.0', 'up.0.res.1', 'up.0.upsample', 'up.1.res.0', 'up.1.attn.0', 'up.1.res.1', 'up.1.attn.1', 'conv_out']],
  ])('%s is %s with blocks %j, in execution order', async (folder, family, blocks) => {
    const map = await mapOf(folder);
    expect(map.family).toBe(family);
    expect(map.blocks.map((b) => b.name)).toEqual(blocks);
  });

  it('gpt2\'s head is its token embedding: the head block owns nothing and reads wte', async () => {
    const map = await mapOf('gpt2-tiny');
    const head = map.blocks.find((b) => b.name === 'lm_head')!;
    expect(head).toMatchObject({ kind: 'head', tensors: [], shared: ['transformer.wte.weight'], storedBytes: 0 });
  });

  it('T5 keeps one shared embedding; a checkpoint that also stores encoder.embed_tokens puts it in the same block', async () => {
    const map = await mapOf('t5-encoder-tiny');
    expect(map.blocks[0]).toMatchObject({ name: 'shared', kind: 'embedding', tensors: ['shared.weight'] });
    const both = blockMapOf(namesOnly(['shared.weight', 'encoder.embed_tokens.weight', 'encoder.block.0.layer.0.SelfAttention.q.weight', 'encoder.final_layer_norm.weight']));
    expect(both.blocks[0]).toMatchObject({ name: 'shared', tensors: ['shared.weight', 'encoder.embed_tokens.weight'] });
  });

  it('a Llama without lm_head (tie_word_embeddings) reads its head from the embedding', () => {
    const map = blockMapOf(namesOnly(['model.embed_tokens.weight', 'model.layers.0.self_attn.q_proj.weight', 'model.norm.weight']));
    expect(map.blocks.at(-1)).toMatchObject({ name: 'lm_head', tensors: [], shared: ['model.embed_tokens.weight'] });
  });

  it('llama.cpp names (GGUF) map to the same blocks', async () => {
    const map = await mapOf('llama-gguf-tiny');
    expect(map.scheme).toBe('gguf');
    expect(map.blocks[1]!.tensors).toContain('blk.0.attn_q.weight');
  });
});

describe('ComfyUI\'s original names', () => {
  it('SD UNet (LDM: input_blocks / middle_block / output_blocks)', () => {
    const map = blockMapOf(namesOnly([
      'time_embed.0.weight', 'input_blocks.0.0.weight', 'input_blocks.1.0.in_layers.0.weight', 'input_blocks.1.1.proj_in.weight',
      'input_blocks.3.0.op.weight', 'middle_block.0.in_layers.0.weight', 'middle_block.1.proj_in.weight', 'middle_block.2.in_layers.0.weight',
      'output_blocks.0.0.in_layers.0.weight', 'output_blocks.2.1.conv.weight', 'out.0.weight', 'out.2.weight', 'label_emb.0.0.weight',
    ]));
    expect(map).toMatchObject({ family: 'sd-unet', scheme: 'comfyui' });
    expect(map.blocks.map((b) => b.name)).toEqual(['time_embedding', 'add_embedding', 'conv_in', 'input.1.0', 'input.1.1', 'input.3.0',
      'middle.0', 'middle.1', 'middle.2', 'output.0.0', 'output.2.1', 'conv_out']);
  });

  it('VAE (LDM: the decoder\'s up levels run from the highest index down)', () => {
    const map = blockMapOf(namesOnly([
      'encoder.conv_in.weight', 'encoder.down.0.block.0.conv1.weight', 'encoder.down.0.downsample.conv.weight', 'encoder.down.1.block.0.conv1.weight',
      'encoder.mid.block_1.conv1.weight', 'encoder.mid.attn_1.q.weight', 'encoder.mid.block_2.conv1.weight', 'encoder.norm_out.weight', 'encoder.conv_out.weight',
      'quant_conv.weight', 'post_quant_conv.weight', 'decoder.conv_in.weight', 'decoder.mid.block_1.conv1.weight', 'decoder.mid.attn_1.q.weight',
      'decoder.mid.block_2.conv1.weight', 'decoder.up.0.block.0.conv1.weight', 'decoder.up.1.block.0.conv1.weight', 'decoder.up.1.upsample.conv.weight',
      'decoder.norm_out.weight', 'decoder.conv_out.weight',
    ]));
    expect(map).toMatchObject({ family: 'sd-vae', scheme: 'comfyui' });
    expect(map.blocks.map((b) => b.name).slice(10)).toEqual(['decoder.conv_in', 'decoder.mid.res.0', 'decoder.mid.attn', 'decoder.mid.res.1',
      'decoder.up.1.res.0', 'decoder.up.1.upsample', 'decoder.up.0.res.0', 'decoder.conv_out']);
  });

  it('FLUX (Black Forest Labs: img_in, double_blocks, single_blocks, final_layer)', () => {
    const map = blockMapOf(namesOnly(['img_in.weight', 'txt_in.weight', 'time_in.in_layer.weight', 'vector_in.in_layer.weight', 'guidance_in.in_layer.weight',
      'double_blocks.0.img_attn.qkv.weight', 'double_blocks.1.img_attn.qkv.weight', 'single_blocks.0.linear1.weight', 'final_layer.adaLN_modulation.1.weight', 'final_layer.linear.weight']));
    expect(map).toMatchObject({ family: 'flux-dit', scheme: 'comfyui' });
    expect(map.blocks.map((b) => b.name)).toEqual(['x_embedder', 'context_embedder', 'time_text_embed', 'double.0', 'double.1', 'single.0', 'norm_out', 'proj_out']);
  });

  it('CLIP under SD1\'s cond_stage_model.transformer., and open_clip (SD2/SDXL)', () => {
    const sd1 = blockMapOf(namesOnly(['transformer.text_model.embeddings.token_embedding.weight', 'transformer.text_model.embeddings.position_embedding.weight',
      'transformer.text_model.encoder.layers.0.mlp.fc1.weight', 'transformer.text_model.final_layer_norm.weight']));
    expect(sd1.blocks.map((b) => b.name)).toEqual(['token_embedding', 'position_embedding', 'layers.0', 'final_layer_norm']);
    const open = blockMapOf(namesOnly(['model.token_embedding.weight', 'model.positional_embedding', 'model.transformer.resblocks.0.attn.in_proj_weight',
      'model.transformer.resblocks.1.attn.in_proj_weight', 'model.ln_final.weight', 'model.text_projection', 'model.logit_scale']));
    expect(open).toMatchObject({ family: 'clip-text', scheme: 'openclip' });
    expect(open.blocks.map((b) => b.name)).toEqual(['token_embedding', 'position_embedding', 'layers.0', 'layers.1', 'final_layer_norm', 'text_projection']);
  });
});

describe('typed errors', () => {
  it('tensors a family does not know are named', () => {
    const attempt = () => blockMapOf(namesOnly(['model.embed_tokens.weight', 'model.layers.0.self_attn.q_proj.weight', 'model.vision_tower.weight']));
    expect(attempt).toThrow(UnmappedTensorsError);
    expect(attempt).toThrow('synthetic: 1 tensor(s) fit no block of llama: model.vision_tower.weight');
  });

  it('a checkpoint of no known family says so', () => {
    expect(() => blockMapOf(namesOnly(['foo.weight', 'bar.bias']))).toThrow(UnknownModelError);
    expect(() => blockMapOf(namesOnly(['foo.weight']))).toThrow('no known model family matches its tensors (foo.weight)');
  });
});
