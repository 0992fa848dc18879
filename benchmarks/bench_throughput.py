"""Batched inference throughput (images per second) per backend, encoder and precision, for a GPU.

    python benchmarks/bench_throughput.py                      # CUDA: vits,vitb,vitl at 518x518, batch 1/8/64
    python benchmarks/bench_throughput.py --encoders vits --backends torch,torch-compile --dtypes bf16
    python benchmarks/bench_throughput.py --device cpu --encoders vitt --batch 1,2 --size 140x140 \\
        --backends torch,openvino,onnxruntime --dtypes fp32        # the CPU smoke run

Each row runs the runner the Predictor would run (pipeline.runtime: torch with autocast in the
given dtype, torch.compile, ONNX Runtime with the CUDA/TensorRT execution provider when
installed, OpenVINO on a CPU) on a random normalised batch, after warm-up, synchronised around
the timed region, and prints images/s per batch size and peak CUDA memory. Parity: max |output -
the float32 PyTorch output| as a share of its range, on the first batch (goal: <= 1% for
fp16/bf16). Weights: the deterministic recipe weights of ../shared/reference for the encoder
(random without it). The issue's goal: >= 2,000 images/s for vits at 518x518 in bf16 on an
H100/H200-class GPU.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline import build_model  # noqa: E402
from pipeline.runtime import registry  # noqa: E402
from pipeline.runtime.torch_rt import TorchRunner  # noqa: E402

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
REFERENCE_DIR = ROOT.parent / "shared" / "reference"


def model_for(encoder: str):
    model = build_model(encoder, "v2")
    shapes_file = REFERENCE_DIR / "official_state_dict_shapes.json"
    if shapes_file.exists() and encoder in json.loads(shapes_file.read_text())["shapes"]:
        sys.path.insert(0, str(REFERENCE_DIR))
        from make_weights import make_state_dict
        shapes = json.loads(shapes_file.read_text())["shapes"][encoder]
        model.load_state_dict({k: torch.from_numpy(v) for k, v in make_state_dict(shapes).items()
                               if k != "pretrained.mask_token"})
    return model


def runner_for(backend: str, model, device: torch.device, dtype: torch.dtype):
    if backend in ("torch", "torch-compile"):
        return TorchRunner(model, device, compile=backend == "torch-compile", autocast_dtype=dtype)
    runner = registry.build_runner(backend, model, model.config, device)
    if runner.name != backend:
        raise RuntimeError(f"{backend} fell back to {runner.name}")
    return runner


def images_per_second(runner, x: torch.Tensor, seconds: float) -> float:
    cuda = x.device.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    for _ in range(3):                                        # warm-up: kernels, engines, compile
        runner(x)
    sync()
    n, t0 = 0, time.perf_counter()
    while n < 3 or time.perf_counter() - t0 < seconds:
        runner(x)
        n += 1
    sync()
    return n * x.shape[0] / (time.perf_counter() - t0)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--encoders", default="vits,vitb,vitl")
    p.add_argument("--batch", default="1,8,64")
    p.add_argument("--size", default="518x518")
    p.add_argument("--backends", default="torch,torch-compile,onnxruntime")
    p.add_argument("--dtypes", default="bf16,fp16", help="for the torch backends (exported ones run float32)")
    p.add_argument("--seconds", type=float, default=3.0)
    args = p.parse_args(argv)
    device = torch.device(args.device)
    size = tuple(int(v) for v in args.size.lower().split("x"))
    batches = [int(b) for b in args.batch.split(",")]
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"# {name}, torch {torch.__version__}, {size[0]}x{size[1]}, images/s per batch size; parity = max |out - "
          f"float32 PyTorch| / range of the float32 output")
    print(f"| encoder | backend | dtype | {' | '.join(f'batch {b}' for b in batches)} | peak MiB | parity |")
    print(f"| --- | --- | --- | {' | '.join('---' for _ in batches)} | --- | --- |")
    for encoder in args.encoders.split(","):
        model = model_for(encoder).to(device).eval()
        probe = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(0)).to(device)
        exact = TorchRunner(model, device, autocast_dtype=torch.float32)(probe)
        span = (exact.max() - exact.min()).item()
        for backend in args.backends.split(","):
            dtypes = args.dtypes.split(",") if backend.startswith("torch") else ["fp32"]
            for dt in dtypes:
                row(encoder, backend, dt, model, device, size, batches, args.seconds, probe, exact, span)
    return 0


def row(encoder, backend, dt, model, device, size, batches, seconds, probe, exact, span) -> None:
    try:
        runner = runner_for(backend, model, device, DTYPES[dt])
        parity = (runner(probe).to(exact.device) - exact).abs().max().item() / max(span, 1e-12)
    except Exception as e:  # noqa: BLE001 - report and go on with the next row
        print(f"| {encoder} | {backend} | {dt} | unavailable: {type(e).__name__}: {str(e)[:120]} |")
        return
    cells = []
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    for b in batches:
        try:
            cells.append(f"{images_per_second(runner, torch.randn(b, 3, *size, device=device), seconds):.1f}")
        except torch.OutOfMemoryError:
            cells.append("out of memory")
            break
    cells += ["-"] * (len(batches) - len(cells))
    peak = f"{torch.cuda.max_memory_allocated() / 2 ** 20:.0f}" if device.type == "cuda" else "-"
    print(f"| {encoder} | {backend} | {dt} | {' | '.join(cells)} | {peak} | {100 * parity:.3f}% |", flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
