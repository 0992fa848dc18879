"""Model forward on the CPU: our plain and optimised builds against Hugging Face transformers.

    python benchmarks/bench_model.py [--reps 7] [--threads 2] [--size 518x770] [--no-fast]

Same configuration (vits, V2 taps, random weights, nothing downloaded), same process, repetitions
interleaved (plain, exact, transformers, ...) so that load from other processes hits all alike;
medians are reported. The matrix-multiply peak is measured in the same run (a 2048^3 torch.mm)
and each variant's share of it is FLOPs / time / peak. Fast-path candidates are measured for
speed against the exact path and for error (max |approx - exact| as % of the exact output
range) on the reference image with the recipe weights when ../shared/reference is present.
"""
from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.model import build_model, native_kernels, optimize_for_inference  # noqa: E402

REFERENCE_DIR = ROOT.parent / "shared" / "reference"


def hf_peer(metric: bool = False) -> nn.Module:
    """transformers' DepthAnythingForDepthEstimation configured as vits V2 (random weights)."""
    from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation, Dinov2Config
    backbone = Dinov2Config(hidden_size=384, num_hidden_layers=12, num_attention_heads=6, image_size=518,
                            patch_size=14, out_indices=[3, 6, 9, 12], reshape_hidden_states=False)
    cfg = DepthAnythingConfig(backbone_config=backbone, reassemble_hidden_size=384,
                              reassemble_factors=[4, 2, 1, 0.5], neck_hidden_sizes=[48, 96, 192, 384],
                              fusion_hidden_size=64, depth_estimation_type="metric" if metric else "relative")
    model = DepthAnythingForDepthEstimation(cfg).eval()
    model.config._attn_implementation = "sdpa"       # what from_pretrained picks; fused CPU attention
    return model


def forward_gflop(model, x: torch.Tensor) -> dict[str, float]:
    """Analytic FLOPs of one forward: linear layers, attention, convolutions (hooks)."""
    spec, n_tok = model.config.spec, 1 + (x.shape[-2] // 14) * (x.shape[-1] // 14)
    c, depth, b = spec.embed_dim, max(model.config.layers) + 1, x.shape[0]
    conv = [0.0]

    def hook(mod, inp, out):
        k = mod.weight[0].numel() if isinstance(mod, nn.Conv2d) else mod.weight.shape[1] * mod.weight[0, 0].numel()
        elems = out.numel() if isinstance(mod, nn.Conv2d) else inp[0].numel()
        conv[0] += 2.0 * elems * k
    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    with torch.inference_mode():
        model(x)
    for h in handles:
        h.remove()
    return {"linear": b * depth * 24.0 * n_tok * c * c / 1e9, "attention": b * depth * 4.0 * n_tok ** 2 * c / 1e9,
            "conv": conv[0] / 1e9}


def matmul_peak(n: int = 2048, reps: int = 5) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    best = min(_seconds(lambda: torch.mm(a, b)) for _ in range(reps))
    return 2.0 * n ** 3 / best / 1e9


CLOCK = {"wall": time.perf_counter, "cpu": time.process_time}
_clock = time.perf_counter


def _seconds(fn) -> float:
    t = _clock()
    fn()
    return _clock() - t


def _torch_ops_only(module):
    """The exact path with the native kernels switched off (what they buy)."""
    def run(x):
        with native_kernels.disabled():
            return module(x)
    return run


def interleaved(variants: dict, x: torch.Tensor, reps: int) -> dict[str, list[float]]:
    times = {k: [] for k in variants}
    with torch.inference_mode():
        for fn in variants.values():                  # warm-up (allocations, pos-embed cache)
            fn(x)
        for _ in range(reps):
            for name, fn in variants.items():
                times[name].append(_seconds(lambda fn=fn: fn(x)))
    return times


# ---- fast-path candidates: name -> builder(exact_module, plain_model) -> callable ----------------

def _int8_linear(exact, plain):
    torch.backends.quantized.engine = "fbgemm" if "fbgemm" in torch.backends.quantized.supported_engines else "qnnpack"
    return torch.ao.quantization.quantize_dynamic(copy.deepcopy(plain), {nn.Linear}, dtype=torch.qint8)


def _int8_on_exact(exact, plain):
    """int8 qkv + fc1 on the exact path's PyTorch-op blocks (the native kernels hold fp32 packed
    weights of their own, so they are switched off for this candidate)."""
    _int8_linear(exact, plain)
    quantized = torch.ao.quantization.quantize_dynamic(copy.deepcopy(exact), {nn.Linear}, dtype=torch.qint8)

    def run(x):
        with native_kernels.disabled():
            return quantized(x)
    return run


def _bf16_autocast(exact, plain):
    def run(x):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return exact(x).float()
    return run


def _library_fast(exact, plain):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return optimize_for_inference(plain, fast=True)


CANDIDATES = {
    "int8 dynamic, all linears": _int8_linear,
    "int8 dynamic qkv+fc1 on exact": _int8_on_exact,
    "bf16 autocast on exact": _bf16_autocast,
    "optimize_for_inference(fast=True)": _library_fast,
}


def recipe_model() -> nn.Module | None:
    """vits V2 with the deterministic recipe weights, or None without ../shared/reference."""
    if not (REFERENCE_DIR / "make_weights.py").exists():
        return None
    import json
    sys.path.insert(0, str(REFERENCE_DIR))
    from make_weights import make_state_dict
    shapes = json.loads((REFERENCE_DIR / "official_state_dict_shapes.json").read_text())["shapes"]["vits"]
    sd = {k: torch.from_numpy(v) for k, v in make_state_dict(shapes).items() if k != "pretrained.mask_token"}
    model = build_model("vits", "v2")
    model.load_state_dict(sd)
    return model


def reference_input() -> torch.Tensor | None:
    path = REFERENCE_DIR / "vits_reference.npz"
    if not path.exists():
        return None
    import numpy as np
    return torch.from_numpy(np.load(path)["net_input"])


def _row(name, ts, gflop, peak, base=None, err=None) -> str:
    med = statistics.median(ts)
    cells = [f"{name:<36}", f"{med:7.3f}", f"{min(ts):7.3f}", f"{gflop / med:7.1f}", f"{100 * gflop / med / peak:5.0f}%"]
    cells.append(f"{base / med:6.2f}x" if base else "      ")
    cells.append(f"{err:7.3f}%" if err is not None else "        ")
    return " | ".join(cells)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reps", type=int, default=7)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--size", default="518x770", help="HxW, multiples of 14")
    p.add_argument("--no-fast", action="store_true", help="skip the fast-path candidates")
    p.add_argument("--clock", choices=CLOCK, default="wall",
                   help="cpu: process CPU time (with --threads 1, robust to other processes' load)")
    args = p.parse_args(argv)
    global _clock
    _clock = CLOCK[args.clock]
    torch.set_num_threads(args.threads)
    h, w = (int(v) for v in args.size.lower().split("x"))
    torch.manual_seed(0)
    x = torch.randn(1, 3, h, w)

    plain = recipe_model() or build_model("vits", "v2")
    exact = optimize_for_inference(plain)
    peer = hf_peer()
    flops = forward_gflop(plain, x)
    gflop = sum(flops.values())
    peak0 = matmul_peak()
    times = interleaved({"ours, plain": plain, "ours, exact, PyTorch ops only": _torch_ops_only(exact),
                         "ours, exact (optimize_for_inference)": exact,
                         "transformers (sdpa)": lambda t: peer(pixel_values=t).predicted_depth}, x, args.reps)
    peak = max(peak0, matmul_peak())
    print(f"# vits V2 at {h}x{w}, {torch.get_num_threads()} threads, {args.reps} interleaved reps, {args.clock} clock, "
          f"torch {torch.__version__}; native kernels: "
          f"{'on (' + native_kernels.load().path.name + ')' if native_kernels.load() else 'unavailable'}")
    print(f"# FLOPs: {gflop:.1f} G (linear {flops['linear']:.1f}, attention {flops['attention']:.1f}, "
          f"conv {flops['conv']:.1f}); matmul peak {peak:.0f} GFLOP/s (2048^3 mm, best of the run)")
    print("variant                              | median  | min     | GFLOP/s | peak  | vs transformers")
    hf_med = statistics.median(times["transformers (sdpa)"])
    for name, ts in times.items():
        print(_row(name, ts, gflop, peak, hf_med))
    ours, theirs = times["ours, exact (optimize_for_inference)"], times["transformers (sdpa)"]
    paired = statistics.median(t / o for o, t in zip(ours, theirs, strict=True))   # per interleaved round
    print(f"exact path vs transformers: {hf_med / statistics.median(ours):.2f}x on medians, "
          f"{paired:.2f}x median of per-round ratios, {min(theirs) / min(ours):.2f}x on best times "
          f"(target >= 1.25x)")
    if not args.no_fast:
        fast_table(plain, exact, x, args.reps, gflop, peak)
    return 0


def fast_table(plain, exact, x, reps, gflop, peak) -> None:
    ref_x = reference_input()
    if ref_x is None or ref_x.shape != x.shape:
        ref_x = x
    variants = {"exact": exact}
    errors = {"exact": 0.0}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")                     # torch.ao deprecation notices
        variants.update((name, build(exact, plain)) for name, build in CANDIDATES.items())
    with torch.inference_mode():
        base = exact(ref_x)
        span = (base.max() - base.min()).item()
        for name, fn in variants.items():
            errors[name] = 100 * (fn(ref_x) - base).abs().max().item() / span
    times = interleaved(variants, x, max(3, reps // 2))
    ex = statistics.median(times["exact"])
    print("\nfast-path candidate                  | median  | min     | GFLOP/s | peak  | vs exact | max err (% of exact range)")
    for name, ts in times.items():
        print(_row(name, ts, gflop, peak, ex, errors[name]))
    print("ship rule: >= 1.30x over exact and <= 1% error")


if __name__ == "__main__":
    raise SystemExit(main())
