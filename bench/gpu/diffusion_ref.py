"""PyTorch reference + baseline for the diffusion-scale benchmark (bench/diffusion.ts; run on the GPU machine).

diffusers is not needed (the GPU machine has none): the models are bench/gpu/diffusion_torch.py, a
plain-torch re-implementation of diffusers' FluxTransformer2DModel forward and AutoencoderKL
decode over diffusers-named weights. Stages, each in its own try block, torch.json rewritten after
each:

  fixtures  that re-implementation in float32 (TF32 off, SDPA math backend) on the repo's tiny
            fixtures test/fixtures/flux-dit-tiny and vae-tiny, whose expected outputs real
            diffusers produced: max|err|/max|ref| must be <= 1e-4 (torch.json `fixture_checks`,
            `fixture_checks_pass`). A failure is recorded and the rest still runs.
  flux      FLUX.1's full width (24 heads x 128 = 3072, joint_attention_dim 4096,
            pooled_projection_dim 768, in_channels 64, axes_dims_rope 16/56/56, guidance_embeds)
            cut to num_layers=1, num_single_layers=1; inputs for a 1024^2 image: hidden_states
            [1, 4096, 64], encoder_hidden_states [1, 512, 4096], pooled_projections [1, 768],
            timestep [1] = 0.5 (a sigma; the model multiplies by 1000), guidance [1] = 3.5,
            img_ids [4096, 3] (0, row, col), txt_ids [512, 3] zeros.
  vae       FLUX.1's VAE config (block_out_channels 128/256/512/512, layers_per_block 2,
            latent_channels 16, no quant convs; scaling 0.3611 / shift 0.1159 recorded in the
            config but not applied: decode(z) as our sd-vae decode entry); latents
            [1, 16, 128, 128] -> decoded [1, 3, 1024, 1024].

Weights: drawn on the GPU from a seeded generator by name and shape (diffusion_torch.flux_shapes /
vae_shapes: the state dict a diffusers model of that config has, the same lists as bench/diffusion.ts
--synthetic): Linear/Conv2d weights and biases uniform in +-1/sqrt(fan_in), norm weights 1 +- 0.1,
norm biases +- 0.1; cast to bfloat16 and saved as a diffusers folder (<out-dir>/<part>/config.json +
diffusion_pytorch_model.safetensors). Inputs are drawn in float32 and rounded to bf16-representable
values, so the f32 reference, PyTorch's bf16 run and ours all see the same numbers.

<out-dir>/<part>/expected.safetensors: the inputs (float32, named as the diffusers arguments) and
the reference output (flux: sample [1, 4096, 64]; vae: decoded [1, 3, 1024, 1024]), computed in
float32 from the same bf16 weights upcast (exact), TF32 off, SDPA math backend. It is removed when
a part starts, written with the inputs alone once they are drawn, and rewritten with the reference
at the end: a part that fails after its inputs still leaves our side something to run (unchecked).

<out-dir>/torch.json: fixture_checks; per part bf16_ms (CUDA events, GPU-resident bf16 inputs,
eager, default SDPA backend; median of --iters after --warmup), e2e_ms (wall time with pageable
CPU inputs copied in and the output copied back; median), bf16_rel_err (max|bf16 - ref| / max|ref|),
for flux double_block_ms / single_block_ms / embed_ms (each part alone, on the activations the
forward gives it), peak memory, per-stage seconds, and `error` (the traceback) where a part failed.
"""
import argparse
import contextlib
import gc
import json
import os
import statistics
import sys
import time
import traceback

T0 = time.perf_counter()
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, HERE)

import diffusion_torch as M  # noqa: E402


def log(msg):
    print(f"[diffusion_ref {time.perf_counter() - T0:7.1f}s] {msg}", flush=True)


p = argparse.ArgumentParser()
p.add_argument("--out-dir", required=True)
p.add_argument("--parts", default="fixtures,flux,vae")
p.add_argument("--image", type=int, default=1024, help="image side in pixels")
p.add_argument("--text-tokens", type=int, default=512)
p.add_argument("--iters", type=int, default=20, help="timed forwards (flux)")
p.add_argument("--vae-iters", type=int, default=10, help="timed decodes (vae)")
p.add_argument("--warmup", type=int, default=3)
p.add_argument("--no-guidance", action="store_true", help="FLUX.1-schnell style: no guidance embedder")
p.add_argument("--seed", type=int, default=0)
a = p.parse_args()
parts = [x.strip() for x in a.parts.split(",") if x.strip()]
os.makedirs(a.out_dir, exist_ok=True)
JSON_PATH = os.path.join(a.out_dir, "torch.json")

import torch  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402

torch.backends.cuda.matmul.allow_tf32 = False  # f32 reference; bf16 matmuls are unaffected
torch.backends.cudnn.allow_tf32 = False  # the VAE's f32 convs
torch.set_float32_matmul_precision("highest")
dev = torch.device("cuda")
O = M.TorchOps(torch)

out = {
    "device": torch.cuda.get_device_name(0),
    "torch": torch.__version__,
    "cuda": torch.version.cuda,
    "diffusers": None,
    "reference": "bench/gpu/diffusion_torch.py: plain-torch re-implementation of diffusers' FluxTransformer2DModel "
                 "forward and AutoencoderKL decode (diffusers not installed); checked against the diffusers-made "
                 "tiny fixtures first (fixture_checks)",
    "args": vars(a),
}
log(f"{out['device']}, torch {out['torch']}; parts {parts} -> {a.out_dir}")


def dump():
    with open(JSON_PATH, "w") as f:
        json.dump(out, f, indent=2)


def sync():
    torch.cuda.synchronize()


def free_gpu():
    gc.collect()
    torch.cuda.empty_cache()


def cuda_ms(fn, warmup, iters):
    """Median and all CUDA-event times (ms) of fn() after warmup calls."""
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(iters):
        s = torch.cuda.Event(enable_timing=True)
        e = torch.cuda.Event(enable_timing=True)
        s.record()
        fn()
        e.record()
        e.synchronize()
        times.append(s.elapsed_time(e))
    return statistics.median(times), times


def wall_ms(fn, warmup, iters):
    """Median wall time (ms) of fn() with a synchronize on both sides (host copies included)."""
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(iters):
        sync()
        t = time.perf_counter()
        fn()
        sync()
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def math_sdpa():
    """The reference's attention: the math backend (plain f32 matmuls + softmax)."""
    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel

        return sdpa_kernel(SDPBackend.MATH)
    except Exception as e:  # older torch: whatever SDPA picks (f32 has no flash kernel anyway)
        log(f"sdpa_kernel unavailable ({e!r}); reference uses the default SDPA backend")
        return contextlib.nullcontext()


def bf16_exact(x):
    return x.to(torch.bfloat16).to(torch.float32)


def rel_err(got, ref):
    return float((got.float() - ref).abs().max() / ref.abs().max())


def make_weights(shapes, seed):
    """Random bf16 weights on the GPU by name and shape (see the module docstring)."""
    g = torch.Generator(device=dev)
    g.manual_seed(seed)
    by_name = dict(shapes)
    W = {}
    for name, shape in shapes:
        kind = M.init_kind(name, by_name)
        u = torch.rand(shape, generator=g, device=dev, dtype=torch.float32) * 2 - 1
        if kind[0] == "norm_weight":
            t = 1 + 0.1 * u
        elif kind[0] == "norm_bias":
            t = 0.1 * u
        else:
            t = kind[1] * u
        W[name] = t.to(torch.bfloat16)
    return W


def save_model(W, config, folder, rec):
    t = time.perf_counter()
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    save_file({k: v.contiguous().cpu() for k, v in W.items()}, os.path.join(folder, "diffusion_pytorch_model.safetensors"),
              metadata={"format": "pt"})
    rec["seconds"]["save"] = time.perf_counter() - t
    rec["files"] = {f: os.path.getsize(os.path.join(folder, f)) for f in sorted(os.listdir(folder))}
    log(f"saved {folder} in {rec['seconds']['save']:.1f}s: {rec['files']}")


def save_expected(tensors, folder):
    save_file({k: v.contiguous().cpu() for k, v in tensors.items()}, os.path.join(folder, "expected.safetensors"))


# ---------------------------------------------------------------- fixtures
def run_fixtures(rec):
    checks = []
    for name in M.FIXTURES:
        t = time.perf_counter()
        try:
            with torch.inference_mode(), math_sdpa():
                r = M.run_fixture(O, ROOT, name, lambda path: load_file(path, device="cuda"), lambda x: x.detach().float().cpu())
        except Exception as e:
            r = {"fixture": name, "pass": False, "error": traceback.format_exc()}
            log(f"fixture {name}: ERROR {type(e).__name__}: {e}")
        r["seconds"] = time.perf_counter() - t
        checks.append(r)
        if "rel" in r:
            log(f"fixture {name}: {r['output']} {r['shape']} max|err|/max|ref| {r['rel']:.3e} (max|err| {r['max_err']:.3e}) "
                f"names {'match' if r['names_match'] else 'DIFFER'} -> {'PASS' if r['pass'] else 'FAIL (tolerance 1e-4)'}")
    out["fixture_checks"] = checks
    out["fixture_checks_pass"] = all(c.get("pass") for c in checks)
    rec["pass"] = out["fixture_checks_pass"]
    if not out["fixture_checks_pass"]:
        log("WARNING: the diffusers-free reference does NOT reproduce diffusers on a fixture: the references below are suspect")


# ---------------------------------------------------------------- FLUX
def run_flux(rec):
    folder = os.path.join(a.out_dir, "flux")
    os.makedirs(folder, exist_ok=True)
    guidance_embeds = not a.no_guidance
    cfg = dict(
        patch_size=1,
        in_channels=64,
        out_channels=None,
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=128,
        num_attention_heads=24,
        joint_attention_dim=4096,
        pooled_projection_dim=768,
        guidance_embeds=guidance_embeds,
        axes_dims_rope=[16, 56, 56],
    )
    rec["config"] = cfg
    t = time.perf_counter()
    W = make_weights(M.flux_shapes(cfg), a.seed)
    sync()
    rec["seconds"]["build"] = time.perf_counter() - t
    rec["params"] = sum(x.numel() for x in W.values())
    log(f"flux: {len(W)} tensors, {rec['params'] / 1e6:.1f} M params bf16 in {rec['seconds']['build']:.1f}s")
    save_model(W, {"_class_name": "FluxTransformer2DModel", **cfg}, folder, rec)
    dump()

    # Inputs, float32 on the CPU, bf16-representable.
    g = torch.Generator().manual_seed(a.seed + 1)
    side = a.image // 16
    n_img, n_txt = side * side, a.text_tokens
    inputs = {
        "hidden_states": bf16_exact(torch.randn(1, n_img, 64, generator=g)),
        "encoder_hidden_states": bf16_exact(torch.randn(1, n_txt, 4096, generator=g)),
        "pooled_projections": bf16_exact(torch.randn(1, 768, generator=g)),
        "timestep": torch.tensor([0.5]),
    }
    img_ids = torch.zeros(side, side, 3)
    img_ids[..., 1] = torch.arange(side)[:, None]
    img_ids[..., 2] = torch.arange(side)[None, :]
    inputs["img_ids"] = img_ids.reshape(n_img, 3)
    inputs["txt_ids"] = torch.zeros(n_txt, 3)
    if guidance_embeds:
        inputs["guidance"] = torch.tensor([3.5])
    rec["inputs"] = {k: list(v.shape) for k, v in inputs.items()}
    # Inputs alone first: if the reference fails below, our side still runs and times (unchecked).
    save_expected(inputs, folder)
    ids = ("img_ids", "txt_ids")  # float32 in every run (FluxPosEmbed takes .float() of them anyway)

    def on_gpu(dtype):
        return {k: v.to(dev, dtype=torch.float32 if k in ids else dtype) for k, v in inputs.items()}

    # bf16: output, whole-forward timing, per-part timing.
    t = time.perf_counter()
    torch.cuda.reset_peak_memory_stats()
    x = on_gpu(torch.bfloat16)
    with torch.inference_mode():
        fwd = lambda: M.flux_forward(O, W, cfg, x)  # noqa: E731
        out_bf16 = fwd().float().cpu()
        rec["output_shape"] = list(out_bf16.shape)
        rec["bf16_ms"], rec["bf16_ms_all"] = cuda_ms(fwd, a.warmup, a.iters)
        rec["peak_gpu_GiB"] = torch.cuda.max_memory_allocated() / 2**30
        log(f"flux: bf16 forward -> {rec['output_shape']} {rec['bf16_ms']:.2f} ms (median of {a.iters}), peak {rec['peak_gpu_GiB']:.2f} GiB")
        dump()

        cpu_in = {k: (v if k in ids else v.to(torch.bfloat16)) for k, v in inputs.items()}
        rec["e2e_ms"] = wall_ms(lambda: M.flux_forward(O, W, cfg, {k: v.to(dev) for k, v in cpu_in.items()}).cpu(), 2, max(5, a.iters // 2))
        log(f"flux: bf16 forward with host copies {rec['e2e_ms']:.2f} ms")
        dump()

        try:  # each part alone, on the activations the forward gives it
            embed = lambda: M.flux_embed(O, W, cfg, x)  # noqa: E731
            hs, ehs, temb, rope = embed()
            rec["embed_ms"], _ = cuda_ms(embed, a.warmup, a.iters)
            rec["double_block_ms"], _ = cuda_ms(lambda: M.flux_double_block(O, W, cfg, 0, hs, ehs, temb, rope), a.warmup, a.iters)
            ehs2, hs2 = M.flux_double_block(O, W, cfg, 0, hs, ehs, temb, rope)
            rec["single_block_ms"], _ = cuda_ms(lambda: M.flux_single_block(O, W, cfg, 0, hs2, ehs2, temb, rope), a.warmup, a.iters)
            ehs3, hs3 = M.flux_single_block(O, W, cfg, 0, hs2, ehs2, temb, rope)
            rec["out_ms"], _ = cuda_ms(lambda: M.flux_out(O, W, cfg, hs3, temb), a.warmup, a.iters)
            log(f"flux: bf16 parts: embedders {rec['embed_ms']:.2f} ms, double block {rec['double_block_ms']:.2f} ms, "
                f"single block {rec['single_block_ms']:.2f} ms, norm_out+proj_out {rec['out_ms']:.2f} ms")
            del hs, ehs, temb, rope, ehs2, hs2, ehs3, hs3
        except Exception as e:
            rec["parts_error"] = traceback.format_exc()
            log(f"flux: per-part timing failed: {type(e).__name__}: {e}")
        del x
    rec["seconds"]["bf16"] = time.perf_counter() - t
    dump()

    # float32 reference over the same (bf16) weights.
    t = time.perf_counter()
    W32 = {k: v.float() for k, v in W.items()}
    del W
    free_gpu()
    with torch.inference_mode(), math_sdpa():
        ref = M.flux_forward(O, W32, cfg, on_gpu(torch.float32)).float().cpu()
    sync()
    rec["seconds"]["reference"] = time.perf_counter() - t
    rec["ref_absmax"] = float(ref.abs().max())
    rec["ref_std"] = float(ref.std())
    rec["ref_nonfinite"] = int((~torch.isfinite(ref)).sum())
    rec["bf16_rel_err"] = rel_err(out_bf16, ref)
    log(f"flux: f32 reference in {rec['seconds']['reference']:.1f}s: max|ref| {rec['ref_absmax']:.4g}, std {rec['ref_std']:.4g}; "
        f"bf16 rel err {rec['bf16_rel_err']:.3e}")
    del W32
    free_gpu()

    t = time.perf_counter()
    save_expected({**inputs, "sample": ref}, folder)
    rec["seconds"]["save_expected"] = time.perf_counter() - t
    dump()


# ---------------------------------------------------------------- VAE
def run_vae(rec):
    folder = os.path.join(a.out_dir, "vae")
    os.makedirs(folder, exist_ok=True)
    cfg = dict(
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D"] * 4,
        up_block_types=["UpDecoderBlock2D"] * 4,
        block_out_channels=[128, 256, 512, 512],
        layers_per_block=2,
        act_fn="silu",
        latent_channels=16,
        norm_num_groups=32,
        sample_size=1024,
        scaling_factor=0.3611,
        shift_factor=0.1159,
        latents_mean=None,
        latents_std=None,
        force_upcast=True,
        use_quant_conv=False,
        use_post_quant_conv=False,
        mid_block_add_attention=True,
    )
    rec["config"] = cfg
    t = time.perf_counter()
    W = make_weights(M.vae_shapes(cfg), a.seed + 10)
    sync()
    rec["seconds"]["build"] = time.perf_counter() - t
    rec["params"] = sum(x.numel() for x in W.values())
    rec["decoder_params"] = sum(x.numel() for k, x in W.items() if not k.startswith("encoder.") and not k.startswith("quant_conv."))
    log(f"vae: {len(W)} tensors, {rec['params'] / 1e6:.1f} M params bf16 (decoder {rec['decoder_params'] / 1e6:.1f} M) in {rec['seconds']['build']:.1f}s")
    save_model(W, {"_class_name": "AutoencoderKL", **cfg}, folder, rec)
    dump()

    g = torch.Generator().manual_seed(a.seed + 11)
    side = a.image // 8
    latents = bf16_exact(torch.randn(1, 16, side, side, generator=g))
    rec["inputs"] = {"latents": list(latents.shape)}
    save_expected({"latents": latents}, folder)

    t = time.perf_counter()
    torch.cuda.reset_peak_memory_stats()
    z = latents.to(dev, dtype=torch.bfloat16)
    with torch.inference_mode():
        dec = lambda: M.vae_decode(O, W, cfg, z)  # noqa: E731
        out_bf16 = dec().float().cpu()
        rec["output_shape"] = list(out_bf16.shape)
        rec["bf16_ms"], rec["bf16_ms_all"] = cuda_ms(dec, min(a.warmup, 2), a.vae_iters)
        rec["peak_gpu_GiB"] = torch.cuda.max_memory_allocated() / 2**30
        log(f"vae: bf16 decode {list(z.shape)} -> {rec['output_shape']} {rec['bf16_ms']:.2f} ms (median of {a.vae_iters}), peak {rec['peak_gpu_GiB']:.2f} GiB")
        dump()
        z_cpu = latents.to(torch.bfloat16)
        rec["e2e_ms"] = wall_ms(lambda: M.vae_decode(O, W, cfg, z_cpu.to(dev)).cpu(), 1, max(3, a.vae_iters // 2))
        log(f"vae: bf16 decode with host copies {rec['e2e_ms']:.2f} ms")
    del z
    rec["seconds"]["bf16"] = time.perf_counter() - t
    dump()

    t = time.perf_counter()
    W32 = {k: v.float() for k, v in W.items()}
    del W
    free_gpu()
    with torch.inference_mode(), math_sdpa():
        ref = M.vae_decode(O, W32, cfg, latents.to(dev)).float().cpu()
    sync()
    rec["seconds"]["reference"] = time.perf_counter() - t
    rec["ref_absmax"] = float(ref.abs().max())
    rec["ref_std"] = float(ref.std())
    rec["ref_nonfinite"] = int((~torch.isfinite(ref)).sum())
    rec["bf16_rel_err"] = rel_err(out_bf16, ref)
    log(f"vae: f32 reference in {rec['seconds']['reference']:.1f}s: max|ref| {rec['ref_absmax']:.4g}, std {rec['ref_std']:.4g}; "
        f"bf16 rel err {rec['bf16_rel_err']:.3e}")
    del W32
    free_gpu()

    t = time.perf_counter()
    save_expected({"latents": latents, "decoded": ref}, folder)
    rec["seconds"]["save_expected"] = time.perf_counter() - t
    dump()


RUNNERS = {"fixtures": run_fixtures, "flux": run_flux, "vae": run_vae}
failed = False
for part in parts:
    if part not in RUNNERS:
        log(f"unknown part {part!r} (known: {', '.join(RUNNERS)})")
        continue
    rec = {"seconds": {}}
    out[part] = rec
    t = time.perf_counter()
    # A stale expected.safetensors must not be checked against this run's weights: it is written
    # again (inputs first, then with the reference output) as this part gets there.
    stale = os.path.join(a.out_dir, part, "expected.safetensors")
    if part != "fixtures" and os.path.exists(stale):
        os.remove(stale)
    try:
        RUNNERS[part](rec)
    except Exception as e:  # record and go on with the next part
        failed = True
        rec["error"] = traceback.format_exc()
        log(f"{part}: ERROR {type(e).__name__}: {e}")
    finally:
        rec["seconds"]["total"] = time.perf_counter() - t
        free_gpu()
        dump()

out["wall_s"] = time.perf_counter() - T0
dump()
for c in out.get("fixture_checks", []):
    print(f"fixture {c['fixture']}: " + (f"rel err {c['rel']:.3e} -> {'PASS' if c['pass'] else 'FAIL'}" if "rel" in c
                                         else f"ERROR {c.get('error', '?').strip().splitlines()[-1]}"))
for part in parts:
    r = out.get(part, {})
    if part == "fixtures":
        continue
    if "error" in r:
        print(f"{part}: ERROR {r['error'].strip().splitlines()[-1]}")
    elif part in out:
        extra = ""
        if part == "flux" and "double_block_ms" in r:
            extra = f" (embedders {r['embed_ms']:.2f}, double {r['double_block_ms']:.2f}, single {r['single_block_ms']:.2f} ms)"
        print(
            f"{part}: bf16 {r.get('bf16_ms', float('nan')):.2f} ms{extra}, with host copies {r.get('e2e_ms', float('nan')):.2f} ms; "
            f"bf16 vs f32 rel err {r.get('bf16_rel_err', float('nan')):.3e}; stages {json.dumps({k: round(v, 1) for k, v in r['seconds'].items()})}"
        )
print(f"wrote {JSON_PATH} ({out['wall_s']:.0f} s)")
if "fixtures" in parts and not out.get("fixture_checks_pass"):
    failed = True
sys.exit(1 if failed else 0)
