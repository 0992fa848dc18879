"""Inference-only DPT head: channels-last convolutions, 1x1 convolutions before upsampling.

Exact up to float rounding:
  * channels-last (NHWC) memory lets oneDNN run the head's convolutions without reorders, and
    the token maps enter as NHWC views of the encoder output (no transpose copies);
  * a fusion block's 1x1 `out_conv` commutes with the bilinear upsampling before it (both are
    linear, and bilinear weights sum to one, so the bias passes through), so it runs on the
    4x smaller map;
  * on an AVX2 CPU in float32 the head runs on the native kernels (native_kernels.py): the 1x1
    projections and out_convs as GEMMs on NHWC memory, the residual conv units and layerN_rn
    as 3x3 convolutions with ReLU / residual adds in their epilogues, and refinenet1's 2x
    upsampling + output_conv1 and the last stage (upsampling to the input size, 3x3 conv,
    ReLU, 1x1 conv, ReLU/sigmoid) each as one pass that never stores the upsampled map;
    intermediate maps live in scratch buffers pooled per forward.
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
                          and all(p.kernel_size == (1, 1) and p.bias is not None for p in self.head.projects)
                          and all(_plain_conv3x3(c) for level in range(1, 5)
                                  for unit in (getattr(self.head.scratch, f"refinenet{level}").resConfUnit1,
                                               getattr(self.head.scratch, f"refinenet{level}").resConfUnit2)
                                  for c in (unit.conv1, unit.conv2))
                          and all(_plain_conv3x3(getattr(self.head.scratch, f"layer{i}_rn"), bias=False)
                                  for i in range(1, 5)))

    def forward(self, feats: list[torch.Tensor], grid_h: int, grid_w: int) -> torch.Tensor:
        """feats: four (B, h*w, C) token maps -> (B, 1, 14h, 14w) prediction."""
        hd = self.head
        s = hd.scratch
        kernels = None
        if self.native_ok and native_kernels.usable(feats[0], s.output_conv1.weight):
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
            x = hd.resize_layers[i](x)
            rn = getattr(s, f"layer{i + 1}_rn")
            if kernels is not None:                    # 3x3, no bias, into a scratch map
                x = x.contiguous(memory_format=CL)
                layers.append(kernels.conv3x3(x, packed[f"layer{i + 1}_rn"], None, rn.out_channels,
                                              out=native_kernels.scratch(f"layer{i + 1}", _like(x, rn.out_channels))))
            else:
                layers.append(rn(x))
        l1, l2, l3, l4 = layers
        size = (grid_h * 14, grid_w * 14)
        if kernels is not None:
            path = _resize_into(self._fuse_native(kernels, packed, 4, l4, None), l3, "up4")
            path = _resize_into(self._fuse_native(kernels, packed, 3, path, l3), l2, "up3")
            path = _resize_into(self._fuse_native(kernels, packed, 2, path, l2), l1, "up2")
            return self._output_native(kernels, packed, self._fuse_native(kernels, packed, 1, path, l1), size)
        path = _fuse(s.refinenet4, l4, None, l3.shape[2:])
        path = _fuse(s.refinenet3, path, l3, l2.shape[2:])
        path = _fuse(s.refinenet2, path, l2, l1.shape[2:])
        path = _fuse(s.refinenet1, path, l1, None)
        out = s.output_conv1(path)
        out = F.interpolate(out, size, mode="bilinear", align_corners=True)
        return s.output_conv2(out)

    def _rcu_native(self, kernels, packed, name: str, x: torch.Tensor, extra: torch.Tensor | None) -> torch.Tensor:
        """conv2(relu(conv1(relu(x)))) + x (+ extra), ReLUs and adds in the convolutions' epilogues,
        intermediate maps in scratch buffers."""
        x = x.contiguous(memory_format=CL)
        relu_x = torch.clamp_min(x, 0, out=native_kernels.scratch(f"{name}.relu", x))
        mid = kernels.conv3x3(relu_x, packed[f"{name}.conv1"], packed[f"{name}.bias1"], x.shape[1], relu=True,
                              out=native_kernels.scratch(f"{name}.mid", x))
        residuals = (x,) if extra is None else (x, extra.contiguous(memory_format=CL))
        return kernels.conv3x3(mid, packed[f"{name}.conv2"], packed[f"{name}.bias2"], x.shape[1], residuals=residuals,
                               out=native_kernels.scratch(name, x))

    def _fuse_native(self, kernels, packed, level: int, x: torch.Tensor, skip: torch.Tensor | None) -> torch.Tensor:
        """A fusion block before its resize: [x + rcu1(skip)] -> rcu2 -> 1x1 out_conv (a GEMM)."""
        name = f"refinenet{level}"
        if skip is not None:
            x = self._rcu_native(kernels, packed, f"{name}.1", skip, extra=x)
        x = self._rcu_native(kernels, packed, f"{name}.2", x, extra=None)
        b, c, h, w = x.shape
        flat = x.permute(0, 2, 3, 1).reshape(b * h * w, c)                 # NHWC memory: a view
        out = native_kernels.scratch(f"{name}.out", flat)
        kernels.linear(flat, packed[f"{name}.out"], packed[f"{name}.out_b"], c, out=out)
        return out.view(b, h, w, c).permute(0, 3, 1, 2)

    def _pack(self, kernels: native_kernels.Kernels) -> dict[str, torch.Tensor]:
        """Weights in the native kernels' layouts (made on the first native call, then kept)."""
        if self._packed is None:
            s = self.head.scratch
            with torch.no_grad():
                packed = {f"project{i}": kernels.pack_weight(p.weight.flatten(1))
                          for i, p in enumerate(self.head.projects)}
                for level in range(1, 5):
                    block = getattr(s, f"refinenet{level}")
                    for u, unit in (("1", block.resConfUnit1), ("2", block.resConfUnit2)):
                        for i, conv in (("1", unit.conv1), ("2", unit.conv2)):
                            packed[f"refinenet{level}.{u}.conv{i}"] = kernels.pack_conv(conv.weight)
                            packed[f"refinenet{level}.{u}.bias{i}"] = conv.bias.detach()
                    packed[f"refinenet{level}.out"] = kernels.pack_weight(block.out_conv.weight.flatten(1))
                    packed[f"refinenet{level}.out_b"] = block.out_conv.bias.detach()
                for i in range(1, 5):
                    packed[f"layer{i}_rn"] = kernels.pack_conv(getattr(s, f"layer{i}_rn").weight)
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
        b, _, h, w = x.shape
        first = native_kernels.scratch("output_conv1", _like(x, s.output_conv1.out_channels, 2 * h, 2 * w))
        out = kernels.upsample_conv3x3(x, (2 * h, 2 * w), packed["conv1"], s.output_conv1.bias.detach(), out=first)
        b2 = conv1.bias.item() if conv1.bias is not None else 0.0
        return kernels.upsample_conv3x3(out, size, packed["conv2"], conv3.bias.detach(),
                                        head=(conv1.weight.detach().reshape(-1), b2, isinstance(act, nn.Sigmoid)))


def _plain_conv3x3(conv: nn.Module, bias: bool = True) -> bool:
    return (isinstance(conv, nn.Conv2d) and conv.kernel_size == (3, 3) and conv.padding == (1, 1)
            and conv.stride == (1, 1) and conv.dilation == (1, 1) and conv.groups == 1
            and (conv.bias is not None) == bias)


def _like(x: torch.Tensor, channels: int, h: int | None = None, w: int | None = None) -> torch.Tensor:
    """A shape-only stand-in (no storage) for a channels-last map with other channels / size."""
    b, _, xh, xw = x.shape
    return torch.empty(b, channels, h or xh, w or xw, dtype=x.dtype, device="meta").contiguous(memory_format=CL)


def _resize_into(x: torch.Tensor, like: torch.Tensor, key: str) -> torch.Tensor:
    """Bilinear (align_corners) resize of x to like's size, into a scratch map."""
    out = native_kernels.scratch(key, _like(x, x.shape[1], *like.shape[2:]))
    return torch.ops.aten.upsample_bilinear2d.out(x, list(like.shape[2:]), True, None, None, out=out)
