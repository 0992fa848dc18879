"""What every part of the curation service shares: its error, the ranges of the numbers it takes, the base."""
from __future__ import annotations

import os
from pathlib import Path

from ...errors import StudioError
from ...ranges import MAX_ID, Range
from ...settings import StudioSettings
from ...store import Store

# Every number the curate endpoints take, checked here whatever the widget allowed (pipeline/ranges.py).
RANGES = {
    "image_id": Range("image id", 1, MAX_ID, integer=True),
    "pair_id": Range("point pair number", 1, MAX_ID, integer=True),
    "job_id": Range("job id", 1, MAX_ID, integer=True),
    "page": Range("page", 1, 10 ** 9, integer=True),
    "offset": Range("gallery offset", 0, MAX_ID, integer=True),
    "limit": Range("page size", 1, 500, integer=True),
    "sigma": Range("smoothing sigma (pixels)", 0.1, 100),         # a wider Gaussian only costs time and memory
    "gt_scale": Range("ground-truth scale (file value x scale = metres or disparity)", 1e-9, 1e9, optional=True),
    "confidence": Range("confidence bound", 0, 1),                # None / "" (no bound) is handled by the caller
    "opacity": Range("label opacity", 0, 1),
    "tolerance": Range("selection tolerance (fraction of the label's range)", 0.001, 1),
    "detail": Range("superpixel detail", 10, 5000, integer=True),
    "metres": Range("known length (metres)", 1e-4, 1e5),
    "focal_px": Range("focal length (pixels)", 1, 1e6, optional=True),
    "coordinate": Range("pixel coordinate", 0, 10 ** 6, integer=True),
}


class CurationError(StudioError):
    """A curation request that cannot be carried out (no label yet, wrong prediction kind, ...)."""


def check_id(name: str, value) -> int:
    return RANGES[name].check(value)


def check_point(point, shape: tuple[int, int], what: str = "point") -> tuple[int, int]:
    """A pixel [h, w] (row, column) inside an (H, W) image."""
    try:
        h, w = point
    except (TypeError, ValueError):
        raise CurationError(f"{what} must be [h, w] (row, column); got {point!r}") from None
    h, w = RANGES["coordinate"].check(h), RANGES["coordinate"].check(w)
    if not (h < shape[0] and w < shape[1]):
        raise CurationError(f"{what} [h={h}, w={w}] is outside the {shape[1]}x{shape[0]} image")
    return h, w


class Base:
    """The store, the settings and the renderer every part uses (nothing else is shared)."""

    def __init__(self, store: Store, settings: StudioSettings, *, import_root: str | os.PathLike | None = None,
                 cmap: str | None = None):
        from .render import Renderer
        self.store = store
        self.settings = settings.ensure_dirs()
        self.import_root = Path(import_root).expanduser().resolve() if import_root else settings.allowed_import_root
        self.import_root.mkdir(parents=True, exist_ok=True)
        self.cmap = cmap or settings.cmap
        self.render = Renderer(store, settings.render_dir, cmap=self.cmap, max_pixels=settings.max_pixels,
                               max_cloud_points=settings.max_cloud_points)

    @property
    def db_path(self) -> Path:
        return self.store.path

    @property
    def render_dir(self) -> Path:
        return self.render.dir
