"""DINOv2 encoder: timm's ViT blocks with the official token preparation.

timm's `vit_*_patch14_dinov2` blocks match the official DINOv2 ones key for key. What timm
does differently is resampling the position embedding for a non-square input: the official
code resizes the 37x37 grid bicubically with a *scale factor* of (grid + 0.1) / 37, and that
detail decides parity (a resize to a target size is off by about 0.05 at 518x770). So this
module prepares tokens itself and uses timm only for the blocks and the final norm.
"""
from __future__ import annotations

import math

import timm
import torch
import torch.nn.functional as F
from torch import nn

from ..config import INTERPOLATE_OFFSET, PATCH_SIZE, EncoderSpec
from ..errors import ConfigError


def build_timm_vit(spec: EncoderSpec) -> nn.Module:
    """The bare timm ViT for an encoder size, random weights, nothing downloaded."""
    overrides = {} if spec.public else {"embed_dim": spec.embed_dim, "depth": spec.depth, "num_heads": spec.num_heads}
    return timm.create_model(
        spec.timm_name, pretrained=False, num_classes=0, dynamic_img_size=True,
        init_values=1.0, img_size=518, patch_size=PATCH_SIZE, **overrides,
    )


def check_input_size(x: torch.Tensor) -> None:
    """The network needs height and width that are multiples of the patch size."""
    if x.shape[-2] % PATCH_SIZE or x.shape[-1] % PATCH_SIZE:
        raise ConfigError(f"input size {tuple(x.shape[-2:])} is not a multiple of {PATCH_SIZE}; resize "
                          f"it with pipeline.preprocess.prepare (height and width must be multiples of {PATCH_SIZE})")


def interpolate_pos_embed(pos_embed: torch.Tensor, grid_h: int, grid_w: int) -> torch.Tensor:
    """Official DINOv2 resampling of a (1, 1 + N, C) position embedding to grid_h x grid_w patches."""
    n = pos_embed.shape[1] - 1
    side = int(math.sqrt(n))
    if grid_h == side and grid_w == side:
        return pos_embed
    dtype = pos_embed.dtype
    pos = pos_embed.float()
    cls_pos, patch_pos = pos[:, :1], pos[:, 1:]
    dim = pos.shape[-1]
    scale = ((grid_h + INTERPOLATE_OFFSET) / side, (grid_w + INTERPOLATE_OFFSET) / side)
    patch_pos = F.interpolate(
        patch_pos.reshape(1, side, side, dim).permute(0, 3, 1, 2),   # (1, C, 37, 37)
        scale_factor=scale, mode="bicubic", antialias=False,
    )
    assert patch_pos.shape[-2:] == (grid_h, grid_w), patch_pos.shape
    patch_pos = patch_pos.permute(0, 2, 3, 1).reshape(1, grid_h * grid_w, dim)
    return torch.cat((cls_pos, patch_pos), dim=1).to(dtype)


class DinoV2Encoder(nn.Module):
    """Returns the normalised patch tokens of the requested blocks as (B, C, h, w) maps."""

    def __init__(self, spec: EncoderSpec):
        super().__init__()
        self.spec = spec
        self.pretrained = build_timm_vit(spec)   # key prefix `pretrained.` as in the official files
        self._pos_cache: dict[tuple, torch.Tensor] = {}

    def _pos_embed(self, grid_h: int, grid_w: int) -> torch.Tensor:
        vit = self.pretrained
        if self.training or torch.is_grad_enabled():
            return interpolate_pos_embed(vit.pos_embed, grid_h, grid_w)
        # Inference: cache per grid; keyed on the parameter's version so a weight load invalidates it.
        pos = vit.pos_embed
        version = -1 if pos.is_inference() else pos._version     # inference tensors have no version
        key = (grid_h, grid_w, pos.device, pos.dtype, version, pos.data_ptr())
        hit = self._pos_cache.get(key)
        if hit is None:
            self._pos_cache.clear()
            hit = self._pos_cache[key] = interpolate_pos_embed(vit.pos_embed, grid_h, grid_w)
        return hit

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) image -> (B, 1 + h*w, C) tokens with position embedding added."""
        vit = self.pretrained
        grid_h, grid_w = x.shape[-2] // PATCH_SIZE, x.shape[-1] // PATCH_SIZE
        t = vit.patch_embed.proj(x).flatten(2).transpose(1, 2)          # (B, h*w, C)
        cls = vit.cls_token.expand(t.shape[0], -1, -1)
        t = torch.cat((cls, t), dim=1)
        return t + self._pos_embed(grid_h, grid_w)

    def forward(self, x: torch.Tensor, layers: tuple[int, ...]) -> list[torch.Tensor]:
        """Normalised patch tokens (class token dropped) after each block in `layers`: [(B, h*w, C)]."""
        check_input_size(x)
        return tapped_tokens(self.tokens(x), self.pretrained.blocks, self.pretrained.norm, layers)


def tapped_tokens(t: torch.Tensor, blocks, norm, layers: tuple[int, ...]) -> list[torch.Tensor]:
    """Run `blocks` on tokens t up to the last tapped block; the normalised patch tokens (class
    token dropped) after each block in `layers`: [(B, h*w, C)]. Shared by the training-time
    encoder and the inference path."""
    wanted, out = set(layers), []
    for i, block in enumerate(blocks[: max(layers) + 1]):
        t = block(t)
        if i in wanted:
            out.append(norm(t)[:, 1:])
    return out
