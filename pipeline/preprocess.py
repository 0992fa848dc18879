"""The one owner of Depth Anything's input preprocessing and output resizing.

Inference and training both use these functions, so what the network sees is the same
everywhere. The rules are the official ones:
- resize so that both sides are at least `input_size`, keeping the aspect ratio, each side
  rounded (numpy's round-half-to-even) to a multiple of 14, bicubic like OpenCV's INTER_CUBIC
  (torch's bicubic without antialiasing matches it; PIL's antialiased bicubic does not);
- normalise with the ImageNet mean and std;
- resize the prediction back with bilinear, align_corners=True (V2) or False (V1).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .config import DEFAULT_INPUT_SIZE, IMAGENET_MEAN, IMAGENET_STD, PATCH_SIZE
from .errors import ConfigError


def _multiple_of(x: float, min_val: int, multiple: int = PATCH_SIZE) -> int:
    y = int(np.round(x / multiple) * multiple)
    if y < min_val:
        y = int(np.ceil(x / multiple) * multiple)
    return y


def network_size(height: int, width: int, input_size: int = DEFAULT_INPUT_SIZE) -> tuple[int, int]:
    """(H, W) the network sees for an image of height x width (official 'lower_bound' rule)."""
    if input_size < PATCH_SIZE or input_size % PATCH_SIZE:
        raise ConfigError(f"input size must be a positive multiple of {PATCH_SIZE}, got {input_size}")
    scale = max(input_size / height, input_size / width)
    return _multiple_of(scale * height, input_size), _multiple_of(scale * width, input_size)


def to_tensor(rgb: np.ndarray) -> torch.Tensor:
    """uint8 (H, W, 3) RGB -> float32 (1, 3, H, W) in [0, 1]."""
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected uint8 (H, W, 3) RGB, got {rgb.dtype} {rgb.shape}")
    return torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None].float().div_(255.0)


def normalize(x: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) in [0, 1] -> ImageNet-normalised."""
    mean = x.new_tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = x.new_tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (x - mean) / std


def resize_input(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bicubic resize of a (B, 3, H, W) float batch, matching OpenCV's INTER_CUBIC."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bicubic", align_corners=False, antialias=False)


def prepare(rgb: np.ndarray | torch.Tensor, input_size: int = DEFAULT_INPUT_SIZE) -> torch.Tensor:
    """Official preprocessing: uint8 RGB (H, W, 3) or float (1, 3, H, W) in [0,1] -> network input."""
    x = to_tensor(rgb) if isinstance(rgb, np.ndarray) else rgb
    size = network_size(x.shape[-2], x.shape[-1], input_size)
    return normalize(resize_input(x, size))


def resize_output(pred: torch.Tensor, size: tuple[int, int], align_corners: bool = True) -> torch.Tensor:
    """(B, h, w) prediction -> (B, H, W) with bilinear resizing (official: align_corners per version)."""
    if tuple(pred.shape[-2:]) == tuple(size):
        return pred
    return F.interpolate(pred[:, None], size=size, mode="bilinear", align_corners=align_corners)[:, 0]
