"""Each native CPU kernel against the PyTorch ops it replaces, at the shapes of vits at 518x770.

    python benchmarks/bench_kernels.py [--threads 2] [--reps 7]

Both sides run in the same process, repetitions interleaved; the table gives medians, the ratio
PyTorch / native, GFLOP/s and the share of the FMA peak (one core's peak measured by a 2048^3
torch.mm times the thread count is a lower bound of it). Inputs are random; what each kernel
replaces is named in the first column.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.model import native_kernels  # noqa: E402

CL = torch.channels_last


def _cases(k: native_kernels.Kernels):
    """(name, GFLOP, native fn, torch fn) at vits / 518x770 sizes."""
    g = torch.Generator().manual_seed(0)
    n, c, heads = 2036, 384, 6
    qkv = torch.randn(1, n, 3 * c, generator=g)
    q, kk, v = qkv.view(1, n, 3, heads, c // heads).permute(2, 0, 3, 1, 4).unbind(0)
    yield ("attention (SDPA, fused CPU flash kernel)", 4 * n * n * c / 1e9,
           lambda: k.attention(qkv, heads), lambda: F.scaled_dot_product_attention(q, kk, v))

    x = torch.randn(n, c, generator=g)
    for name, n_out, epi in (("qkv: linear + bias", 3 * c, "store"), ("fc1: linear + bias + GELU", 4 * c, "gelu")):
        w, b = torch.randn(n_out, c, generator=g) * c ** -0.5, torch.randn(n_out, generator=g)
        packed = k.pack_weight(w)
        ref = (lambda w=w, b=b: F.linear(x, w, b)) if epi == "store" else (lambda w=w, b=b: F.gelu(F.linear(x, w, b)))
        yield (name, 2 * n * c * n_out / 1e9, lambda p=packed, b=b, o=n_out, e=epi: k.linear(x, p, b, o, e), ref)
    h = torch.randn(n, 4 * c, generator=g)
    w2, b2, acc = torch.randn(c, 4 * c, generator=g) * (4 * c) ** -0.5, torch.randn(c, generator=g), torch.zeros(n, c)
    p2 = k.pack_weight(w2)
    yield ("fc2: acc += linear + bias (residual)", 2 * n * 4 * c * c / 1e9,
           lambda: k.linear(h, p2, b2, c, "accumulate", out=acc), lambda: acc.add_(b2).addmm_(h, w2.t()))

    # DPT head, vits: residual conv unit at 148x220x64; the two upsample+conv stages
    conv1, conv2 = torch.nn.Conv2d(64, 64, 3, 1, 1), torch.nn.Conv2d(64, 64, 3, 1, 1)
    conv1, conv2 = conv1.to(memory_format=CL), conv2.to(memory_format=CL)
    m = torch.randn(1, 64, 148, 220, generator=g).contiguous(memory_format=CL)
    pc1, pc2 = k.pack_conv(conv1.weight.detach()), k.pack_conv(conv2.weight.detach())
    b1, b2c = conv1.bias.detach(), conv2.bias.detach()
    relu_buf, mid, out = torch.empty_like(m), torch.empty_like(m), torch.empty_like(m)

    def rcu_native():
        torch.clamp_min(m, 0, out=relu_buf)
        k.conv3x3(relu_buf, pc1, b1, 64, relu=True, out=mid)
        return k.conv3x3(mid, pc2, b2c, 64, residuals=(m,), out=out)

    yield ("residual conv unit 64ch 148x220 (relu, conv, relu, conv, add)", 2 * 2 * 64 * 64 * 9 * 148 * 220 / 1e9,
           rcu_native, lambda: conv2(F.relu(conv1(F.relu(m)))) + m)

    oc1 = torch.nn.Conv2d(64, 32, 3, 1, 1).to(memory_format=CL)
    p_oc1 = k.pack_conv(oc1.weight.detach())
    yield ("upsample 2x + conv3x3 64->32 (296x440)", 2 * 64 * 32 * 9 * 296 * 440 / 1e9,
           lambda: k.upsample_conv3x3(m, (296, 440), p_oc1, oc1.bias.detach()),
           lambda: oc1(F.interpolate(m, scale_factor=2, mode="bilinear", align_corners=True)))

    lo = torch.randn(1, 32, 296, 440, generator=g).contiguous(memory_format=CL)
    c3, c1 = torch.nn.Conv2d(32, 32, 3, 1, 1).to(memory_format=CL), torch.nn.Conv2d(32, 1, 1)
    p3 = k.pack_conv(c3.weight.detach())
    yield ("output stage: upsample to 518x770, conv, relu, 1x1, relu", 2 * 32 * 32 * 9 * 518 * 770 / 1e9,
           lambda: k.upsample_conv3x3(lo, (518, 770), p3, c3.bias.detach(),
                                      head=(c1.weight.detach().reshape(-1), c1.bias.item(), False)),
           lambda: F.relu(c1(F.relu(c3(F.interpolate(lo, (518, 770), mode="bilinear", align_corners=True))))))


def _time(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--reps", type=int, default=7)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    k = native_kernels.load()
    if k is None:
        print("native kernels unavailable here (no AVX2/FMA, no C compiler, or DA_STUDIO_NATIVE=0)")
        return 1
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    peak = max(2 * 2048 ** 3 / _time(lambda: torch.mm(a, b)) / 1e9 for _ in range(5))
    print(f"# {args.threads} threads, {args.reps} interleaved reps, torch {torch.__version__}, {k.path.name}; "
          f"2048^3 mm: {peak:.0f} GFLOP/s")
    print(f"{'kernel (replaces)':<62} | torch ms | native ms | ratio | native GFLOP/s | of mm rate")
    with torch.inference_mode():
        for name, gflop, native, ref in _cases(k):
            native(), ref()
            tn, tr = [], []
            for _ in range(args.reps):
                tn.append(_time(native))
                tr.append(_time(ref))
            mn, mr = statistics.median(tn), statistics.median(tr)
            print(f"{name:<62} | {mr * 1e3:8.1f} | {mn * 1e3:9.1f} | {mr / mn:4.2f}x | {gflop / mn:13.0f} | "
                  f"{100 * gflop / mn / peak:5.0f}%")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
