"""Training data: what the student learns from, gathered into two pools of `TrainItem`s.

Pools (the batch mixes them labelled : pseudo-labelled, 1 : 2 by default):
- "labelled": ground truth from a folder, and labels a person corrected in the store. These get
  the labelled treatment: horizontal flip only, no trimming.
- "pseudo": teacher labels accepted unchanged in the store, and unlabelled images (the frozen
  teacher labels them on the fly). These get strong perturbations, CutMix and 10 % trimming.

Every label is *disparity* (larger = closer), float32 (H, W), NaN where unknown; `mask` is
True where the label may be used. A metric run (`metric=True`) keeps depth in metres instead
(NaN where invalid; no normalisation: the SiLog loss compares metres). Depth ground truth becomes disparity 1 / depth, normalised to
[0, 1] per image by its maximum (the loss is affine-invariant; the normalisation only makes
labels comparable). Sky is disparity 0 (V1). Items load lazily: only ids and hashes are held.

Sources:
- `folder_items(dir, gt_kind)`: image files with same-stem ground truth, found and read by
  `pipeline.files.dataset_layout` (the one owner of the layout, which evaluation reads too): beside
  the image (`a.jpg` + `a.npy` / `a_depth.npy` / `a.png` as 16-bit ...) or in a ground-truth
  folder (`images/a.jpg` + `depth/a.npy`, also `gt/`, `disparity/`, `labels/`); an optional mask
  (`a_mask.png`, `masks/a.png`; nonzero = use) hides the other pixels. `.npy` NaN / inf / <= 0
  are invalid; a 16-bit PNG uses `pipeline.files.depth_png` scale/offset when recorded, else raw
  values with 0 invalid.
- `unlabelled_items(dir)`: images only, for the teacher.
- `store_items(db)`: the label store's newest accepted / corrected revisions (see store_source.py).
"""
from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..errors import ImageError
from ..files import dataset_layout as layout
from ..files.image_io import decode_image
from .augment import Sample, check_trainable, from_numpy
from .errors import TrainDataError

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
    image_size: Callable[[], tuple[int, int] | None] | None = None   # (H, W) from the file's header, no decode

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
    return disparity_over_max(disp)


def disparity_over_max(disp: np.ndarray) -> np.ndarray:
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
    """A ground-truth file (pipeline.files.dataset_layout formats) -> float64 (H, W), NaN where invalid."""
    try:
        return layout.read_ground_truth(path).values
    except layout.GroundTruthFileError as e:
        raise TrainDataError(str(e)) from None


def _read_mask(path: Path | None) -> np.ndarray | None:
    try:
        return None if path is None else layout.read_mask(path)
    except layout.GroundTruthFileError as e:
        raise TrainDataError(str(e)) from None


# ----------------------------------------------------------------------------- folder source

def _sha256(*paths: Path) -> str:
    h = hashlib.sha256()
    for p in paths:
        h.update(p.read_bytes())
    return h.hexdigest()


def metric_label(depth: np.ndarray) -> np.ndarray:
    """Depth in metres (H, W) -> float32, NaN where invalid (not finite or <= 0)."""
    depth = np.asarray(depth, dtype=np.float64)
    return np.where(np.isfinite(depth) & (depth > 0), depth, np.nan).astype(np.float32)


def _folder_label(gt: Path, gt_kind: str, mask: Path | None = None, metric: bool = False) -> np.ndarray:
    """Disparity label (H, W) (metric: depth in metres), NaN where the file has no value or the mask
    file says not to use it."""
    raw = read_ground_truth(gt)
    keep = _read_mask(mask)
    if keep is not None:
        if keep.shape != raw.shape:
            raise TrainDataError(f"mask {mask} is {keep.shape[1]}x{keep.shape[0]} but ground truth {gt.name} "
                                 f"is {raw.shape[1]}x{raw.shape[0]}; they must have the same size")
        raw = np.where(keep, raw, np.nan)
    if metric:
        return metric_label(raw)
    return depth_to_disparity(raw) if gt_kind == "depth" else disparity_over_max(raw)


def _folder_loader(image: Path, gt: Path, gt_kind: str, mask: Path | None, metric: bool) -> Callable[[], Sample]:
    def load() -> Sample:
        rgb = decode_image(image).rgb
        label = _folder_label(gt, gt_kind, mask, metric)
        if label.shape != rgb.shape[:2]:
            raise TrainDataError(f"ground truth {gt.name} is {label.shape[1]}x{label.shape[0]} but image "
                                 f"{image.name} is {rgb.shape[1]}x{rgb.shape[0]}; they must have the same size")
        return from_numpy(rgb, label, np.isfinite(label))
    return load


def folder_items(root: str | Path, gt_kind: str = "depth", metric: bool = False) -> list[TrainItem]:
    """Image / ground-truth pairs of a folder as labelled items (metric: depth in metres). Images without
    ground truth are skipped."""
    root = Path(root)
    if not root.is_dir():
        raise TrainDataError(f"data folder {root} does not exist; give a folder of images with same-named ground truth")
    items = []
    for image, gt in layout.image_ground_truth_pairs(root):
        mask = layout.find_mask(image)
        files = (image, gt) if mask is None else (image, gt, mask)
        items.append(TrainItem(image.stem, "labelled", _folder_loader(image, gt, gt_kind, mask, metric),
                               sha256=_sha256(*files), source="folder", extra={"path": str(image)},
                               image_size=lambda p=image: header_size(p),
                               has_label_pixels=lambda gt=gt, m=mask: bool(
                                   np.isfinite(_folder_label(gt, gt_kind, m, metric)).any())))
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
    return [TrainItem(p.stem, "pseudo", loader(p), sha256=_sha256(p), source="unlabelled", extra={"path": str(p)},
                      image_size=lambda p=p: header_size(p))
            for p in layout.image_files(root)]


def header_size(path: str | Path) -> tuple[int, int] | None:
    """(H, W) of an image file from its header (no decode); None when PIL cannot tell (decoding will say why)."""
    try:
        with Image.open(path) as im:
            return im.height, im.width
    except (OSError, UnidentifiedImageError, ValueError):
        return None


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


def _problem(item: TrainItem, input_size: int | None) -> str | None:
    """Why `item` cannot train (its image size at this crop size, or no usable label pixel), else None."""
    try:
        size = item.image_size() if item.image_size is not None and input_size else None
        if size is not None:
            check_trainable(*size, input_size, name=f"image {item.image_id!r} ({item.source})")
        if item.has_label_pixels is not None:
            if not item.has_label_pixels():
                raise _no_label_pixels(item)
        else:
            sample = check_sample(item.load(), item)
            if input_size and size is None:
                check_trainable(*sample.size, input_size, name=f"image {item.image_id!r} ({item.source})")
    except (TrainDataError, ImageError) as e:
        return str(e)
    return None


def validate_items(items: list[TrainItem], min_items: int = 1, input_size: int | None = None,
                   dropped: list[dict] | None = None) -> list[TrainItem]:
    """Drop items a run cannot use, before it starts: no usable label pixel, or (given the crop size
    `input_size`) an image the network cannot take, e.g. a 2000x8 strip (augment.check_trainable).
    Each dropped item is appended to `dropped` as {"image_id", "source", "reason"}; raise when fewer
    than `min_items` remain."""
    good, bad = [], []
    for it in items:
        reason = _problem(it, input_size)
        if reason is None:
            good.append(it)
        else:
            bad.append({"image_id": str(it.image_id), "source": it.source, "reason": reason})
    if dropped is not None:
        dropped.extend(bad)
    if len(good) < max(1, min_items):
        why = f" ({len(bad)} dropped: {bad[0]['reason']})" if bad else ""
        raise TrainDataError(f"only {len(good)} usable training images, need at least {max(1, min_items)}{why}; "
                             f"add labelled images or accept more pseudo-labels")
    return good


def data_snapshot(items: Iterable[TrainItem], dropped: list[dict] | None = None) -> dict:
    """What a checkpoint was trained on: ids, revisions and hashes, plus one hash over all of them; `dropped`:
    what data validation left out and why (not part of the hash)."""
    rows = [it.snapshot() for it in items]
    digest = hashlib.sha256(repr([(r["image_id"], r["revision_id"], r["sha256"]) for r in rows]).encode()).hexdigest()
    return {"count": len(rows), "sha256": digest, "items": rows, "dropped": list(dropped or [])}
