"""DINOv2 encoder: timm's ViT blocks with the official token preparation.

timm's `vit_*_patch14_dinov2` blocks match the official DINOv2 ones key for key. What timm
does differently is resampling the position embedding for a non-square input: the official
code resizes the 37x37 grid bicubically with a *scale factor* of (grid + 0.1) / 37, and that
detail decides parity (a resize to a target size is off by about 0.05 at 518x770). So this
module prepares tokens itself and uses timm only for the blocks and the final norm.

The resample is written as two small matrix products (`bicubic_matrix`), not F.interpolate:
the same numbers (checked in float64), no cache keyed on the parameter's storage (which broke
torch.export), no traced scale factor (which broke the TorchScript exporter), and an exported
graph in which every runtime computes it exactly at any size (OpenVINO's own cubic Resize with
fractional scales was 1.3e-2 off at 518x770).
"""
from __future__ import annotations

import math

import timm
import torch
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


def _cubic(x: torch.Tensor, a: float = -0.75) -> torch.Tensor:
    """Keys' cubic convolution kernel at a distance 0 <= x <= 2, as PyTorch's bicubic uses it (A = -0.75).

    The caller passes the distance itself, not a signed offset to take `abs` of: OpenVINO folded
    Abs of a negative offset to the offset itself once an exported graph was reshaped to a static
    size, so the resample was 2.2 off at every non-square static size (tests/test_runtime.py)."""
    near = ((a + 2) * x - (a + 3)) * x * x + 1                       # |x| <= 1
    far = ((a * x - 5 * a) * x + 8 * a) * x - 4 * a                  # 1 < |x| < 2
    return torch.where(x <= 1, near, far)


def bicubic_matrix(out: torch.Tensor, side: int, same: torch.Tensor) -> torch.Tensor:
    """(n, side) weights of DINOv2's bicubic resample of `side` positions to n = len(out).

    out: arange(n) as float. What F.interpolate(mode="bicubic", scale_factor=(n + 0.1) / side,
    align_corners=False, antialias=False) computes, written as a matrix: source coordinate
    (i + 0.5) * side / (n + 0.1) - 0.5, four taps at floor - 1 .. floor + 2 clamped to the
    border. Where `same` (a bool tensor: the grid is side x side) the identity instead, as
    the official code does not resample then. Plain tensor arithmetic, so the sizes stay
    symbolic when exported and every runtime computes the same numbers.
    """
    src = (out + 0.5) * (side / (out.shape[0] + INTERPOLATE_OFFSET)) - 0.5          # (n,)
    base = torch.floor(src)
    frac = src - base
    cols = torch.arange(side, dtype=out.dtype, device=out.device)                  # (side,)
    weights = torch.zeros_like(src)[:, None] * cols                                # (n, side)
    for k in range(4):                                                             # taps -1, 0, 1, 2
        tap = k - 1
        idx = torch.clamp(base + tap, 0, side - 1)
        distance = frac - tap if tap <= 0 else tap - frac                          # |frac - tap|, frac in [0, 1)
        weights = weights + _cubic(distance)[:, None] * (idx[:, None] == cols).to(out.dtype)
    identity = (out[:, None] == cols).to(out.dtype)
    return torch.where(same, identity, weights)


def interpolate_pos_embed(pos_embed: torch.Tensor, grid_h: int, grid_w: int) -> torch.Tensor:
    """Official DINOv2 resampling of a (1, 1 + N, C) position embedding to grid_h x grid_w patches.

    Bicubic with scale factor (grid + 0.1) / 37, as two small matrix products (see
    bicubic_matrix): the same numbers as the official F.interpolate (to float rounding), also in
    exported graphs, where a runtime's own cubic Resize with fractional scales does not match
    (OpenVINO was 1.3e-2 off at 518x770). An unchanged 37 x 37 grid is not resampled.
    """
    n = pos_embed.shape[1] - 1
    side = math.isqrt(n)
    cls_pos, patch_pos = pos_embed[:, :1], pos_embed[:, 1:]
    dtype, dim = pos_embed.dtype, pos_embed.shape[-1]
    work = torch.promote_types(dtype, torch.float32)                               # as official: float32 (or wider)
    rows = torch.arange(grid_h, device=pos_embed.device).to(work)                  # (h,)
    cols = torch.arange(grid_w, device=pos_embed.device).to(work)                  # (w,)
    same = (rows[-1] == side - 1) & (cols[-1] == side - 1)                         # () the 37 x 37 grid
    wh = bicubic_matrix(rows, side, same)                                          # (h, 37)
    ww = bicubic_matrix(cols, side, same)                                          # (w, 37)
    grid = patch_pos.to(work).reshape(side, side * dim)                            # (37, 37*C)
    grid = (wh @ grid).reshape(grid_h, side, dim).transpose(0, 1)                  # (37, h, C)
    grid = (ww @ grid.reshape(side, grid_h * dim)).reshape(grid_w, grid_h, dim)    # (w, h, C)
    patch_pos = grid.transpose(0, 1).reshape(1, grid_h * grid_w, dim)              # (1, h*w, C)
    return torch.cat((cls_pos, patch_pos.to(dtype)), dim=1)


class DinoV2Encoder(nn.Module):
    """Returns the normalised patch tokens of the requested blocks as (B, h*w, C) token maps."""

    def __init__(self, spec: EncoderSpec):
        super().__init__()
        self.spec = spec
        self.pretrained = build_timm_vit(spec)   # key prefix `pretrained.` as in the official files

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) image -> (B, 1 + h*w, C) tokens with position embedding added."""
        vit = self.pretrained
        grid_h, grid_w = x.shape[-2] // PATCH_SIZE, x.shape[-1] // PATCH_SIZE
        t = vit.patch_embed.proj(x).flatten(2).transpose(1, 2)          # (B, h*w, C)
        cls = vit.cls_token.expand(t.shape[0], -1, -1)
        t = torch.cat((cls, t), dim=1)
        return t + interpolate_pos_embed(vit.pos_embed, grid_h, grid_w)

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
