"""Importing measured depth or disparity (stereo, LiDAR, a depth sensor) into the label store.

A folder in the layout of `pipeline.files.dataset_layout` (images with same-named ground truth, the
layout training and evaluation read: `a.jpg` + `a.npy` / `a_depth.png` / `depth/a.npy`, an
optional mask `a_mask.png`, nonzero = measured). Each image is added to the store when it is new
(checked and deduplicated like any import), and its ground truth is stored as a ground-truth
revision beside its labels (`Store.add_ground_truth`): the label training reads does not change,
and the teacher-vs-student comparison can score against it.

`kind`: "depth" (metres; `scale` converts other units, e.g. 0.001 for millimetre PNGs) or
"disparity" (stereo disparity or inverse depth, any scale: scored in disparity space). Values
that are NaN, inf, <= 0 or outside the mask are not measurements (the validity mask).
"""
from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import StudioError
from ..files import dataset_layout as layout
from ..files.image_io import MAX_PIXELS
from ..store import InvalidValueError, Store
from .images import ImportEntry, ImportReport, import_entry, resolve_under_root

KINDS = {"depth": "metric_depth", "disparity": "disparity"}     # what the files hold -> store kind


class GroundTruthImportError(StudioError):
    """A ground-truth import that cannot start (no folder, no pairs, a bad kind or source name)."""


@dataclass
class GroundTruthReport:
    images_added: int = 0                  # images that were new to the store
    imported: list[tuple[str, int]] = field(default_factory=list)     # (file name, image id)
    unchanged: list[tuple[str, int]] = field(default_factory=list)    # the same values were already there
    rejected: list[tuple[str, str]] = field(default_factory=list)     # (file name, reason)

    def summary(self) -> str:
        return (f"{len(self.imported)} ground truth(s) imported, {len(self.unchanged)} already there, "
                f"{len(self.rejected)} rejected; {self.images_added} new image(s)")


def _values(gt: Path, kind: str, scale: float, mask: Path | None) -> tuple[np.ndarray, np.ndarray]:
    """(float32 values with NaN where not measured, bool validity)."""
    values = layout.read_ground_truth(gt).values * float(scale)
    with np.errstate(invalid="ignore"):
        valid = np.isfinite(values) & (values > 0)
    if mask is not None:
        keep = layout.read_mask(mask)
        if keep.shape != values.shape:
            raise InvalidValueError(f"mask {mask.name} is {keep.shape[1]}x{keep.shape[0]} but the ground truth is "
                                    f"{values.shape[1]}x{values.shape[0]}")
        valid &= keep
    return np.where(valid, values, np.nan).astype(np.float32), valid


def _image_id(store: Store, image: Path, folder: Path, report: ImportReport, author: str, max_pixels: int) -> int:
    before = len(report.added), len(report.duplicates)
    import_entry(store, ImportEntry(image.relative_to(folder).as_posix(), f"ground-truth:{folder.name}",
                              lambda: image.read_bytes()), report, author=author, max_pixels=max_pixels)
    if len(report.added) > before[0]:
        return report.added[-1].id
    if len(report.duplicates) > before[1]:
        return report.duplicates[-1].image_id
    raise InvalidValueError(report.rejected[-1][1])


def import_ground_truth(store: Store, folder: str | os.PathLike, *, kind: str, source: str, scale: float = 1.0,
                        author: str = "system", max_pixels: int = MAX_PIXELS,
                        progress: Callable[[Iterable], Iterable] | None = None) -> GroundTruthReport:
    """Every image of `folder` with ground truth: the image (added if new) and its ground truth as a
    ground-truth revision of source `ground_truth:<source>`. One bad pair is rejected, not fatal."""
    if kind not in KINDS:
        raise GroundTruthImportError(f"ground-truth kind must be depth (metres) or disparity, got {kind!r}")
    from ..store.provenance import SOURCE_NAME
    if not SOURCE_NAME.match(str(source)):
        raise GroundTruthImportError(f"source {source!r}: name where the measurements come from with letters, digits "
                                     "and . _ - : / @ + (e.g. middlebury2014 or lidar-2025)")
    if not scale > 0:
        raise GroundTruthImportError(f"scale must be a positive number (e.g. 0.001 for millimetres), got {scale!r}")
    folder = Path(folder)
    if not folder.is_dir():
        raise GroundTruthImportError(f"{folder} is not a folder; give a folder of images with same-named ground truth")
    pairs = layout.image_ground_truth_pairs(folder)
    if not pairs:
        raise GroundTruthImportError(f"no image / ground-truth pairs in {folder}: put e.g. a.jpg beside a.npy or "
                                     "a_depth.png, or use images/ + depth/ (see pipeline.files.dataset_layout)")
    report, images = GroundTruthReport(), ImportReport()
    for image, gt in (progress(pairs) if progress else pairs):
        try:
            image_id = _image_id(store, image, folder, images, author, max_pixels)
            values, valid = _values(gt, kind, scale, layout.find_mask(image))
            rev, created = store.add_ground_truth(image_id, values, kind=KINDS[kind], source=source, valid=valid,
                                                  author=author, note=f"imported from {gt.name}")
            (report.imported if created else report.unchanged).append((image.name, image_id))
        except (StudioError, OSError, ValueError) as e:
            report.rejected.append((image.name, str(e)))
    report.images_added = len(images.added)
    return report


def import_server_ground_truth(store: Store, folder: str, *, allowed_root: str | os.PathLike, **kwargs) -> GroundTruthReport:
    """The studio's import: the folder must lie under `allowed_root` (after resolving links)."""
    resolved, _root = resolve_under_root(folder, allowed_root)
    return import_ground_truth(store, resolved, **kwargs)
