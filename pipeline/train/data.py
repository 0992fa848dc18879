"""Training data: what the student learns from, gathered into two pools of `TrainItem`s.

Pools (the batch mixes them labelled : pseudo-labelled, 1 : 2 by default):
- "labelled": ground truth from a folder, and labels a person corrected in the store. These get
  the labelled treatment: horizontal flip only, no trimming.
- "pseudo": teacher labels accepted unchanged in the store, and unlabelled images (the frozen
  teacher labels them on the fly). These get strong perturbations, CutMix and 10 % trimming.

Every label is *disparity* (larger = closer), float32 (H, W), NaN where unknown; `mask` is
True where the label may be used. Depth ground truth becomes disparity 1 / depth, normalised to
[0, 1] per image by its maximum (the loss is affine-invariant; the normalisation only makes
labels comparable). Sky is disparity 0 (V1). Items load lazily: only ids and hashes are held.

Sources:
- `folder_items(dir, gt_kind)`: image files with same-stem ground truth beside them
  (`a.jpg` + `a.npy` / `a_depth.npy` / `a_depth.png` / `a.png` as 16-bit) or in a sibling
  folder (`images/a.jpg` + `depth/a.npy`, also `gt/`, `disparity/`). `.npy` NaN / inf / <= 0 are
  invalid; a 16-bit PNG uses `pipeline.depth_png` scale/offset when recorded, else raw values
  with 0 invalid.
- `unlabelled_items(dir)`: images only, for the teacher.
- `store_items(db)`: the label store's newest accepted / corrected revisions (see store_source.py).
"""
from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import StudioError
from ..image_io import decode_image
from .augment import Sample, from_numpy
from .errors import TrainDataError

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
GT_DIRS = ("depth", "gt", "disparity", "labels")
POOLS = ("labelled", "pseudo")


@dataclass
class TrainItem:
    image_id: str
    pool: str                                   # "labelled" | "pseudo"
    load: Callable[[], Sample]                  # -> Sample(image, label or None, mask, pairs)
    revision_id: str | int | None = None
    sha256: str = ""
    source: str = ""                            # "folder", "store", "unlabelled"
    extra: dict = field(default_factory=dict)
    has_label_pixels: Callable[[], bool] | None = None   # cheap check (labels only, no image decode)

    def snapshot(self) -> dict:
        return {"image_id": self.image_id, "revision_id": self.revision_id, "sha256": self.sha256,
                "pool": self.pool, "source": self.source}


# ----------------------------------------------------------------------------- labels

def depth_to_disparity(depth: np.ndarray) -> np.ndarray:
    """Depth (H, W) -> disparity in [0, 1] (1 / depth over its max), NaN where depth is invalid."""
    depth = np.asarray(depth, dtype=np.float64)
    valid = np.isfinite(depth) & (depth > 0)
    disp = np.full(depth.shape, np.nan, dtype=np.float64)
    disp[valid] = 1.0 / depth[valid]
    return normalise_disparity(disp)


def normalise_disparity(disp: np.ndarray) -> np.ndarray:
    """Disparity (H, W) -> float32 divided by its max over finite values; NaN stays NaN. Negative -> NaN."""
    disp = np.asarray(disp, dtype=np.float64).copy()
    disp[~np.isfinite(disp) | (disp < 0)] = np.nan
    finite = np.isfinite(disp)
    if finite.any():
        top = disp[finite].max()
        if top > 0:
            disp[finite] /= top
    return disp.astype(np.float32)


def read_ground_truth(path: Path) -> np.ndarray:
    """A .npy array or a 16-bit PNG -> float (H, W), invalid as NaN (zero in PNGs without scale)."""
    try:
        if path.suffix.lower() == ".npy":
            arr = np.load(path, allow_pickle=False)
        else:
            arr = _read_png_label(path)
    except (OSError, ValueError) as e:
        raise TrainDataError(f"cannot read ground truth {path}: {e}; give a .npy float array or a 16-bit PNG") from e
    arr = np.asarray(arr, dtype=np.float64)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim != 2:
        raise TrainDataError(f"ground truth {path} has shape {arr.shape}; expected (H, W)")
    return arr


def _read_png_label(path: Path) -> np.ndarray:
    try:
        from ..depth_png import read_depth_png
        return read_depth_png(path)
    except ImportError:
        pass
    except StudioError:
        pass          # a PNG without our scale chunk: fall back to raw values
    from PIL import Image
    with Image.open(path) as im:
        raw = np.asarray(im).astype(np.float64)
    raw[raw == 0] = np.nan
    return raw


# ----------------------------------------------------------------------------- folder source

def _sha256(*paths: Path) -> str:
    h = hashlib.sha256()
    for p in paths:
        h.update(p.read_bytes())
    return h.hexdigest()


def _find_gt(image: Path) -> Path | None:
    stem, here = image.stem, image.parent
    candidates = [here / f"{stem}.npy", here / f"{stem}_depth.npy", here / f"{stem}_depth.png",
                  here / f"{stem}_disparity.npy", here / f"{stem}_disparity.png"]
    if image.suffix.lower() != ".png":
        candidates.append(here / f"{stem}.png")
    for d in GT_DIRS:
        candidates += [here.parent / d / f"{stem}.npy", here.parent / d / f"{stem}.png"]
    return next((c for c in candidates if c.is_file() and c != image), None)


def _is_label_file(p: Path) -> bool:
    return p.stem.endswith(("_depth", "_disparity", "_mask")) or p.parent.name in GT_DIRS


def _image_files(root: Path) -> list[Path]:
    base = root / "images" if (root / "images").is_dir() else root
    return sorted(p for p in base.iterdir() if p.suffix.lower() in IMAGE_EXTS and not _is_label_file(p))


def _folder_label(gt: Path, gt_kind: str) -> np.ndarray:
    raw = read_ground_truth(gt)
    return depth_to_disparity(raw) if gt_kind == "depth" else normalise_disparity(raw)


def _folder_loader(image: Path, gt: Path, gt_kind: str) -> Callable[[], Sample]:
    def load() -> Sample:
        rgb = decode_image(image).rgb
        raw = read_ground_truth(gt)
        if raw.shape != rgb.shape[:2]:
            raise TrainDataError(f"ground truth {gt.name} is {raw.shape[1]}x{raw.shape[0]} but image {image.name} "
                                 f"is {rgb.shape[1]}x{rgb.shape[0]}; they must have the same size")
        label = depth_to_disparity(raw) if gt_kind == "depth" else normalise_disparity(raw)
        return from_numpy(rgb, label, np.isfinite(label))
    return load


def folder_items(root: str | Path, gt_kind: str = "depth") -> list[TrainItem]:
    """Image / ground-truth pairs of a folder as labelled items. Images without ground truth are skipped."""
    root = Path(root)
    if not root.is_dir():
        raise TrainDataError(f"data folder {root} does not exist; give a folder of images with same-named ground truth")
    items = []
    for image in _image_files(root):
        gt = _find_gt(image)
        if gt is None:
            continue
        items.append(TrainItem(image.stem, "labelled", _folder_loader(image, gt, gt_kind),
                               sha256=_sha256(image, gt), source="folder", extra={"path": str(image)},
                               has_label_pixels=lambda gt=gt: bool(np.isfinite(_folder_label(gt, gt_kind)).any())))
    if not items:
        raise TrainDataError(f"no image/ground-truth pairs in {root}: put e.g. a.jpg beside a.npy (depth) "
                             f"or use images/ + depth/ subfolders")
    return items


def unlabelled_items(root: str | Path) -> list[TrainItem]:
    """Images without labels; the teacher labels them during training."""
    root = Path(root)
    if not root.is_dir():
        raise TrainDataError(f"unlabelled folder {root} does not exist")
    def loader(p: Path):
        return lambda: from_numpy(decode_image(p).rgb)
    return [TrainItem(p.stem, "pseudo", loader(p), sha256=_sha256(p), source="unlabelled", extra={"path": str(p)})
            for p in _image_files(root)]


# ----------------------------------------------------------------------------- checks

def _no_label_pixels(item: TrainItem) -> TrainDataError:
    return TrainDataError(f"image {item.image_id!r} ({item.source}) has no usable label pixels "
                          f"(all masked or NaN); unmask part of it or drop it from training")


def check_sample(sample: Sample, item: TrainItem) -> Sample:
    """Refuse labels with nothing usable (all masked / all NaN) naming the item."""
    if sample.label is None:
        return sample
    usable = np.isfinite(sample.label.numpy())
    if sample.mask is not None:
        usable &= sample.mask.numpy()
    if not usable.any():
        raise _no_label_pixels(item)
    return sample


def pools(items: Iterable[TrainItem]) -> dict[str, list[TrainItem]]:
    out: dict[str, list[TrainItem]] = {p: [] for p in POOLS}
    for it in items:
        out[it.pool].append(it)
    for p in POOLS:
        out[p].sort(key=lambda it: (it.source, str(it.image_id), str(it.revision_id)))
    return out


def validate_items(items: list[TrainItem], min_items: int = 1) -> list[TrainItem]:
    """Drop items whose label has no usable pixel; raise when fewer than `min_items` remain."""
    good, bad = [], []
    for it in items:
        try:
            if it.has_label_pixels is not None:
                if not it.has_label_pixels():
                    raise _no_label_pixels(it)
            else:
                check_sample(it.load(), it)
            good.append(it)
        except TrainDataError as e:
            bad.append(str(e))
    if len(good) < max(1, min_items):
        why = f" ({len(bad)} dropped: {bad[0]})" if bad else ""
        raise TrainDataError(f"only {len(good)} usable training images, need at least {max(1, min_items)}{why}; "
                             f"add labelled images or accept more pseudo-labels")
    return good


def data_snapshot(items: Iterable[TrainItem]) -> dict:
    """What a checkpoint was trained on: ids, revisions and hashes, plus one hash over all of them."""
    rows = [it.snapshot() for it in items]
    digest = hashlib.sha256(repr([(r["image_id"], r["revision_id"], r["sha256"]) for r in rows]).encode()).hexdigest()
    return {"count": len(rows), "sha256": digest, "items": rows}
