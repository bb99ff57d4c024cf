"""PyTorch baselines for bench/matmul.ts and bench/gemv.ts, on the same GPU in the same run.

  python3 bench/gpu/matmul_torch.py matmul --size 4096
  python3 bench/gpu/matmul_torch.py gemv --shapes 4096x4096,4096x14336 --rotate 8

Prints one JSON line last: {"device", "torch", "results": {name: {"seconds", "tflops"|"gbps"}}}.
matmul: F.linear (x·wᵀ, as nn.Linear) at size³ in f32 with TF32 off, bf16 and f16.
gemv: F.linear of one bf16 row against `rotate` different bf16 weight matrices in turn (so the
50 MB L2 holds none of them between uses); bandwidth counts the weights, x and out once each.
Times are CUDA-event medians of several samples after warm-up.
"""
import argparse
import json
import statistics
import sys

import torch
import torch.nn.functional as F


def time_loop(fn, reps, samples=7):
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(samples):
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(reps):
            fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / 1000 / reps)
    return statistics.median(times)


def check(out, ref, what):
    err = ((out.double() - ref).norm() / ref.norm()).item()
    print(f"{what}: relative error {err:.2e} vs f64", file=sys.stderr)
    return err


def matmul(size):
    results = {}
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")
    g = torch.Generator(device="cuda").manual_seed(0)
    x32 = torch.rand(size, size, device="cuda", generator=g) * 2 - 1
    w32 = torch.rand(size, size, device="cuda", generator=g) * 2 - 1
    ref = F.linear(x32[:64].double(), w32.double())
    for name, dtype in (("f32", torch.float32), ("bf16", torch.bfloat16), ("f16", torch.float16)):
        x = x32.to(dtype)
        w = w32.to(dtype)
        check(F.linear(x[:64], w), ref, f"torch {name}")
        probe = time_loop(lambda: F.linear(x, w), 1, samples=1)
        reps = max(2, min(500, round(0.15 / max(probe, 1e-6))))
        seconds = time_loop(lambda: F.linear(x, w), reps)
        results[f"matmul_{name}"] = {"seconds": seconds, "tflops": 2 * size**3 / seconds / 1e12}
        print(f"torch matmul {name} {size}^3: {results[f'matmul_{name}']['tflops']:.1f} TFLOP/s", file=sys.stderr)
    return results


def gemv(shapes, rotate):
    results = {}
    g = torch.Generator(device="cuda").manual_seed(1)
    for shape in shapes:
        k, n = (int(v) for v in shape.split("x"))
        ws = [(torch.rand(n, k, device="cuda", generator=g) * 2 - 1).to(torch.bfloat16) for _ in range(rotate)]
        x = (torch.rand(1, k, device="cuda", generator=g) * 2 - 1).to(torch.bfloat16)
        check(F.linear(x, ws[0]), F.linear(x.double(), ws[0].double()), f"torch gemv {shape}")

        def step():
            for w in ws:
                F.linear(x, w)

        probe = time_loop(step, 1, samples=1)
        reps = max(2, min(500, round(0.15 / max(probe, 1e-6))))
        seconds = time_loop(step, reps) / rotate
        moved = n * k * 2 + k * 2 + n * 2
        results[f"gemv_bf16_1x{k}x{n}"] = {"seconds": seconds, "gbps": moved / seconds / 1e9}
        print(f"torch gemv bf16 1x{k}x{n}: {moved / seconds / 1e9:.0f} GB/s ({seconds * 1e6:.1f} us)", file=sys.stderr)
    return results


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["matmul", "gemv"])
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--shapes", default="4096x4096,4096x14336,14336x4096")
    parser.add_argument("--rotate", type=int, default=8)
    args = parser.parse_args()
    results = matmul(args.size) if args.mode == "matmul" else gemv(args.shapes.split(","), args.rotate)
    print(json.dumps({"device": torch.cuda.get_device_name(), "torch": torch.__version__, "results": results}))


if __name__ == "__main__":
    main()
