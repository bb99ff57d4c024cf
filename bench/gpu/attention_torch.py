"""PyTorch side of bench/attention.ts (run by it on the GPU machine, same GPU, same run).

Makes the inputs (seeded), the reference outputs (float32 SDPA, TF32 off) and the baseline
timings (float32 with TF32 off, and bfloat16), and writes them to --dir:
  q.f32 k.f32 v.f32            [B, L, H, D] float32 (the layout ours reads)
  ref.causal{0,1}.f32          [B, L, H, D] float32
  torch.json                   device, versions, milliseconds per call
"""
import argparse
import json
import os

import torch
import torch.nn.functional as F

p = argparse.ArgumentParser()
p.add_argument("--batch", type=int, default=1)
p.add_argument("--heads", type=int, default=32)
p.add_argument("--seq", type=int, default=4096)
p.add_argument("--dim", type=int, default=128)
p.add_argument("--iters", type=int, default=20)
p.add_argument("--dir", required=True)
a = p.parse_args()
os.makedirs(a.dir, exist_ok=True)

torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False
torch.set_float32_matmul_precision("highest")
dev = torch.device("cuda")
g = torch.Generator(device=dev).manual_seed(1234)
shape = (a.batch, a.heads, a.seq, a.dim)  # SDPA's layout; files are [B, L, H, D]
q, k, v = (torch.randn(shape, device=dev, dtype=torch.float32, generator=g) for _ in range(3))


def save(t, name):
    t.transpose(1, 2).contiguous().cpu().numpy().tofile(os.path.join(a.dir, name))


for t, name in ((q, "q.f32"), (k, "k.f32"), (v, "v.f32")):
    save(t, name)


def time_ms(fn, iters):
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    best = float("inf")
    for _ in range(2):
        start.record()
        for _ in range(iters):
            fn()
        end.record()
        torch.cuda.synchronize()
        best = min(best, start.elapsed_time(end) / iters)
    return best


out = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__, "cuda": torch.version.cuda, "shape": list(shape), "ms": {}}
qb, kb, vb = q.bfloat16(), k.bfloat16(), v.bfloat16()
for causal in (False, True):
    with torch.no_grad():
        ref = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
        save(ref, f"ref.causal{int(causal)}.f32")
        out["ms"][f"f32.causal{int(causal)}"] = time_ms(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=causal), max(2, a.iters // 4))
        out["ms"][f"bf16.causal{int(causal)}"] = time_ms(lambda: F.scaled_dot_product_attention(qb, kb, vb, is_causal=causal), a.iters)
        err = (F.scaled_dot_product_attention(qb, kb, vb, is_causal=causal).float() - ref).abs().max().item()
        out[f"bf16_max_abs_error.causal{int(causal)}"] = err
with open(os.path.join(a.dir, "torch.json"), "w") as f:
    json.dump(out, f, indent=2)
print(json.dumps(out))
