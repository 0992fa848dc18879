"""A tiny DepthAnything ("vitt") with non-trivial weights, for tests that compare runtimes or layers."""
from __future__ import annotations

import torch

from pipeline import build_model


def random_vitt(metric: bool = False, seed: int = 0) -> torch.nn.Module:
    """vitt V2 (metric: max depth 10 m) with random LayerScale and biases (zero/one at init would hide bugs)."""
    torch.manual_seed(seed)
    m = build_model("vitt", "v2", metric=metric, max_depth=10.0)
    with torch.no_grad():
        for name, p in m.named_parameters():
            if name.endswith(("gamma", "bias")):
                p.uniform_(-0.5, 0.5)
    return m
