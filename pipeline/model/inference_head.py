"""Inference-only DPT head: channels-last convolutions, 1x1 convolutions before upsampling.

Exact up to float rounding:
  * channels-last (NHWC) memory lets oneDNN run the head's convolutions without reorders, and
    the token maps enter as NHWC views of the encoder output (no transpose copies);
  * a fusion block's 1x1 `out_conv` commutes with the bilinear upsampling before it (both are
    linear, and bilinear weights sum to one, so the bias passes through), so it runs on the
    4x smaller map.
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from .dpt_head import DPTHead, FeatureFusionBlock, ResidualConvUnit

CL = torch.channels_last


def _rcu(unit: ResidualConvUnit, x: torch.Tensor) -> torch.Tensor:
    out = unit.conv1(F.relu(x))
    out = unit.conv2(F.relu(out))
    return out.add_(x)


def _fuse(block: FeatureFusionBlock, x: torch.Tensor, skip: torch.Tensor | None, size) -> torch.Tensor:
    if skip is not None:
        x = x + _rcu(block.resConfUnit1, skip)
    x = block.out_conv(_rcu(block.resConfUnit2, x))          # 1x1 conv first: commutes with the resize
    if size is None:
        return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)
    return F.interpolate(x, size=size, mode="bilinear", align_corners=True)


class InferenceHead(nn.Module):
    """A channels-last copy of a DPTHead (the original's parameters stay as they are)."""

    def __init__(self, head: DPTHead):
        super().__init__()
        self.head = copy.deepcopy(head).to(memory_format=CL)

    def forward(self, feats: list[torch.Tensor], grid_h: int, grid_w: int) -> torch.Tensor:
        """feats: four (B, h*w, C) token maps -> (B, 1, 14h, 14w) prediction."""
        hd = self.head
        s = hd.scratch
        layers = []
        for i, tok in enumerate(feats):
            x = tok.unflatten(1, (grid_h, grid_w)).permute(0, 3, 1, 2)          # (B, C, h, w) NHWC view
            x = hd.resize_layers[i](hd.projects[i](x.contiguous(memory_format=CL)))
            layers.append(getattr(s, f"layer{i + 1}_rn")(x))
        l1, l2, l3, l4 = layers
        path = _fuse(s.refinenet4, l4, None, l3.shape[2:])
        path = _fuse(s.refinenet3, path, l3, l2.shape[2:])
        path = _fuse(s.refinenet2, path, l2, l1.shape[2:])
        path = _fuse(s.refinenet1, path, l1, None)
        out = s.output_conv1(path)
        out = F.interpolate(out, (grid_h * 14, grid_w * 14), mode="bilinear", align_corners=True)
        return s.output_conv2(out)
