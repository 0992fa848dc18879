"""Assisted selection for the correction tools: a click [h, w] grows a region (pipeline/labels/selection.py),
added to, subtracted from or replacing the current selection (a bool (H, W) mask the caller keeps).

Modes: the magic wand on the head label (similar depth, or the same plane), the superpixel under the
click (scikit-image SLIC / Felzenszwalb; segmentations cached per image and setting), and Segment
Anything when its weights are on this machine (pipeline/labels/sam_select.py; otherwise unavailable, and
the mode says why). `snap_selection` makes a rough selection follow superpixel edges.
"""
from __future__ import annotations

import numpy as np

from ...labels import selection as sel
from ...labels.sam_select import SamSelector
from .common import RANGES, Base, CurationError, check_id, check_point
from .edits import region_of
from .render import _Lru

SELECT_MODES = {
    "wand_depth": "Magic wand: similar depth",
    "wand_plane": "Magic wand: same plane (floors, walls)",
    "superpixel": "Superpixel under the click",
    "sam": "Segment Anything (SAM)",
}


class Selecting(Base):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._segmentations = _Lru(3)
        self._sam = SamSelector(self.settings.sam_model, self.settings.device)

    def selection_modes(self) -> list[tuple[str, str, bool, str]]:
        """(mode, title, available, why not) of every selection mode; SAM is probed once (offline)."""
        sam = self._sam.availability()
        return [(key, title, key != "sam" or sam.ok, "" if key != "sam" else sam.reason)
                for key, title in SELECT_MODES.items()]

    def select(self, image_id: int, seed, *, mode: str = "wand_depth", operation: str = "add",
               current: np.ndarray | None = None, tolerance: float = 0.05, method: str = "slic",
               detail: int = 400) -> np.ndarray:
        """The selection after a click at [h, w] in `mode` (bool (H, W))."""
        if mode not in SELECT_MODES:
            raise CurationError(f"unknown selection mode {mode!r}; choose one of {', '.join(SELECT_MODES)}")
        rec = self.store.get_image(check_id("image_id", image_id))
        shape = (rec.height, rec.width)
        at = check_point(seed, shape, "click")
        current = None if current is None else region_of(current, shape)
        if mode in ("wand_depth", "wand_plane"):
            head = self.store.head(rec.id)
            if head is None:
                raise CurationError(f"image {rec.id} has no label yet: the magic wand follows the label's depth; "
                                    "use superpixels, or pseudo-label the image first")
            label = self.render.label(head)
            grow = sel.wand_depth if mode == "wand_depth" else sel.wand_plane
            region = grow(label.depth, head.kind, at, RANGES["tolerance"].check(tolerance))
        elif mode == "superpixel":
            region = self.superpixels(rec, method, detail).segment_at(at)
        else:
            region = self._sam.select(self.render.rgb(rec), at)
        return sel.combine(current, region, operation)

    def snap_selection(self, image_id: int, selection: np.ndarray, *, method: str = "slic",
                       detail: int = 400) -> np.ndarray:
        """The selection made to follow superpixel edges (segments at least half selected, whole)."""
        rec = self.store.get_image(check_id("image_id", image_id))
        current = region_of(selection, (rec.height, rec.width))
        if not current.any():
            raise CurationError("nothing is selected to snap; select a region first")
        return self.superpixels(rec, method, detail).snap(current)

    def superpixels(self, rec, method: str = "slic", detail: int = 400) -> sel.Superpixels:
        detail = RANGES["detail"].check(detail)
        return self._segmentations.get((rec.sha256, method, detail),
                                       lambda: sel.superpixels(self.render.rgb(rec), method, detail))
