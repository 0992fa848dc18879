"""Training augmentations, deterministic given a `torch.Generator` (so a resumed run repeats them).

What Depth Anything trains with (../shared/TRAINING-NOTES.md):
- every image: short side resized to 518, then a random 518x518 crop, applied identically to
  the image, its label, its masks and its point pairs;
- labelled images: horizontal flip only;
- pseudo-labelled images: strong perturbations on the student's view only (colour jitter,
  grayscale, Gaussian blur, CutMix p = 0.5). The teacher labels the clean view; labels and
  masks are never colour-jittered or blurred.

The authors did not publish their perturbation parameters. We use those of UniMatch (Yang et
al., CVPR 2023; github.com/LiheYoung/UniMatch, dataset/semi.py and dataset/transform.py), the
semi-supervised code Depth Anything's first author built on: ColorJitter(0.5, 0.5, 0.5, 0.25)
with p = 0.8, RandomGrayscale p = 0.2, Gaussian blur sigma ~ U(0.1, 2.0) with p = 0.5, CutMix
p = 0.5 with a box of 2-40 % of the area and aspect ratio in [0.3, 1/0.3]. (UniMatch draws the
box position by rejection; we shrink an oversized box to fit and draw its position uniformly,
which never loops.)

Resizing: images bicubic like inference (`pipeline.preprocess.resize_input`), labels and masks
NEAREST (a label is never blended across a depth edge, and NaN / invalid pixels do not spread).
Images are float (3, H, W) in [0, 1]; `to_network_input` applies the ImageNet normalisation
from `pipeline.preprocess` at the end.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF

from ..config import DEFAULT_INPUT_SIZE
from ..preprocess import check_network_input, imagenet_normalize, network_size, resize_input


@dataclass
class Sample:
    """One training example. Everything spatial shares (H, W)."""

    image: torch.Tensor                  # (3, H, W) float32 in [0, 1]
    label: torch.Tensor | None = None    # (H, W) float32 (disparity or depth; NaN = unknown)
    mask: torch.Tensor | None = None     # (H, W) bool, True = usable label
    pairs: torch.Tensor | None = None    # (P, 5) long rows (h1, w1, h2, w2, closer); closer 0 = ignore

    @property
    def size(self) -> tuple[int, int]:
        return int(self.image.shape[-2]), int(self.image.shape[-1])


@dataclass(frozen=True)
class StrongPerturbation:
    """Strong perturbation settings (UniMatch's; see the module docstring)."""

    jitter_p: float = 0.8
    brightness: float = 0.5
    contrast: float = 0.5
    saturation: float = 0.5
    hue: float = 0.25
    grayscale_p: float = 0.2
    blur_p: float = 0.5
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    cutmix_p: float = 0.5
    cutmix_area: tuple[float, float] = (0.02, 0.4)
    cutmix_ratio: tuple[float, float] = (0.3, 1 / 0.3)


# ----------------------------------------------------------------------------- randomness

def make_generator(seed: int, *keys: int) -> torch.Generator:
    """A generator seeded from (seed, *keys), e.g. (run seed, step, rank, index)."""
    mixed = np.random.SeedSequence([int(seed), *(int(k) for k in keys)]).generate_state(1, np.uint64)[0]
    return torch.Generator().manual_seed(int(mixed) & ((1 << 63) - 1))


def _uniform(g: torch.Generator, lo: float, hi: float) -> float:
    return lo + (hi - lo) * float(torch.rand(1, generator=g))


def _chance(g: torch.Generator, p: float) -> bool:
    return float(torch.rand(1, generator=g)) < p


def _randint(g: torch.Generator, lo: int, hi: int) -> int:
    """Uniform integer in [lo, hi] inclusive."""
    return int(torch.randint(lo, hi + 1, (1,), generator=g))


# ----------------------------------------------------------------------------- numpy in

def from_numpy(rgb: np.ndarray, label: np.ndarray | None = None, mask: np.ndarray | None = None,
               pairs: np.ndarray | list | None = None) -> Sample:
    """uint8 (H, W, 3) RGB (+ float label, bool mask, (P, 5) pairs) -> Sample."""
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected uint8 (H, W, 3) RGB, got {rgb.dtype} {rgb.shape}")
    image = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1).float().div_(255.0)
    lab = None if label is None else torch.from_numpy(np.asarray(label, dtype=np.float32).copy())
    msk = None if mask is None else torch.from_numpy(np.asarray(mask, dtype=bool).copy())
    prs = None if pairs is None else torch.as_tensor(np.asarray(pairs, dtype=np.int64).reshape(-1, 5))
    return Sample(image, lab, msk, prs)


# ----------------------------------------------------------------------------- geometry

def _resize_nearest(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Nearest-exact resize of an (H, W) label or mask (pixel centres map to pixel centres)."""
    dtype = x.dtype
    y = F.interpolate(x[None, None].float(), size=size, mode="nearest-exact")[0, 0]
    return y.to(dtype)


def _map_pairs_scale(pairs: torch.Tensor, old: tuple[int, int], new: tuple[int, int]) -> torch.Tensor:
    """Pixel (h, w) -> the pixel whose centre lies at the scaled centre, clamped to the image."""
    out = pairs.clone()
    for col, (o, n) in ((0, (old[0], new[0])), (1, (old[1], new[1])), (2, (old[0], new[0])), (3, (old[1], new[1]))):
        out[:, col] = torch.floor((pairs[:, col].double() + 0.5) * n / o).long().clamp(0, n - 1)
    return out


def short_side_shape(height: int, width: int, size: int = DEFAULT_INPUT_SIZE) -> tuple[int, int]:
    """(H, W) after `resize_short_side`: the short side `size`, the aspect kept, the long side rounded."""
    scale = size / min(height, width)
    return max(size, round(height * scale)), max(size, round(width * scale))


def check_trainable(height: int, width: int, size: int = DEFAULT_INPUT_SIZE, *, name: str | None = None) -> None:
    """ImageError (saying why) for an image the run cannot use at crop size `size`: one the model cannot take
    (pipeline.preprocess's aspect bound, as at inference) or whose training resize passes the network-input
    bound. Data validation drops such images before a run starts (pipeline/train/data.py)."""
    network_size(height, width, size, name=name)
    check_network_input(short_side_shape(height, width, size), (height, width))


def resize_short_side(sample: Sample, size: int = DEFAULT_INPUT_SIZE) -> Sample:
    """Resize so the short side is `size` (aspect kept, long side rounded): image bicubic, label/mask nearest."""
    h, w = sample.size
    new = short_side_shape(h, w, size)
    if new == (h, w):
        return sample
    image = resize_input(sample.image[None], new)[0].clamp_(0.0, 1.0)
    return Sample(
        image,
        None if sample.label is None else _resize_nearest(sample.label, new),
        None if sample.mask is None else _resize_nearest(sample.mask, new),
        None if sample.pairs is None else _map_pairs_scale(sample.pairs, (h, w), new),
    )


def crop(sample: Sample, top: int, left: int, height: int, width: int) -> Sample:
    """Crop every spatial field; pairs are shifted and those leaving the crop get closer = 0."""
    sl = (slice(top, top + height), slice(left, left + width))
    pairs = None
    if sample.pairs is not None:
        pairs = sample.pairs.clone()
        pairs[:, [0, 2]] -= top
        pairs[:, [1, 3]] -= left
        inside = ((pairs[:, [0, 2]] >= 0) & (pairs[:, [0, 2]] < height)).all(1) & \
                 ((pairs[:, [1, 3]] >= 0) & (pairs[:, [1, 3]] < width)).all(1)
        pairs[~inside, 4] = 0
    return Sample(
        sample.image[:, sl[0], sl[1]],
        None if sample.label is None else sample.label[sl],
        None if sample.mask is None else sample.mask[sl],
        pairs,
    )


def random_crop(sample: Sample, size: int, generator: torch.Generator) -> Sample:
    """A random size x size crop, identical for image, label, mask and pairs."""
    h, w = sample.size
    if h < size or w < size:
        raise ValueError(f"cannot crop {size}x{size} from a {h}x{w} image; resize it first")
    return crop(sample, _randint(generator, 0, h - size), _randint(generator, 0, w - size), size, size)


def hflip(sample: Sample) -> Sample:
    """Mirror left-right: image, label, mask and the w coordinates of the pairs."""
    pairs = None
    if sample.pairs is not None:
        pairs = sample.pairs.clone()
        pairs[:, [1, 3]] = sample.size[1] - 1 - pairs[:, [1, 3]]
    return Sample(
        sample.image.flip(-1),
        None if sample.label is None else sample.label.flip(-1),
        None if sample.mask is None else sample.mask.flip(-1),
        pairs,
    )


def random_hflip(sample: Sample, generator: torch.Generator, p: float = 0.5) -> Sample:
    return hflip(sample) if _chance(generator, p) else sample


def geometric(sample: Sample, generator: torch.Generator, size: int = DEFAULT_INPUT_SIZE,
              flip_p: float = 0.5) -> Sample:
    """Resize short side to `size`, random size x size crop, random horizontal flip."""
    return random_hflip(random_crop(resize_short_side(sample, size), size, generator), generator, flip_p)


# ----------------------------------------------------------------------------- photometric

def color_jitter(image: torch.Tensor, generator: torch.Generator, brightness: float = 0.5,
                 contrast: float = 0.5, saturation: float = 0.5, hue: float = 0.25) -> torch.Tensor:
    """torchvision's ColorJitter (random order of the four ops, factors uniform in [1-x, 1+x],
    hue in [-h, h]) with its randomness drawn from `generator`. (3, H, W) in [0, 1]."""
    order = torch.randperm(4, generator=generator).tolist()
    factors = [_uniform(generator, max(0.0, 1 - brightness), 1 + brightness),
               _uniform(generator, max(0.0, 1 - contrast), 1 + contrast),
               _uniform(generator, max(0.0, 1 - saturation), 1 + saturation),
               _uniform(generator, -hue, hue)]
    ops = (TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue)
    for i in order:
        image = ops[i](image, factors[i])
    return image


def gaussian_blur(image: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian blur with standard deviation `sigma` px, kernel 2*ceil(3 sigma)+1 (like PIL's radius)."""
    k = 2 * math.ceil(3 * sigma) + 1
    return TF.gaussian_blur(image, [k, k], [sigma, sigma])


def strong_perturb(image: torch.Tensor, generator: torch.Generator,
                   cfg: StrongPerturbation = StrongPerturbation()) -> torch.Tensor:
    """Colour jitter (p .8), grayscale (p .2), blur (p .5) of a (3, H, W) image in [0, 1]. Labels untouched."""
    if _chance(generator, cfg.jitter_p):
        image = color_jitter(image, generator, cfg.brightness, cfg.contrast, cfg.saturation, cfg.hue)
    if _chance(generator, cfg.grayscale_p):
        image = TF.rgb_to_grayscale(image, num_output_channels=3)
    if _chance(generator, cfg.blur_p):
        image = gaussian_blur(image, _uniform(generator, *cfg.blur_sigma))
    return image.clamp(0.0, 1.0)


# ----------------------------------------------------------------------------- CutMix

def cutmix_box(height: int, width: int, generator: torch.Generator,
               cfg: StrongPerturbation = StrongPerturbation(), p: float | None = None) -> torch.Tensor:
    """bool (H, W) rectangle M (all False with probability 1 - p): the pixels taken from image a."""
    box = torch.zeros(height, width, dtype=torch.bool)
    if not _chance(generator, cfg.cutmix_p if p is None else p):
        return box
    area = _uniform(generator, *cfg.cutmix_area) * height * width
    ratio = _uniform(generator, *cfg.cutmix_ratio)                       # h / w
    bh = min(height, max(1, int(math.sqrt(area * ratio))))
    bw = min(width, max(1, int(math.sqrt(area / ratio))))
    top, left = _randint(generator, 0, height - bh), _randint(generator, 0, width - bw)
    box[top:top + bh, left:left + bw] = True
    return box


def mix(a: torch.Tensor, b: torch.Tensor, box: torch.Tensor) -> torch.Tensor:
    """u = a ⊙ M + b ⊙ (1 - M) for images (..., C, H, W) or maps (..., H, W); box (..., H, W) bool."""
    m = box if a.dim() == box.dim() else box.unsqueeze(-3)
    return torch.where(m, a, b)


# ----------------------------------------------------------------------------- recipes

def labelled_view(sample: Sample, generator: torch.Generator, size: int = DEFAULT_INPUT_SIZE) -> Sample:
    """What a labelled image becomes: resize, crop, horizontal flip. No photometric change."""
    return geometric(sample, generator, size)


def unlabelled_views(sample: Sample, generator: torch.Generator, size: int = DEFAULT_INPUT_SIZE,
                     cfg: StrongPerturbation = StrongPerturbation()) -> tuple[Sample, torch.Tensor]:
    """(clean view for the teacher, strongly perturbed image (3, size, size) for the student).

    Both views share the same resize/crop/flip, so the teacher's label of the clean view lines
    up pixel for pixel with the student's input. CutMix happens later, across two such samples
    (`cutmix_box` + `mix` on images, `pipeline.train.losses.cutmix_loss` on the loss).
    """
    clean = geometric(sample, generator, size)
    return clean, strong_perturb(clean.image, generator, cfg)


def to_network_input(images: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) or (3, H, W) in [0, 1] -> ImageNet-normalised (pipeline.preprocess.imagenet_normalize)."""
    return imagenet_normalize(images) if images.dim() == 4 else imagenet_normalize(images[None])[0]


__all__ = [
    "Sample", "StrongPerturbation", "make_generator", "from_numpy", "resize_short_side", "crop",
    "random_crop", "hflip", "random_hflip", "geometric", "color_jitter", "gaussian_blur",
    "strong_perturb", "cutmix_box", "mix", "labelled_view", "unlabelled_views", "to_network_input",
]
