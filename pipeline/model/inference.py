"""Inference-only optimisations of a DepthAnything network.

`optimize_for_inference(model)` returns a new module with the plain model's outputs (to float
rounding, <= 1e-5) that runs faster, mainly on the CPU: LayerScale folded into the linear
weights, residual adds fused into the GEMMs, a channels-last DPT head with its 1x1 convolutions
moved before the upsampling (see inference_encoder.py / inference_head.py). The training-time
modules are not touched: the returned module shares the encoder's unchanged parameters and
holds its own copies of the changed ones, so it is a snapshot — build it again after loading
other weights into the model.

`fast=True` asks for the opt-in, approximate path (see FAST_PATH below).
"""
from __future__ import annotations

import warnings

import torch
from torch import nn

from ..config import PATCH_SIZE
from . import native_kernels
from .depth_anything import DepthAnything
from .encoder import check_input_size, tapped_tokens
from .inference_encoder import inference_blocks
from .inference_head import InferenceHead

# The approximate path shipped by `fast=True`, or None when no technique met the bar
# (>= 1.3x over the exact path on the CPU, max error <= 1% of the exact output range on the
# reference image). Measured figures: benchmarks/README.md, "Model forward (CPU)".
FAST_PATH: str | None = None


class InferenceDepthAnything(nn.Module):
    """A DepthAnything network prepared for inference: (B, 3, H, W) -> (B, H, W)."""

    exact = True

    def __init__(self, model: DepthAnything):
        super().__init__()
        self.config = model.config
        self.embed = model.encoder                     # token preparation + cached pos-embed
        vit = model.encoder.pretrained
        self.blocks = inference_blocks(vit)
        self.norm = vit.norm
        self.head = InferenceHead(model.depth_head)
        self.training = False

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Normalised patch tokens of the tapped blocks: [(B, h*w, C)]."""
        return tapped_tokens(self.embed.tokens(x), self.blocks, self.norm, self.config.layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input_size(x)
        grid_h, grid_w = x.shape[-2] // PATCH_SIZE, x.shape[-1] // PATCH_SIZE
        with torch.inference_mode(), native_kernels.scratch_scope():
            out = self.head(self.encode(x), grid_h, grid_w)              # (B, 1, H, W)
            if self.config.metric:
                out = out * self.config.max_depth
            return out.squeeze(1).contiguous()                           # (B, H, W)

    def train(self, mode: bool = True):
        if mode:
            raise RuntimeError("an inference-optimised model cannot train; train the DepthAnything model")
        self.training = False          # no recursion: the shared training-time modules keep their mode
        return self


def optimize_for_inference(model: nn.Module, *, fast: bool = False) -> nn.Module:
    """A module with `model`'s outputs, faster for inference; the model itself is left as it is.

    fast=False: the exact path (same outputs to float rounding). fast=True: the approximate path
    named by FAST_PATH; when none is shipped it warns and returns the exact path.
    Models that are not a DepthAnything come back in eval mode, unchanged.
    """
    if not isinstance(model, DepthAnything):
        return model.eval()
    exact = InferenceDepthAnything(model)
    if not fast:
        return exact
    if FAST_PATH is None:
        warnings.warn("no approximate fast path is shipped (none gained >= 1.3x within 1% of the exact "
                      "output on this CPU); using the exact optimised path", stacklevel=2)
        return exact
    raise AssertionError(f"unknown FAST_PATH {FAST_PATH!r}")
