"""The folder layout of images and their ground truth: one owner for training, evaluation and prediction.

Images: files with an `IMAGE_EXTENSIONS` suffix in the folder, or in its `images/` subfolder when
there is one. Label files (a stem ending in `LABEL_SUFFIXES`, or inside a `GT_DIRS` / `MASK_DIRS`
folder) are not images, and neither is `a.png` beside a non-PNG `a.jpg` (it is a's ground truth).

Ground truth of image `a.jpg`, the first that exists of:
- beside it: `a.npy`, `a_depth.npy/.png`, `a_disparity.npy/.png`, `a_gt.npy/.png`, and `a.png`
  when the image itself is not a PNG;
- in a ground-truth folder (`depth/`, `gt/`, `disparity/`, `labels/`) beside the image's folder
  (`images/a.jpg` + `depth/a.npy`) or inside it (`a.jpg` + `gt/a.npy`): `a.npy`, `a.png`.
Masks (nonzero = use the pixel): `a_mask.npy/.png` beside it or `masks/a.npy/.png`.

Ground-truth files (`read_ground_truth`): `.npy` float arrays (never pickles) with NaN, inf and 0
invalid; 16-bit PNGs through `pipeline.files.depth_png.load_depth_png`: its recorded scale/offset when
present (NaN = no value), else the raw codes with 0 invalid.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import StudioError

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".apng", ".bmp", ".dib", ".gif", ".tif",
                              ".tiff", ".webp", ".avif", ".ppm", ".pgm", ".pbm", ".pnm", ".tga", ".jp2", ".j2k",
                              ".qoi", ".pcx", ".sgi"})
GT_DIRS = ("depth", "gt", "disparity", "labels")
MASK_DIRS = ("masks",)
GT_SUFFIXES = ("", "_depth", "_disparity", "_gt")          # a{suffix}.npy / .png beside the image
MASK_SUFFIXES = ("_mask",)
LABEL_SUFFIXES = ("_depth", "_disparity", "_gt", "_mask")
LABEL_EXTS = (".npy", ".png")


class GroundTruthFileError(StudioError):
    """A ground-truth or mask file that cannot be read; the message names it."""


@dataclass(frozen=True)
class GroundTruth:
    values: np.ndarray             # (H, W) float64, NaN where invalid
    valid: np.ndarray              # (H, W) bool


def is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS


def is_label_file(path: Path) -> bool:
    return path.stem.endswith(LABEL_SUFFIXES) or path.parent.name in GT_DIRS + MASK_DIRS


def image_dir(root: Path) -> Path:
    """Where a data folder keeps its images: root/images/ when it exists, else root."""
    return root / "images" if (root / "images").is_dir() else root


def image_files(root: str | Path) -> list[Path]:
    """The images of a data folder, sorted (see the module docstring for what is left out)."""
    files = [p for p in image_dir(Path(root)).iterdir() if p.is_file() and is_image_file(p) and not is_label_file(p)]
    non_png = {p.stem for p in files if p.suffix.lower() != ".png"}
    return sorted(p for p in files if not (p.suffix.lower() == ".png" and p.stem in non_png))


def _first_file(candidates: Iterable[Path], exclude: Path) -> Path | None:
    return next((c for c in candidates if c != exclude and c.is_file()), None)


def _label_file(image: Path, suffixes: tuple[str, ...], dirs: tuple[str, ...]) -> Path | None:
    stem, here = image.stem, image.parent
    beside = [here / f"{stem}{s}{e}" for s in suffixes for e in LABEL_EXTS]
    in_dirs = [base / d / f"{stem}{e}" for base in (here.parent, here) for d in dirs for e in LABEL_EXTS]
    return _first_file(beside + in_dirs, exclude=image)


def find_ground_truth(image: str | Path) -> Path | None:
    """The ground-truth file of `image`, or None (a PNG image is never its own ground truth)."""
    return _label_file(Path(image), GT_SUFFIXES, GT_DIRS)


def find_mask(image: str | Path) -> Path | None:
    return _label_file(Path(image), MASK_SUFFIXES, MASK_DIRS)


def image_ground_truth_pairs(root: str | Path) -> list[tuple[Path, Path]]:
    """(image, ground truth) of every image of the folder that has ground truth."""
    return [(img, gt) for img in image_files(root) if (gt := find_ground_truth(img)) is not None]


def _load_raw(path: Path) -> np.ndarray:
    """(H, W) float64 with NaN where a file marks no value."""
    if path.suffix.lower() == ".npy":
        arr = np.asarray(np.load(path, allow_pickle=False), dtype=np.float64)
        return np.where(arr == 0, np.nan, arr)
    from .depth_png import load_depth_png
    loaded = load_depth_png(path)
    arr = np.asarray(loaded.array, dtype=np.float64)
    if not loaded.calibrated:
        arr[arr == 0] = np.nan
    return arr


def read_ground_truth(path: str | Path) -> GroundTruth:
    """A ground-truth file -> values (NaN where invalid: NaN, inf, 0 / no value) and validity."""
    path = Path(path)
    try:
        arr = _load_raw(path)
    except (OSError, ValueError, StudioError) as e:
        raise GroundTruthFileError(f"cannot read ground truth {path}: {e}; "
                                   "give a float .npy array or a 16-bit PNG") from None
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim != 2:
        raise GroundTruthFileError(f"ground truth {path} holds an array of shape {arr.shape}; expected (H, W)")
    valid = np.isfinite(arr)
    return GroundTruth(np.where(valid, arr, np.nan), valid)


def read_mask(path: str | Path) -> np.ndarray:
    """A mask file (.npy or 8/16-bit PNG) -> bool (H, W), True where nonzero."""
    path = Path(path)
    try:
        if path.suffix.lower() == ".npy":
            arr = np.load(path, allow_pickle=False)
        else:
            from PIL import Image
            with Image.open(path) as im:
                arr = np.asarray(im)
    except (OSError, ValueError) as e:
        raise GroundTruthFileError(f"cannot read mask {path}: {e}; give a .npy array or a grayscale PNG") from None
    arr = arr[..., 0] if arr.ndim == 3 else arr
    return np.asarray(arr) != 0
