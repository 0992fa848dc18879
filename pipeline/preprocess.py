"""The one owner of Depth Anything's input preprocessing and output resizing.

Inference and training both use these functions, so what the network sees is the same
everywhere. The rules are the official ones:
- resize so that both sides are at least `input_size`, keeping the aspect ratio, each side
  rounded (numpy's round-half-to-even) to a multiple of 14, bicubic like OpenCV's INTER_CUBIC
  (torch's bicubic without antialiasing matches it; PIL's antialiased bicubic does not);
- normalise with the ImageNet mean and std;
- resize the prediction back with bilinear, align_corners=True (V2) or False (V1).

The bound on what the network is given (every image passes here: predict, pseudo-label, video
frames; training's own resize goes through `resize_input`):
- the input size is a multiple of 14 from 14 to MAX_INPUT_SIZE (twice the 518 the model was
  trained at);
- the short-side rule above is kept exactly up to MAX_ASPECT:1 (panoramas). A wider image would
  make the long side, and the memory and time of attention, grow without limit (a 2000x8 strip
  became a 518x129,500 input), so its long side gets MAX_ASPECT x input_size instead: the
  official 'upper_bound' rule (both sides at most the box, aspect kept, multiples of 14) into
  the box input_size x MAX_ASPECT*input_size. The network input is then at most
  `max_network_pixels(input_size)`;
- an image so thin that its short side would get less than one 14-pixel patch at that long
  side (aspect ratio over `max_aspect_ratio(input_size)`, 148:1 at 518) is refused with an
  ImageError saying so: the model has no way to see it.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .config import DEFAULT_INPUT_SIZE, IMAGENET_MEAN, IMAGENET_STD, PATCH_SIZE
from .errors import ConfigError, ImageError

MAX_INPUT_SIZE = 2 * DEFAULT_INPUT_SIZE      # 1036 = 74 patches a side
MAX_ASPECT = 4                               # the short-side rule is kept up to 4:1


def max_network_pixels(input_size: int = DEFAULT_INPUT_SIZE) -> int:
    """The most pixels (H x W) a network input may have at this input size."""
    return MAX_ASPECT * int(input_size) ** 2


def max_aspect_ratio(input_size: int = DEFAULT_INPUT_SIZE) -> int:
    """The widest aspect ratio accepted: the short side still gets one patch at the capped long side."""
    return MAX_ASPECT * int(input_size) // PATCH_SIZE


def check_input_size(input_size) -> int:
    """`input_size` as an int, or ConfigError naming the accepted range."""
    if isinstance(input_size, float) and input_size.is_integer():
        input_size = int(input_size)
    if isinstance(input_size, bool) or not isinstance(input_size, (int, np.integer)) or \
            not PATCH_SIZE <= input_size <= MAX_INPUT_SIZE or input_size % PATCH_SIZE:
        raise ConfigError(f"input size must be a multiple of {PATCH_SIZE} from {PATCH_SIZE} to {MAX_INPUT_SIZE}, "
                          f"got {input_size!r}")
    return int(input_size)


def _multiple_of(x: float, min_val: int = 0, max_val: int | None = None, multiple: int = PATCH_SIZE) -> int:
    """The official `constrain_to_multiple_of`: nearest multiple, floored under max_val, ceiled over min_val."""
    y = int(np.round(x / multiple) * multiple)
    if max_val is not None and y > max_val:
        y = int(np.floor(x / multiple) * multiple)
    if y < min_val:
        y = int(np.ceil(x / multiple) * multiple)
    return y


def network_size(height: int, width: int, input_size: int = DEFAULT_INPUT_SIZE, *,
                 name: str | None = None) -> tuple[int, int]:
    """(H, W) the network sees for an image of height x width (see the module docstring).

    The official 'lower_bound' rule (short side = input_size) up to MAX_ASPECT:1; wider images
    get the 'upper_bound' rule into input_size x MAX_ASPECT*input_size; thinner than one patch:
    ImageError (prefixed with `name` when given).
    """
    input_size = check_input_size(input_size)
    height, width = int(height), int(width)
    ratio = max(height, width) / max(1, min(height, width))
    if min(height, width) < 1 or ratio > max_aspect_ratio(input_size):
        prefix = f"{name}: " if name else "the image "
        raise ImageError(f"{prefix}is {width}×{height} pixels, an aspect ratio of {ratio:.0f}:1; at input size "
                         f"{input_size} the model takes at most {max_aspect_ratio(input_size)}:1 (its short side "
                         f"would be thinner than one {PATCH_SIZE}-pixel patch); crop it into pieces")
    scale = max(input_size / height, input_size / width)
    size = _multiple_of(scale * height, input_size), _multiple_of(scale * width, input_size)
    if size[0] * size[1] <= max_network_pixels(input_size):
        return size
    box = (input_size, MAX_ASPECT * input_size) if height <= width else (MAX_ASPECT * input_size, input_size)
    scale = min(box[0] / height, box[1] / width)
    return (max(PATCH_SIZE, _multiple_of(scale * height, max_val=box[0])),
            max(PATCH_SIZE, _multiple_of(scale * width, max_val=box[1])))


def to_tensor(rgb: np.ndarray) -> torch.Tensor:
    """uint8 (H, W, 3) RGB -> float32 (1, 3, H, W) in [0, 1]."""
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected uint8 (H, W, 3) RGB, got {rgb.dtype} {rgb.shape}")
    return torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None].float().div_(255.0)


def imagenet_normalize(x: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) in [0, 1] -> ImageNet-normalised."""
    mean = x.new_tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = x.new_tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (x - mean) / std


def check_network_input(size: tuple[int, int], image_hw: tuple[int, int]) -> None:
    """ImageError when an image of `image_hw` (H, W) resized to `size` (H, W) is larger than any input size allows."""
    if int(size[0]) * int(size[1]) > max_network_pixels(MAX_INPUT_SIZE):
        h, w = image_hw
        raise ImageError(f"an image of {w}×{h} pixels would become a {size[1]}×{size[0]} network input; at most "
                         f"{max_network_pixels(MAX_INPUT_SIZE):,} pixels are allowed (aspect ratio at most "
                         f"{MAX_ASPECT}:1 at full size); crop it into pieces")


def resize_input(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bicubic resize of a (B, 3, H, W) float batch, matching OpenCV's INTER_CUBIC.

    Refuses (ImageError) an output larger than any input size allows, whoever computed `size`."""
    check_network_input(size, tuple(x.shape[-2:]))
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bicubic", align_corners=False, antialias=False)


def prepare(rgb: np.ndarray | torch.Tensor, input_size: int = DEFAULT_INPUT_SIZE) -> torch.Tensor:
    """Official preprocessing: uint8 RGB (H, W, 3) or float (1, 3, H, W) in [0,1] -> network input."""
    x = to_tensor(rgb) if isinstance(rgb, np.ndarray) else rgb
    size = network_size(x.shape[-2], x.shape[-1], input_size)
    return imagenet_normalize(resize_input(x, size))


def resize_output(pred: torch.Tensor, size: tuple[int, int], align_corners: bool = True) -> torch.Tensor:
    """(B, h, w) prediction -> (B, H, W) with bilinear resizing (official: align_corners per version)."""
    if tuple(pred.shape[-2:]) == tuple(size):
        return pred
    return F.interpolate(pred[:, None], size=size, mode="bilinear", align_corners=align_corners)[:, 0]
