"""Depth on the CPU, each backend against Hugging Face transformers, end to end and forward alone.

    python benchmarks/bench_model.py [--rounds 9] [--threads 2] [--backends openvino,onnxruntime,torch]
    python benchmarks/bench_model.py --shapes         # OpenVINO: one dynamic model vs one static model per size

End to end: `Predictor(model, backend=B).predict(rgb)` on the 741x500 Middlebury motorcycle image
(decode-free uint8 array in, float32 (500, 741) out: preprocessing, network, resize back) against
transformers' `pipeline("depth-estimation")` on the same image with the same weights and its own
image processor (DPTImageProcessor, as Depth-Anything-V2-Small-hf configures it). Forward alone:
each backend's runner on the official 518x770 network input against
`DepthAnythingForDepthEstimation(pixel_values=...)`.

Weights: vits V2 with the deterministic recipe weights of ../shared/reference (random weights
without it), converted key by key for transformers; the conversion is checked first (518x518,
where neither side resamples the position embedding). Rounds are interleaved, each round in a
rotated order, so load from other processes falls on every variant alike; reported: medians,
the median of per-round ratios against transformers, GFLOP/s (analytic FLOPs / median time)
and that as a share of the machine's matmul rate (best 2048^3 float32 torch.mm of the run),
and max |difference| from the official numbers.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline import Predictor, build_model  # noqa: E402
from pipeline.preprocess import prepare  # noqa: E402
from pipeline.runtime import registry  # noqa: E402

REFERENCE_DIR = ROOT.parent / "shared" / "reference"
sys.path.insert(0, str(Path(__file__).resolve().parent))
from hf_peer import hf_model_with, hf_pipeline  # noqa: E402


def recipe_model() -> tuple[nn.Module, dict | None]:
    """vits V2 with the recipe weights and the official numbers, or random weights and None."""
    model = build_model("vits", "v2")
    if not (REFERENCE_DIR / "make_weights.py").exists():
        return model, None
    import json
    sys.path.insert(0, str(REFERENCE_DIR))
    from make_weights import make_state_dict
    shapes = json.loads((REFERENCE_DIR / "official_state_dict_shapes.json").read_text())["shapes"]["vits"]
    model.load_state_dict({k: torch.from_numpy(v) for k, v in make_state_dict(shapes).items()
                           if k != "pretrained.mask_token"})
    return model, dict(np.load(REFERENCE_DIR / "vits_reference.npz"))


def forward_gflop(model, x: torch.Tensor) -> float:
    """Analytic FLOPs of one forward: linear layers, attention, convolutions (counted by hooks)."""
    spec, n_tok = model.config.spec, 1 + (x.shape[-2] // 14) * (x.shape[-1] // 14)
    c, depth, b = spec.embed_dim, max(model.config.layers) + 1, x.shape[0]
    conv = [0.0]

    def hook(mod, inp, out):
        k = mod.weight[0].numel() if isinstance(mod, nn.Conv2d) else mod.weight.shape[1] * mod.weight[0, 0].numel()
        conv[0] += 2.0 * (out.numel() if isinstance(mod, nn.Conv2d) else inp[0].numel()) * k
    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    with torch.inference_mode():
        model(x)
    for h in handles:
        h.remove()
    return (b * depth * 24.0 * n_tok * c * c + b * depth * 4.0 * n_tok ** 2 * c + conv[0]) / 1e9


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


def matmul_rate(threads: int, n: int = 2048, reps: int = 5) -> dict[str, float]:
    """{clock: GFLOP/s} of the best 2048^3 float32 torch.mm: by wall clock, and by CPU time (x threads,
    i.e. the rate the threads reach while they hold a core: comparable with the CPU-time tables)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    best = dict.fromkeys(CLOCKS, float("inf"))
    for _ in range(reps):
        start = {clock: f() for clock, f in CLOCKS.items()}
        torch.mm(a, b)
        for clock, f in CLOCKS.items():
            best[clock] = min(best[clock], (f() - start[clock]) / (threads if clock == "cpu" else 1))
    return {clock: 2.0 * n ** 3 / t / 1e9 for clock, t in best.items()}


def interleaved(variants: dict, rounds: int, settle=lambda: None) -> dict[str, dict[str, list[float]]]:
    """{clock: {variant: seconds per round}}; each round runs every variant once, in an order
    rotated by one each round. cpu = this process's CPU time over all threads: the figure other
    processes' load disturbs least (a thread waiting for a core costs wall time, not CPU time)."""
    names = list(variants)
    for fn in variants.values():             # warm-up: compile, first-shape setup, allocator
        fn()
        fn()
    settle()                                 # e.g. OpenVINO's static model for a shape seen twice
    times = {clock: {k: [] for k in names} for clock in CLOCKS}
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            start = {clock: f() for clock, f in CLOCKS.items()}
            variants[name]()
            for clock, f in CLOCKS.items():
                times[clock][name].append(f() - start[clock])
    return times


def table(title: str, times: dict, peer: str, gflop: float | None, rate: float, errors: dict) -> None:
    base = statistics.median(times[peer])
    print(f"\n{title}\n")
    print("| variant | median s | min s | vs transformers (medians) | per-round ratio, median [min, max] "
          "| GFLOP/s | share of matmul rate | max abs diff vs official |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, ts in times.items():
        med = statistics.median(ts)
        ratios = [p / o for o, p in zip(ts, times[peer], strict=True)]
        flops = f"{gflop / med:.1f} | {100 * gflop / med / rate:.0f}%" if gflop else "- | -"
        err = errors.get(name)
        print(f"| {name} | {med:.3f} | {min(ts):.3f} | {base / med:.2f}x | {statistics.median(ratios):.2f}x "
              f"[{min(ratios):.2f}, {max(ratios):.2f}] | {flops} | {'-' if err is None else f'{err:.1e}'} |")


def conditions(threads: int) -> str:
    import onnxruntime
    import transformers

    from pipeline.runtime import openvino_rt
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    load = os.getloadavg() if hasattr(os, "getloadavg") else ("?",)
    return (f"# {cpu}, {os.cpu_count()} logical CPUs, {threads} threads, load average {load[0]:.2f}; torch "
            f"{torch.__version__}, openvino {openvino_rt.release()}, onnxruntime "
            f"{onnxruntime.__version__}, transformers {transformers.__version__}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=9)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--backends", default=",".join(registry.candidates("auto", torch.device("cpu"))),
                   help="comma-separated backends (default: every installed CPU backend)")
    p.add_argument("--shapes", action="store_true", help="OpenVINO dynamic vs per-size static models instead")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    model, ref = recipe_model()
    rgb = ref["image_rgb"] if ref is not None else _motorcycle()
    # the official network input when the fixtures are here (its forward is what they record)
    x = torch.from_numpy(ref["net_input"]) if ref is not None else prepare(rgb)      # (1, 3, 518, 770)
    if args.shapes:
        from bench_shapes import compare_shapes
        return compare_shapes(model, args.rounds, args.threads)
    backends = [b for b in args.backends.split(",") if b]
    hf = hf_model_with(model)
    pipe = hf_pipeline(hf)
    predictors = {b: Predictor(model, device="cpu", backend=b) for b in backends}
    for b, pr in predictors.items():
        assert pr.backend == b, f"{b} fell back to {pr.backend}"
    rate0 = matmul_rate(args.threads)
    from PIL import Image
    pil = Image.fromarray(rgb)
    e2e = {f"ours, {b}": (lambda pr=pr: pr.predict(rgb)) for b, pr in predictors.items()}
    e2e["transformers pipeline"] = lambda: pipe(pil)
    fwd = {f"ours, {b}": (lambda r=pr.runner(): r(x)) for b, pr in predictors.items()}
    fwd["transformers model"] = lambda: _hf_forward(hf, x)
    times = interleaved({**{("e2e", k): v for k, v in e2e.items()}, **{("fwd", k): v for k, v in fwd.items()}},
                        args.rounds, settle=lambda: [getattr(pr.runner(), "settle", lambda: None)()
                                                     for pr in predictors.values()])
    rate = {clock: max(r, rate0[clock]) for clock, r in matmul_rate(args.threads).items()}
    errors = accuracy(predictors, hf, pipe, pil, x, ref)
    gflop = forward_gflop(model, x)
    print(conditions(args.threads))
    print(f"# vits V2, {'recipe' if ref is not None else 'random'} weights, 741x500 image (network 518x770), "
          f"{args.rounds} interleaved rounds; matmul rate {rate['wall']:.0f} GFLOP/s wall, {rate['cpu']:.0f} "
          f"GFLOP/s per CPU-second x threads (2048^3 float32 torch.mm, best of the run); "
          f"forward {gflop:.1f} GFLOP")
    print(f"# transformers conversion check (518x518, no position-embedding resample): max |diff| "
          f"{conversion_error(model, hf):.1e}")
    for clock in CLOCKS:
        split = {kind: {name: ts for (k, name), ts in times[clock].items() if k == kind} for kind in ("e2e", "fwd")}
        what = "wall clock" if clock == "wall" else "CPU time of the process, all threads (GFLOP/s per thread-second x threads)"
        table(f"End to end, {what} (Predictor.predict vs transformers pipeline, 741x500 uint8 in, (500, 741) out)",
              split["e2e"], "transformers pipeline", None, rate[clock], errors["e2e"])
        table(f"Forward alone, {what} (1x3x518x770 float32 normalised in)", split["fwd"], "transformers model",
              gflop * (args.threads if clock == "cpu" else 1), rate[clock], errors["fwd"])
    return 0


def _hf_forward(hf, x):
    with torch.inference_mode():
        return hf(pixel_values=x).predicted_depth


def _motorcycle() -> np.ndarray:
    from pipeline.files.sample_data import motorcycle_sample
    return motorcycle_sample()[0]


def conversion_error(model, hf) -> float:
    x = torch.randn(1, 3, 518, 518, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        return (model(x) - hf(pixel_values=x).predicted_depth).abs().max().item()


def accuracy(predictors, hf, pipe, pil, x, ref) -> dict[str, dict[str, float]]:
    """max |difference| from the official numbers (none without the reference fixtures)."""
    out = {"e2e": {}, "fwd": {}}
    if ref is None:
        return out
    rgb = np.asarray(pil)
    for b, pr in predictors.items():
        out["e2e"][f"ours, {b}"] = float(np.abs(pr.predict(rgb).array - ref["depth_v2_full_res"]).max())
        out["fwd"][f"ours, {b}"] = float(np.abs(pr.runner()(x).numpy() - ref["relative_v2"]).max())
    hf_full = pipe(pil)["predicted_depth"].float().numpy().squeeze()
    if hf_full.shape == ref["depth_v2_full_res"].shape:
        out["e2e"]["transformers pipeline"] = float(np.abs(hf_full - ref["depth_v2_full_res"]).max())
    out["fwd"]["transformers model"] = float(np.abs(_hf_forward(hf, x).numpy() - ref["relative_v2"]).max())
    return out


if __name__ == "__main__":
    raise SystemExit(main())
