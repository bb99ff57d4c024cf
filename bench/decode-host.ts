/**
 * The host's share of a decoded token: a Llama as deep as an 8B one (32 layers) but narrow, so
 * the GPU's work is tiny and what is left is recording ops, encoding and submitting them.
 * Prints per token: wall ms, host recording ms, encoding/submitting ms and dispatches; the
 * wall time against (record + submit) says whether decode is host-bound.
 *
 *   node dist/bench/decode-host.js [--layers 32] [--hidden 256] [--tokens 24] [--alloc gpu:0,*]
 *   GPU machine: bash .gpu/run-lite.sh dist/bench/decode-host.js --out $OUT/decode-host.json
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { openDevices } from '../src/devices/open.ts';
import { openWeights } from '../src/formats/open-weights.ts';
import { writeSafetensorsFile, type TensorToWrite } from '../src/formats/safetensors-writer.ts';
import { loadModel } from '../src/runtime/model.ts';
import { BENCH_DAWN_FLAGS } from './matmul.ts';
import { decodeKernelProfile } from './profile.ts';

const { values: args } = parseArgs({
  options: {
    layers: { type: 'string', default: '32' },
    hidden: { type: 'string', default: '256' },
    tokens: { type: 'string', default: '24' },
    alloc: { type: 'string', default: 'gpu:0,*' },
    mode: { type: 'string', default: 'stream' },
    /** Adapter names to open, ';'-separated (e.g. the same one twice: two GPUs for a pipeline). */
    adapters: { type: 'string' },
    out: { type: 'string' },
  },
});
const layers = Number(args.layers);
const hidden = Number(args.hidden);
const heads = Math.max(2, hidden / 64);
const kvHeads = Math.max(1, heads / 4);
const inter = hidden * 3;
const vocab = 512;

/** Random bf16 weights (the dtype of the real-size runs), small so the GPU's share is negligible. */
function bf16(shape: number[], scale: number): TensorToWrite {
  const n = shape.reduce((a, b) => a * b, 1);
  const data = new Uint16Array(n);
  const f = new Float32Array(1);
  const u = new Uint32Array(f.buffer);
  for (let i = 0; i < n; i++) {
    f[0] = (Math.random() * 2 - 1) * scale;
    data[i] = u[0]! >>> 16;
  }
  return { name: '', dtype: 'BF16', shape, data };
}

const dir = mkdtempSync(join(tmpdir(), 'decode-host-'));
const tensors: TensorToWrite[] = [];
const add = (name: string, t: TensorToWrite) => tensors.push({ ...t, name });
const ones = (n: number): TensorToWrite => ({ name: '', dtype: 'BF16', shape: [n], data: new Uint16Array(n).fill(0x3f80) });
const headDim = hidden / heads;
add('model.embed_tokens.weight', bf16([vocab, hidden], 1));
for (let l = 0; l < layers; l++) {
  const p = `model.layers.${l}.`;
  add(`${p}input_layernorm.weight`, ones(hidden));
  add(`${p}post_attention_layernorm.weight`, ones(hidden));
  add(`${p}self_attn.q_proj.weight`, bf16([heads * headDim, hidden], 0.05));
  add(`${p}self_attn.k_proj.weight`, bf16([kvHeads * headDim, hidden], 0.05));
  add(`${p}self_attn.v_proj.weight`, bf16([kvHeads * headDim, hidden], 0.05));
  add(`${p}self_attn.o_proj.weight`, bf16([hidden, heads * headDim], 0.05));
  add(`${p}mlp.gate_proj.weight`, bf16([inter, hidden], 0.05));
  add(`${p}mlp.up_proj.weight`, bf16([inter, hidden], 0.05));
  add(`${p}mlp.down_proj.weight`, bf16([hidden, inter], 0.05));
}
add('model.norm.weight', ones(hidden));
add('lm_head.weight', bf16([vocab, hidden], 0.05));
await writeSafetensorsFile(join(dir, 'model.safetensors'), tensors);
writeFileSync(join(dir, 'config.json'), JSON.stringify({
  model_type: 'llama', hidden_size: hidden, intermediate_size: inter, num_hidden_layers: layers, num_attention_heads: heads,
  num_key_value_heads: kvHeads, head_dim: headDim, vocab_size: vocab, rms_norm_eps: 1e-5, max_position_embeddings: 512,
  rope_parameters: { rope_theta: 500000, rope_type: 'default' }, tie_word_embeddings: false, hidden_act: 'silu',
}));

const devices = await openDevices({ dawnFlags: BENCH_DAWN_FLAGS, ...(args.adapters ? { adapters: args.adapters.split(';') } : {}) });
const tokens = Number(args.tokens);
try {
  const weights = await openWeights(dir);
  const model = await loadModel(devices, weights, { allocation: args.alloc!, mode: args.mode as 'stream' | 'pipeline' });
  const prompt = [1, 2, 3, 4, 5, 6, 7, 8];
  await model.generate(prompt, 4); // compiles every pipeline
  const g = await model.generate(prompt, tokens);
  const steps = tokens - 1;
  const per = (ms: number) => ms / steps;
  const result = {
    device: devices.gpus[0]?.adapterName ?? 'none', layers, hidden, tokens,
    msPerToken: per(g.ms.decode), recordMsPerToken: per(g.decodeHostMs.record), submitMsPerToken: per(g.decodeHostMs.submit),
    hopMsPerToken: per(g.decodeHostMs.hop), dispatchesPerToken: g.decodeHostMs.dispatches / steps,
    submitsPerToken: g.decodeHostMs.submits / steps, bindGroupsPerToken: g.decodeHostMs.bindGroups / steps,
    alloc: args.alloc, mode: args.mode, gpus: devices.gpus.map((d) => d.adapterName),
  };
  const hostShare = (result.recordMsPerToken + result.submitMsPerToken) / result.msPerToken;
  console.log(`${result.device}: ${layers} layers, hidden ${hidden}: ${result.msPerToken.toFixed(2)} ms a token; host recording ${result.recordMsPerToken.toFixed(2)} ms, `
    + `encoding+submitting ${result.submitMsPerToken.toFixed(2)} ms (${(hostShare * 100).toFixed(0)}% of the token), waiting for hops ${result.hopMsPerToken.toFixed(2)} ms, `
    + `${result.dispatchesPerToken.toFixed(0)} dispatches in ${result.submitsPerToken.toFixed(0)} submits, ${result.bindGroupsPerToken.toFixed(0)} bind groups made `
    + `(${((result.recordMsPerToken + result.submitMsPerToken) * 1000 / result.dispatchesPerToken).toFixed(1)} µs each)`);
  const kernels = await decodeKernelProfile(model, prompt);
  if (kernels.length > 0) {
    console.log(`GPU time of a decoded token ${kernels.reduce((a, k) => a + k.ms, 0).toFixed(2)} ms: ${kernels.map((k) => `${k.label} ${k.ms.toFixed(3)} ms (${k.dispatches})`).join(', ')}`);
  }
  if (args.out) writeFileSync(args.out, `${JSON.stringify({ ...result, hostShare, kernels }, null, 2)}\n`);
  await model.unload();
  await weights.close();
} finally {
  await devices.close();
  rmSync(dir, { recursive: true, force: true });
}
