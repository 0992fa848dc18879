"""Inference-only DPT head: channels-last convolutions, 1x1 convolutions before upsampling.

Exact up to float rounding:
  * channels-last (NHWC) memory lets oneDNN run the head's convolutions without reorders, and
    the token maps enter as NHWC views of the encoder output (no transpose copies);
  * a fusion block's 1x1 `out_conv` commutes with the bilinear upsampling before it (both are
    linear, and bilinear weights sum to one, so the bias passes through), so it runs on the
    4x smaller map;
  * on an AVX2 CPU in float32 the last stage (bilinear upsampling to the input size, 3x3 conv,
    ReLU, 1x1 conv, ReLU/sigmoid) runs as one native kernel (native_kernels.head_output) that
    never stores the 32-channel full-resolution map: ~1.8x faster than the PyTorch ops.
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from . import native_kernels
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
        self._packed: torch.Tensor | None = None
        conv3, relu, conv1, act = list(self.head.scratch.output_conv2)[:4]
        self.native_ok = (isinstance(conv3, nn.Conv2d) and conv3.kernel_size == (3, 3) and conv3.padding == (1, 1)
                          and conv3.stride == (1, 1) and conv3.bias is not None and isinstance(relu, nn.ReLU)
                          and isinstance(conv1, nn.Conv2d) and conv1.kernel_size == (1, 1) and conv1.out_channels == 1
                          and isinstance(act, (nn.ReLU, nn.Sigmoid)))

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
        size = (grid_h * 14, grid_w * 14)
        kernels = native_kernels.load() if self.native_ok and native_kernels.usable(out) else None
        if kernels is not None and s.output_conv1.weight.device.type == "cpu":
            return self._output_native(kernels, out.contiguous(memory_format=CL), size)
        out = F.interpolate(out, size, mode="bilinear", align_corners=True)
        return s.output_conv2(out)

    def _output_native(self, kernels: native_kernels.Kernels, x: torch.Tensor, size) -> torch.Tensor:
        conv3, _, conv1, act = list(self.head.scratch.output_conv2)[:4]
        if self._packed is None:
            with torch.no_grad():
                self._packed = kernels.pack_conv(conv3.weight)
        b2 = conv1.bias.item() if conv1.bias is not None else 0.0
        return kernels.head_output(x, size, self._packed, conv3.bias.detach(), conv1.weight.detach().reshape(-1), b2,
                                   sigmoid=isinstance(act, nn.Sigmoid))
