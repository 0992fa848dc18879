"""Batched inference throughput (images per second), for a GPU: vits at 518x518 in bf16.

    python benchmarks/bench_throughput.py [--device cuda] [--batch 1,8,32,64,128] [--size 518x518]
                                          [--dtype bf16|fp16|fp32] [--encoder vits] [--compile]

Runs the model the Predictor runs (`optimize_for_inference`; on CUDA its blocks take the PyTorch
ops under autocast) on random input of each batch size, after warm-up, with CUDA synchronisation
around the timed region, and prints images/s and peak memory per batch size. The goal on an
H100 for vits at 518x518 in bf16 is >= 2,000 images/s. On the CPU (no GPU here) it is a smoke
run: `--device cpu --batch 1,2 --dtype fp32 --size 266x266`.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.model import build_model, optimize_for_inference  # noqa: E402

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def throughput(model, device: str, batch: int, size: tuple[int, int], dtype: torch.dtype,
               seconds: float = 3.0) -> tuple[float, float]:
    """(images per second, peak MiB) for one batch size."""
    x = torch.randn(batch, 3, *size, device=device)
    cuda = device.startswith("cuda")
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    autocast = torch.autocast(device.split(":")[0], dtype=dtype, enabled=dtype != torch.float32)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    with torch.inference_mode(), autocast:
        for _ in range(3):                                    # warm-up: kernels, caches, compile
            model(x)
        sync()
        n, t0 = 0, time.perf_counter()
        while True:
            model(x)
            n += 1
            if n >= 3 and time.perf_counter() - t0 > seconds:
                break
        sync()
        elapsed = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated() / 2 ** 20 if cuda else float("nan")
    return n * batch / elapsed, peak


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batch", default="1,8,32,64,128")
    p.add_argument("--size", default="518x518")
    p.add_argument("--dtype", choices=DTYPES, default="bf16")
    p.add_argument("--encoder", default="vits")
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--compile", action="store_true", help="torch.compile the model first")
    args = p.parse_args(argv)
    size = tuple(int(v) for v in args.size.lower().split("x"))
    model = optimize_for_inference(build_model(args.encoder, "v2").to(args.device).eval())
    if args.compile:
        model = torch.compile(model)
    name = torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else "CPU"
    print(f"# {args.encoder} V2 at {size[0]}x{size[1]}, {args.dtype}, {name}, torch {torch.__version__}"
          f"{', compiled' if args.compile else ''}")
    print("batch | images/s | peak MiB")
    for batch in (int(b) for b in args.batch.split(",")):
        try:
            ips, peak = throughput(model, args.device, batch, size, DTYPES[args.dtype], args.seconds)
        except torch.OutOfMemoryError:
            print(f"{batch:5d} | out of memory")
            break
        print(f"{batch:5d} | {ips:8.1f} | {peak:8.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
