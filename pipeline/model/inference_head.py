"""Inference-only DPT head: channels-last convolutions, 1x1 convolutions before upsampling.

Exact up to float rounding:
  * channels-last (NHWC) memory lets oneDNN run the head's convolutions without reorders, and
    the token maps enter as NHWC views of the encoder output (no transpose copies);
  * a fusion block's 1x1 `out_conv` commutes with the bilinear upsampling before it (both are
    linear, and bilinear weights sum to one, so the bias passes through), so it runs on the
    4x smaller map;
  * on an AVX2 CPU in float32 the last stage (bilinear upsampling to the input size, 3x3 conv,
    ReLU, 1x1 conv, ReLU/sigmoid) and refinenet1's 2x upsampling + output_conv1 each run as one
    native pass (native_kernels.upsample_conv3x3) that never stores the upsampled map (the
    last stage: ~1.8x faster than the PyTorch ops).
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


def _fuse_unresized(block: FeatureFusionBlock, x: torch.Tensor, skip: torch.Tensor | None) -> torch.Tensor:
    if skip is not None:
        x = x + _rcu(block.resConfUnit1, skip)
    return block.out_conv(_rcu(block.resConfUnit2, x))       # 1x1 conv first: commutes with the resize


def _fuse(block: FeatureFusionBlock, x: torch.Tensor, skip: torch.Tensor | None, size) -> torch.Tensor:
    x = _fuse_unresized(block, x, skip)
    if size is None:
        return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)
    return F.interpolate(x, size=size, mode="bilinear", align_corners=True)


class InferenceHead(nn.Module):
    """A channels-last copy of a DPTHead (the original's parameters stay as they are)."""

    def __init__(self, head: DPTHead):
        super().__init__()
        self.head = copy.deepcopy(head).to(memory_format=CL)
        self._packed: dict[str, torch.Tensor] | None = None
        conv3, relu, conv1, act = list(self.head.scratch.output_conv2)[:4]
        self.native_ok = (_plain_conv3x3(self.head.scratch.output_conv1) and _plain_conv3x3(conv3)
                          and isinstance(relu, nn.ReLU) and isinstance(conv1, nn.Conv2d)
                          and conv1.kernel_size == (1, 1) and conv1.out_channels == 1
                          and isinstance(act, (nn.ReLU, nn.Sigmoid))
                          and all(p.kernel_size == (1, 1) and p.bias is not None for p in self.head.projects))

    def forward(self, feats: list[torch.Tensor], grid_h: int, grid_w: int) -> torch.Tensor:
        """feats: four (B, h*w, C) token maps -> (B, 1, 14h, 14w) prediction."""
        hd = self.head
        s = hd.scratch
        kernels = None
        if self.native_ok and native_kernels.usable(feats[0]) and s.output_conv1.weight.device.type == "cpu":
            kernels = native_kernels.load()
        packed = self._pack(kernels) if kernels is not None else None
        layers = []
        for i, tok in enumerate(feats):
            if kernels is not None:                    # 1x1 projection = a GEMM on the tokens, NHWC out
                b, c_out = tok.shape[0], hd.projects[i].out_channels
                x = kernels.linear(tok.reshape(-1, tok.shape[-1]), packed[f"project{i}"], hd.projects[i].bias.detach(),
                                   c_out).view(b, grid_h, grid_w, c_out).permute(0, 3, 1, 2)
            else:
                x = tok.unflatten(1, (grid_h, grid_w)).permute(0, 3, 1, 2)      # (B, C, h, w) NHWC view
                x = hd.projects[i](x.contiguous(memory_format=CL))
            layers.append(getattr(s, f"layer{i + 1}_rn")(hd.resize_layers[i](x)))
        l1, l2, l3, l4 = layers
        path = _fuse(s.refinenet4, l4, None, l3.shape[2:])
        path = _fuse(s.refinenet3, path, l3, l2.shape[2:])
        path = _fuse(s.refinenet2, path, l2, l1.shape[2:])
        size = (grid_h * 14, grid_w * 14)
        if kernels is not None:
            return self._output_native(kernels, packed, _fuse_unresized(s.refinenet1, path, l1), size)
        path = _fuse(s.refinenet1, path, l1, None)
        out = s.output_conv1(path)
        out = F.interpolate(out, size, mode="bilinear", align_corners=True)
        return s.output_conv2(out)

    def _pack(self, kernels: native_kernels.Kernels) -> dict[str, torch.Tensor]:
        """Weights in the native kernels' layouts (made on the first native call, then kept)."""
        if self._packed is None:
            s = self.head.scratch
            with torch.no_grad():
                packed = {f"project{i}": kernels.pack_weight(p.weight.flatten(1))
                          for i, p in enumerate(self.head.projects)}
                packed["conv1"] = kernels.pack_conv(s.output_conv1.weight)
                packed["conv2"] = kernels.pack_conv(s.output_conv2[0].weight)
            self._packed = packed
        return self._packed

    def _output_native(self, kernels: native_kernels.Kernels, packed: dict, x: torch.Tensor, size) -> torch.Tensor:
        """refinenet1's 2x upsampling + output_conv1, then upsampling to the input size + output_conv2,
        as two native passes that never store an upsampled map."""
        s = self.head.scratch
        conv3, _, conv1, act = list(s.output_conv2)[:4]
        x = x.contiguous(memory_format=CL)
        out = kernels.upsample_conv3x3(x, (2 * x.shape[2], 2 * x.shape[3]), packed["conv1"],
                                       s.output_conv1.bias.detach())
        b2 = conv1.bias.item() if conv1.bias is not None else 0.0
        return kernels.upsample_conv3x3(out, size, packed["conv2"], conv3.bias.detach(),
                                        head=(conv1.weight.detach().reshape(-1), b2, isinstance(act, nn.Sigmoid)))


def _plain_conv3x3(conv: nn.Module) -> bool:
    return (isinstance(conv, nn.Conv2d) and conv.kernel_size == (3, 3) and conv.padding == (1, 1)
            and conv.stride == (1, 1) and conv.dilation == (1, 1) and conv.groups == 1 and conv.bias is not None)
