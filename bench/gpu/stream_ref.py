"""PyTorch reference + baselines for the layer-streaming benchmark (run on the GPU machine).

Builds a Llama-3-8B-shaped LlamaForCausalLM with seeded random weights (normal, std 0.02; RMSNorm
weights 1) directly in bfloat16 on the GPU and saves it to --model-dir as sharded safetensors
(config.json, model-0000x-of-0000y.safetensors, model.safetensors.index.json). If --model-dir
already holds a complete checkpoint of the same shape, it is loaded instead and the save skipped.

Then writes
  <model-dir>/reference.safetensors   input_ids int64 [1, 16], logits_last float32 [vocab]
                                      (float32 activations over the bf16 weights, TF32 off),
                                      greedy_tokens int64 [8] (greedy from the float32 model)
and times, with the bf16 model and eager attention,
  torch_resident       whole model on the GPU: prefill ms, decode tok/s
  accelerate_offload   per split s: first (1 - s) of the decoder layers on cuda:0, the rest on
                       the CPU through accelerate's offload hooks (weights copied to the GPU at
                       every forward)
  pinned/pageable_h2d  host-to-GPU copy bandwidth of a 1 GiB uint8 tensor
into --json (rewritten after every stage, so a run cut short keeps what it measured).

  decode tok/s = (tokens - 1) / (generate total - prefill), prefill = one forward over the prompt.
"""
import argparse
import copy
import gc
import inspect
import json
import os
import struct
import time

import torch

import accelerate
import transformers
from safetensors.torch import save_file
from transformers import LlamaConfig, LlamaForCausalLM

p = argparse.ArgumentParser()
p.add_argument("--model-dir", required=True)
p.add_argument("--json", required=True)
p.add_argument("--layers", type=int, default=32)
p.add_argument("--tokens", type=int, default=32, help="new tokens for the resident decode")
p.add_argument("--offload-tokens", type=int, default=6, help="new tokens per accelerate offload split")
p.add_argument("--splits", default="0.25,0.5,0.75", help="fractions of the decoder layers kept on the CPU")
p.add_argument("--skip-offload", action="store_true")
a = p.parse_args()
splits = [float(s) for s in a.splits.split(",") if s.strip()]
os.makedirs(a.model_dir, exist_ok=True)
if os.path.dirname(os.path.abspath(a.json)):
    os.makedirs(os.path.dirname(os.path.abspath(a.json)), exist_ok=True)

T0 = time.perf_counter()


def log(msg):
    print(f"[stream_ref {time.perf_counter() - T0:7.1f}s] {msg}", flush=True)


torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False
torch.set_float32_matmul_precision("highest")
dev = torch.device("cuda")

# transformers >= 4.56 calls it `dtype` (v5 still accepts `torch_dtype`, with a deprecation warning)
_tv = tuple(int(x) for x in transformers.__version__.split(".")[:2] if x.isdigit())
DTYPE_KW = "dtype" if _tv >= (4, 56) else "torch_dtype"
HAS_LOGITS_TO_KEEP = "logits_to_keep" in inspect.signature(LlamaForCausalLM.forward).parameters

SHAPE = dict(
    hidden_size=4096,
    intermediate_size=14336,
    num_hidden_layers=a.layers,
    num_attention_heads=32,
    num_key_value_heads=8,
    vocab_size=128256,
    max_position_embeddings=8192,
    rope_theta=500000.0,
    rms_norm_eps=1e-5,
    tie_word_embeddings=False,
    initializer_range=0.02,
)
L = a.layers
H, I, V = SHAPE["hidden_size"], SHAPE["intermediate_size"], SHAPE["vocab_size"]
KVD = SHAPE["num_key_value_heads"] * (H // SHAPE["num_attention_heads"])
EXPECTED_PARAMS = 2 * V * H + H + L * (2 * H * H + 2 * H * KVD + 3 * H * I + 2 * H)

out = {
    "device": torch.cuda.get_device_name(0),
    "torch": torch.__version__,
    "cuda": torch.version.cuda,
    "transformers": transformers.__version__,
    "accelerate": accelerate.__version__,
    "config": dict(SHAPE, attn_implementation="eager", dtype="bfloat16"),
    "model_dir": os.path.abspath(a.model_dir),
}


def dump():
    with open(a.json, "w") as f:
        json.dump(out, f, indent=2)


def sync():
    torch.cuda.synchronize()


def timed(fn):
    """Run fn once; wall seconds with a synchronize on both sides (host-driven loops like generate)."""
    sync()
    t = time.perf_counter()
    r = fn()
    sync()
    return r, time.perf_counter() - t


def fmt(x, spec=".2f"):
    return "n/a" if x is None else format(x, spec)


def free_gpu():
    gc.collect()
    torch.cuda.empty_cache()


# ---------------------------------------------------------------- checkpoint: reuse or build + save
def _safetensors_numel(path):
    """Parameter count from a safetensors header; None if the file is truncated or not bf16."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
    end, numel = 0, 0
    for k, v in header.items():
        if k == "__metadata__":
            continue
        if v["dtype"] != "BF16":
            return None
        c = 1
        for d in v["shape"]:
            c *= d
        numel += c
        end = max(end, v["data_offsets"][1])
    return numel if os.path.getsize(path) == 8 + n + end else None


def existing_checkpoint_ok(d):
    cfg_path = os.path.join(d, "config.json")
    if not os.path.exists(cfg_path):
        return False, "no config.json"
    with open(cfg_path) as f:
        if json.load(f).get("model_type") != "llama":
            return False, "config model_type is not llama"
    try:
        cfg = LlamaConfig.from_pretrained(d)  # fills in defaults that save_pretrained leaves out of config.json
    except Exception as e:
        return False, f"config.json unreadable: {e!r}"
    for k, v in SHAPE.items():
        if k == "initializer_range":
            continue
        if k == "rope_theta":
            rp = getattr(cfg, "rope_parameters", None)
            got = rp.get("rope_theta") if isinstance(rp, dict) and "rope_theta" in rp else getattr(cfg, "rope_theta", None)
        else:
            got = getattr(cfg, k, None)
        if got is None or (isinstance(v, float) and abs(float(got) - v) > 1e-6 * max(1.0, abs(v))) or (not isinstance(v, float) and got != v):
            return False, f"config {k}={got!r}, want {v!r}"
    index = os.path.join(d, "model.safetensors.index.json")
    if os.path.exists(index):
        with open(index) as f:
            files = sorted(set(json.load(f)["weight_map"].values()))
    elif os.path.exists(os.path.join(d, "model.safetensors")):
        files = ["model.safetensors"]
    else:
        return False, "no model.safetensors.index.json / model.safetensors"
    total = 0
    for fn in files:
        path = os.path.join(d, fn)
        if not os.path.exists(path):
            return False, f"missing shard {fn}"
        c = _safetensors_numel(path)
        if c is None:
            return False, f"shard {fn} truncated or not bf16"
        total += c
    if total != EXPECTED_PARAMS:
        return False, f"checkpoint holds {total} params, want {EXPECTED_PARAMS}"
    return True, f"{len(files)} shard(s)"


def build_model():
    config = LlamaConfig(
        **SHAPE,
        attn_implementation="eager",
        torch_dtype="bfloat16",  # v5 moves it to config.dtype; saved as "dtype": "bfloat16"
        use_cache=True,
    )
    rp = getattr(config, "rope_parameters", None)
    if isinstance(rp, dict) and "rope_theta" in rp:
        assert float(rp["rope_theta"]) == SHAPE["rope_theta"], rp
    torch.manual_seed(0)
    prev = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        with torch.device("cuda"):
            m = LlamaForCausalLM(config)  # allocated and initialised on the GPU, in bf16
    finally:
        torch.set_default_dtype(prev)
    # Explicit, version-independent init (what _init_weights does): Linear/Embedding ~ N(0, 0.02), norms = 1.
    # The rotary inv_freq buffers keep the float32 values computed at construction.
    torch.manual_seed(0)
    std = SHAPE["initializer_range"]
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, (torch.nn.Linear, torch.nn.Embedding)):
                torch.nn.init.normal_(mod.weight, mean=0.0, std=std)
                if getattr(mod, "bias", None) is not None:
                    mod.bias.zero_()
            elif "RMSNorm" in type(mod).__name__:
                mod.weight.fill_(1.0)
    m.eval()
    return m


def load_model(d):
    kw = {DTYPE_KW: torch.bfloat16}
    try:
        m = LlamaForCausalLM.from_pretrained(d, attn_implementation="eager", device_map={"": 0}, **kw)
    except Exception as e:  # no device_map support -> load on CPU then move
        log(f"from_pretrained(device_map={{'': 0}}) failed ({e!r}); loading on the CPU and moving")
        m = LlamaForCausalLM.from_pretrained(d, attn_implementation="eager", **kw).cuda()
    m.eval()
    return m


ok, why = existing_checkpoint_ok(a.model_dir)
if ok:
    log(f"reusing checkpoint in {a.model_dir} ({why}); loading to cuda:0")
    model, load_s = timed(lambda: load_model(a.model_dir))
    out["save_s"] = None
    out["save_skipped"] = True
    out["load_s"] = load_s
else:
    log(f"building model ({why}): {L} layers, bf16 on the GPU")
    model, build_s = timed(build_model)
    out["build_s"] = build_s
    log(f"built in {build_s:.1f}s; saving to {a.model_dir}")
    save_kw = {"max_shard_size": "5GB"}
    if "safe_serialization" in inspect.signature(model.save_pretrained).parameters:
        save_kw["safe_serialization"] = True  # v4; v5 always writes safetensors and has no such argument
    _, save_s = timed(lambda: model.save_pretrained(a.model_dir, **save_kw))
    out["save_s"] = save_s
    out["save_skipped"] = False
    ok2, why2 = existing_checkpoint_ok(a.model_dir)
    out["save_check"] = why2
    log(f"saved in {save_s:.1f}s ({why2})")
    if not ok2:
        raise SystemExit(f"saved checkpoint failed its own check: {why2}")

params = sum(t.numel() for t in model.parameters())
out["params"] = params
out["bf16_bytes"] = sum(t.numel() * t.element_size() for t in model.parameters())
out["layer_bytes"] = sum(t.numel() * t.element_size() for t in model.model.layers[0].parameters())
with torch.no_grad():
    out["init_check"] = {
        "embed_std": model.model.embed_tokens.weight.float().std().item(),
        "q_proj0_std": model.model.layers[0].self_attn.q_proj.weight.float().std().item(),
        "down_proj_last_std": model.model.layers[-1].mlp.down_proj.weight.float().std().item(),
        "lm_head_std": model.lm_head.weight.float().std().item(),
        "norm_mean": model.model.norm.weight.float().mean().item(),
    }
if params != EXPECTED_PARAMS:
    log(f"WARNING: model has {params} params, formula says {EXPECTED_PARAMS}")
log(f"params {params / 1e9:.3f} B, {out['bf16_bytes'] / 2**30:.2f} GiB bf16, init {out['init_check']}")
dump()

# ---------------------------------------------------------------- reference (float32 activations)
input_ids = (torch.arange(16, dtype=torch.int64) * 7919 % V).reshape(1, 16)
ids_gpu = input_ids.to(dev)
attn = torch.ones_like(ids_gpu)
GEN_KW = dict(do_sample=False, pad_token_id=model.config.eos_token_id if isinstance(model.config.eos_token_id, int) else 0)
FWD_KW = {"logits_to_keep": 1} if HAS_LOGITS_TO_KEEP else {}


def last_logits(m):
    with torch.no_grad():
        return m(input_ids=ids_gpu, attention_mask=attn, use_cache=True, **FWD_KW).logits[0, -1].float()


def greedy(m, n):
    with torch.no_grad():
        seq = m.generate(ids_gpu, attention_mask=attn, max_new_tokens=n, min_new_tokens=n, **GEN_KW)
    return seq[0, ids_gpu.shape[1]:].cpu()


log("reference: float32 copy of the bf16 weights on the GPU (TF32 off)")
t_ref = time.perf_counter()
ref_config = copy.deepcopy(model.config)  # already says eager attention
prev = torch.get_default_dtype()
torch.set_default_dtype(torch.float32)
with torch.device("cuda"):
    ref = LlamaForCausalLM(ref_config)
torch.set_default_dtype(prev)
with torch.no_grad():
    ref.load_state_dict(model.state_dict())  # copy_ upcasts bf16 -> f32 exactly
ref = ref.float().eval()
assert all(t.dtype == torch.float32 for t in ref.parameters())
ref_logits = last_logits(ref).cpu()
ref_greedy = greedy(ref, 8)
del ref
free_gpu()
top2 = torch.topk(ref_logits, 2).values
out["reference"] = {
    "seconds": time.perf_counter() - t_ref,
    "argmax": int(ref_logits.argmax()),
    "top2_gap": float(top2[0] - top2[1]),
    "logits_absmax": float(ref_logits.abs().max()),
    "greedy_tokens": ref_greedy.tolist(),
}
save_file(
    {"input_ids": input_ids.contiguous(), "logits_last": ref_logits.contiguous(), "greedy_tokens": ref_greedy.to(torch.int64).contiguous()},
    os.path.join(a.model_dir, "reference.safetensors"),
)
log(f"reference done: argmax {out['reference']['argmax']}, top-2 gap {out['reference']['top2_gap']:.4g}, greedy {ref_greedy.tolist()}")

bf16_logits = last_logits(model).cpu()
bf16_greedy8 = greedy(model, 8)
n_match = 0
for x, y in zip(bf16_greedy8.tolist(), ref_greedy.tolist()):
    if x != y:
        break
    n_match += 1
out["bf16_vs_f32"] = {
    "max_abs_err": float((bf16_logits - ref_logits).abs().max()),
    "rel_err": float((bf16_logits - ref_logits).abs().max() / ref_logits.abs().max()),
    "argmax_match": int(bf16_logits.argmax()) == int(ref_logits.argmax()),
    "greedy_prefix_match": n_match,
}
log(f"bf16 vs f32: {out['bf16_vs_f32']}")
dump()

# ---------------------------------------------------------------- torch_resident
log(f"torch_resident: warm-up generate({a.tokens})")
torch.cuda.reset_peak_memory_stats()
greedy(model, a.tokens)
last_logits(model)
pf = []
for _ in range(3):
    _, s = timed(lambda: last_logits(model))
    pf.append(s)
prefill_s = sorted(pf)[1]
toks, total_s = timed(lambda: greedy(model, a.tokens))
decode_s = total_s - prefill_s
out["torch_resident"] = {
    "tokens": a.tokens,
    "prefill_ms": prefill_s * 1e3,
    "total_s": total_s,
    "decode_tok_s": (a.tokens - 1) / decode_s if decode_s > 0 else None,
    "ms_per_token": decode_s / (a.tokens - 1) * 1e3 if a.tokens > 1 else None,
    "peak_gpu_GiB": torch.cuda.max_memory_allocated() / 2**30,
    "generated": toks.tolist(),
}
resident_tokens = toks.tolist()
log(f"torch_resident: prefill {prefill_s * 1e3:.1f} ms, decode {fmt(out['torch_resident']['decode_tok_s'])} tok/s, total {total_s:.2f}s")
dump()
del model
free_gpu()

# ---------------------------------------------------------------- host -> GPU bandwidth
def h2d_GBps(pinned):
    src = torch.empty(1 << 30, dtype=torch.uint8, pin_memory=pinned)
    src.fill_(1)  # fault the pages in
    d = src.to("cuda", non_blocking=True)
    sync()
    del d
    best = float("inf")
    for _ in range(5):
        d, s = timed(lambda: src.to("cuda", non_blocking=True))
        best = min(best, s)
        del d
    del src
    return (1 << 30) / best / 1e9


out["pinned_h2d_GBps"] = h2d_GBps(True)
out["pageable_h2d_GBps"] = h2d_GBps(False)
free_gpu()
log(f"H2D 1 GiB: pinned {out['pinned_h2d_GBps']:.1f} GB/s, pageable {out['pageable_h2d_GBps']:.1f} GB/s")
dump()

# ---------------------------------------------------------------- accelerate_offload
out["accelerate_offload"] = {}
if a.skip_offload:
    log("accelerate_offload: skipped (--skip-offload)")
for s in [] if a.skip_offload else splits:
    key = format(s, "g")
    n_gpu = round(L * (1 - s))
    rec = {"gpu_layers": n_gpu, "cpu_layers": L - n_gpu, "tokens": a.offload_tokens}
    out["accelerate_offload"][key] = rec
    m = None
    try:
        device_map = {"model.embed_tokens": 0, "model.norm": 0, "model.rotary_emb": 0, "lm_head": 0}
        for i in range(L):
            device_map[f"model.layers.{i}"] = 0 if i < n_gpu else "cpu"
        log(f"accelerate_offload {key}: loading ({n_gpu} layers on cuda:0, {L - n_gpu} on the CPU)")
        torch.cuda.reset_peak_memory_stats()
        m, load_s = timed(
            lambda: LlamaForCausalLM.from_pretrained(
                a.model_dir, device_map=device_map, attn_implementation="eager", **{DTYPE_KW: torch.bfloat16}
            )
        )
        m.eval()
        rec["load_s"] = load_s
        rec["gpu_GiB_after_load"] = torch.cuda.memory_allocated() / 2**30
        rec["hf_device_map_cpu_entries"] = sum(1 for v in (getattr(m, "hf_device_map", None) or {}).values() if v == "cpu")
        log(f"accelerate_offload {key}: loaded in {load_s:.1f}s, {rec['gpu_GiB_after_load']:.1f} GiB on the GPU; prefill")
        _, prefill_s = timed(lambda: last_logits(m))
        rec["prefill_ms"] = prefill_s * 1e3
        log(f"accelerate_offload {key}: prefill {prefill_s * 1e3:.0f} ms; generate({a.offload_tokens})")
        toks, total_s = timed(lambda: greedy(m, a.offload_tokens))
        decode_s = total_s - prefill_s
        rec["total_s"] = total_s
        rec["decode_tok_s"] = (a.offload_tokens - 1) / decode_s if decode_s > 0 else None
        rec["ms_per_token"] = decode_s / (a.offload_tokens - 1) * 1e3 if a.offload_tokens > 1 else None
        rec["peak_gpu_GiB"] = torch.cuda.max_memory_allocated() / 2**30
        rec["generated"] = toks.tolist()
        rec["matches_resident"] = toks.tolist() == resident_tokens[: len(toks)]
        log(f"accelerate_offload {key}: decode {fmt(rec['decode_tok_s'], '.3f')} tok/s, total {total_s:.1f}s, matches resident {rec['matches_resident']}")
    except Exception as e:  # record and go on with the next split
        rec["error"] = f"{type(e).__name__}: {e}"
        log(f"accelerate_offload {key}: ERROR {rec['error']}")
    finally:
        del m
        free_gpu()
        dump()

# ---------------------------------------------------------------- summary
out["wall_s"] = time.perf_counter() - T0
dump()
r = out["torch_resident"]
print(f"device {out['device']}  torch {out['torch']}  transformers {out['transformers']}  accelerate {out['accelerate']}")
print(f"model {L} layers, {out['params'] / 1e9:.3f} B params, {out['bf16_bytes'] / 2**30:.2f} GiB bf16, save {fmt(out['save_s'], '.1f')} s")
print(f"reference: argmax {out['reference']['argmax']} (top-2 gap {out['reference']['top2_gap']:.4g}), greedy {out['reference']['greedy_tokens']}")
print(f"bf16 vs f32 logits: max abs {out['bf16_vs_f32']['max_abs_err']:.4g}, greedy prefix match {out['bf16_vs_f32']['greedy_prefix_match']}/8")
print(f"torch_resident: prefill {r['prefill_ms']:.1f} ms, decode {fmt(r['decode_tok_s'])} tok/s ({a.tokens} tokens, {r['total_s']:.2f} s)")
for k, v in out["accelerate_offload"].items():
    if "error" in v:
        print(f"accelerate_offload {k}: ERROR {v['error']}")
    else:
        print(f"accelerate_offload {k} ({v['cpu_layers']}/{L} layers on CPU): prefill {v['prefill_ms']:.0f} ms, decode {fmt(v['decode_tok_s'], '.3f')} tok/s")
print(f"H2D 1 GiB: pinned {out['pinned_h2d_GBps']:.1f} GB/s, pageable {out['pageable_h2d_GBps']:.1f} GB/s")
print(f"wrote {a.json} and {os.path.join(a.model_dir, 'reference.safetensors')} ({out['wall_s']:.0f} s)")
