"""Label changes: correction tools (a registry), accept / reject (one image or many), undo / redo,
point pairs and tags. Each change that makes a label is ONE new revision, saved with `expected_head`
= the revision the caller showed; a stale head is refused before any work by the store's read-only
`check_head`, and again by the save itself (someone may save in between).

Point pairs: points [h, w] (row, column), `closer` 1 or 2 (DA-2K's form, the store's). Their flags
(does the head label agree?) have one owner: the store recomputes them in the transaction of every
head change and every new pair.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

from ...labels import corrections
from ...labels.selection import region_from_layers
from ...store import ImageRecord, Label, PointPair, Revision, StatusChanges, Store
from .common import RANGES, Base, CurationError, check_id, check_point
from .views import confidence_bounds


@dataclass(frozen=True)
class ToolResult:
    depth: np.ndarray | None                    # (H, W) float32, None = keep the parent's
    masks: dict[str, np.ndarray | None]         # mask name -> new mask (None = drop)
    note: str


@dataclass(frozen=True)
class ToolContext:
    label: Label                                # the head label the caller opened
    region: np.ndarray                          # (H, W) bool, the selected / painted pixels
    params: dict
    store: Store
    image_id: int


def _ignore(c: ToolContext) -> ToolResult:
    if not c.region.any():
        raise CurationError("the selection is empty; select or paint the area training must skip first")
    mask = corrections.ignore_mask(c.region, c.label.masks.get("ignore"))
    return ToolResult(None, {"ignore": mask}, f"{int(c.region.sum())} px selected; {int(mask.sum())} px ignored")


def _unignore(c: ToolContext) -> ToolResult:
    old = c.label.masks.get("ignore")
    if old is None or not (np.asarray(old, bool) & c.region).any():
        raise CurationError("the selection does not touch the ignore mask; select ignored (grey) pixels")
    mask = np.asarray(old, bool) & ~c.region
    return ToolResult(None, {"ignore": mask if mask.any() else None}, f"{int(mask.sum())} px still ignored")


def _sky(c: ToolContext) -> ToolResult:
    d = c.label.depth
    max_depth = c.params.get("max_depth") or (float(np.nanmax(np.where(np.isfinite(d), d, np.nan)))
                                               if c.label.revision.kind == "metric_depth" else None)
    depth, sky = corrections.mark_sky(d, c.region, c.label.revision.kind, max_depth=max_depth)
    old = c.label.masks.get("sky")
    mask = sky | np.asarray(old, bool) if old is not None else sky
    return ToolResult(depth, {"sky": mask}, f"{int(sky.sum())} px marked as sky")


def _plane(c: ToolContext) -> ToolResult:
    depth, fit = corrections.fit_plane(c.label.depth, c.region, c.label.revision.kind,
                                       max_depth=c.params.get("max_depth"))
    return ToolResult(depth, {}, f"plane a={fit.a:.4g} b={fit.b:.4g} c={fit.c:.4g}, "
                                 f"inliers {fit.inlier_fraction:.0%}, rms {fit.rms:.3g}")


def _smooth(c: ToolContext) -> ToolResult:
    sigma = float(c.params.get("sigma") or 2.0)
    method = c.params.get("method") or "gaussian"
    depth = corrections.smooth_region(c.label.depth, c.region, sigma=sigma, method=method)
    return ToolResult(depth, {}, f"{method} smoothing, sigma {sigma:g} px")


def _copy(c: ToolContext) -> ToolResult:
    model_id = c.params.get("source_model")
    pred = c.store.get_prediction(c.image_id, model_id) if model_id else None
    if pred is None:
        raise CurationError(f"image {c.image_id} has no prediction from {model_id!r} to copy from; "
                            "pseudo-label it with that model first, or pick another model")
    if pred.kind != c.label.revision.kind:
        raise CurationError(f"{model_id} predicts {pred.kind} but this label is {c.label.revision.kind}; "
                            "copy from a model of the same kind")
    depth, al = corrections.copy_from_prediction(c.label.depth, c.store.prediction_array(pred), c.region)
    return ToolResult(depth, {}, f"copied from {model_id} (scale {al.scale:.4g}, shift {al.shift:.4g})")


# names short enough for the studio's tool picker (a narrow column); each applies to the current selection
TOOLS: dict[str, tuple[str, Callable[[ToolContext], ToolResult]]] = {
    "ignore_mask": ("Ignore (glass, mirrors, reflections)", _ignore),
    "unignore": ("Stop ignoring", _unignore),
    "sky": ("Sky (infinitely far)", _sky),
    "plane": ("Fit a plane (walls, floors, tables)", _plane),
    "smooth": ("Smooth", _smooth),
    "copy": ("Copy from another model", _copy),
}


def region_of(region, shape: tuple[int, int]) -> np.ndarray:
    """A selection (bool, 0/1 or 0..255) of the image's shape -> bool (H, W)."""
    m = np.asarray(region)
    if m.shape != tuple(shape):
        raise CurationError(f"the selection is {m.shape[1::-1] if m.ndim >= 2 else m.shape} pixels but the "
                            f"image is {shape[1]}x{shape[0]}; select on the image shown")
    return m.astype(bool)


class Edits(Base):
    def selection_of(self, image_id: int, *, selection: np.ndarray | None = None, layers=None,
                     erase_layers=None) -> np.ndarray:
        """What a tool applies to: the selection, plus what was painted on the editor's layers, minus
        what was painted with `erase_layers` (any canvas size: scaled to the image's pixels)."""
        rec = self.store.get_image(check_id("image_id", image_id))
        shape = (rec.height, rec.width)
        out = np.zeros(shape, bool) if selection is None else region_of(selection, shape).copy()
        out |= region_from_layers(layers, shape)
        return out & ~region_from_layers(erase_layers, shape)

    def check_head(self, image_id: int, expected_head) -> None:
        """Read-only: StaleRevisionError when the image's label moved since `expected_head` was shown."""
        self.store.check_head(check_id("image_id", image_id), expected_head)

    def apply_tool(self, image_id: int, tool: str, region, *, expected_head, author: str = "studio",
                   **params) -> Revision:
        """Run a correction tool on the head label and save the result as ONE new revision.

        region: (H, W) mask of the selected pixels (bool, 0/1 or 0..255). expected_head: the
        revision id the page showed; StaleRevisionError (nothing saved) when someone saved since.
        """
        if tool not in TOOLS:
            raise CurationError(f"unknown tool {tool!r}; choose one of {', '.join(TOOLS)}")
        image_id = check_id("image_id", image_id)
        self.store.check_head(image_id, expected_head)          # read-only: refused before any work
        if params.get("sigma") is not None:
            params["sigma"] = RANGES["sigma"].check(params["sigma"])
        head = self.store.head(image_id)
        if head is None:
            raise CurationError(f"image {image_id} has no label yet; pseudo-label it before correcting it")
        label = self.store.load_label(head)
        rec = self.store.get_image(image_id)
        region = region_of(region, (rec.height, rec.width))
        result = TOOLS[tool][1](ToolContext(label, region, params, self.store, image_id))
        return self.store.save_revision(image_id, result.depth, expected_head=head.id, tool=tool, author=author,
                                        masks=result.masks or None, note=result.note)

    # ---- decisions -------------------------------------------------------------------------
    def set_status(self, image_id: int, status: str, *, expected_head, author: str = "studio") -> ImageRecord:
        """Accept / reject the label as a whole (refused when the label moved since it was shown)."""
        image_id = check_id("image_id", image_id)
        if status in ("accepted", "rejected") and self.store.get_image(image_id).head_revision_id is None:
            raise CurationError(f"image {image_id} has no label yet; pseudo-label it before accepting or rejecting it")
        return self.store.set_status(image_id, status, author=author, expected_head=expected_head)

    def set_statuses(self, to: str, /, *, image_ids: Iterable[int] | None = None, author: str = "studio",
                     dry_run: bool = False, **flt) -> StatusChanges:
        """A batch decision: status `to` on the given images, or on every image of a filter (status, clip,
        name, tag, min/max_confidence: as `gallery`); images without a label are skipped, not accepted.
        Each keyset chunk of a filter is one transaction (`Store.set_statuses_where`)."""
        if image_ids is not None:
            ids = [check_id("image_id", i) for i in image_ids]
            if not ids:
                raise CurationError("select images first (tick them in the gallery's selection list)")
            return self.store.set_statuses(ids, to, author=author, dry_run=dry_run)
        flt = {k: v for k, v in flt.items() if v not in (None, "", "all")}
        flt.update(confidence_bounds(flt.pop("min_confidence", None), flt.pop("max_confidence", None)))
        return self.store.set_statuses_where(to, author=author, dry_run=dry_run, **flt)

    def undo(self, image_id: int, *, expected_head, author: str = "studio") -> Revision:
        """Back to the parent revision (HistoryError at the first one, saying so); the status follows."""
        return self.store.undo(check_id("image_id", image_id), author=author, expected_head=expected_head)

    def redo(self, image_id: int, *, expected_head, author: str = "studio") -> Revision:
        return self.store.redo(check_id("image_id", image_id), author=author, expected_head=expected_head)

    # ---- point pairs -----------------------------------------------------------------------
    def add_point_pair(self, image_id: int, point1, point2, closer: int, *, author: str = "studio") -> PointPair:
        """A DA-2K pair: points [h, w] (row, column), `closer` 1 or 2; flagged against the head by the store."""
        image_id = check_id("image_id", image_id)
        if closer not in (1, 2, "1", "2"):
            raise CurationError(f"say which point is closer: 1 or 2, not {closer!r}")
        rec = self.store.get_image(image_id)
        p1 = check_point(point1, (rec.height, rec.width), "point 1")
        p2 = check_point(point2, (rec.height, rec.width), "point 2")
        return self.store.add_point_pair(image_id, p1, p2, int(closer), author=author)

    def delete_point_pair(self, image_id: int, pair_id: int, *, author: str = "studio") -> None:
        """Remove (soft-delete) one of this image's pairs."""
        image_id, pair_id = check_id("image_id", image_id), check_id("pair_id", pair_id)
        if pair_id not in {p.id for p in self.store.point_pairs(image_id)}:
            raise CurationError(f"image {image_id} has no point pair {pair_id}; pick a number from its pair table")
        self.store.delete_point_pair(int(pair_id), author=author)

    # ---- tags ------------------------------------------------------------------------------
    def tag(self, image_ids: Iterable[int], tags, *, remove: bool = False, author: str = "studio") -> int:
        ids = [check_id("image_id", i) for i in image_ids]
        if not ids:
            raise CurationError("select an image (or tick several) to tag first")
        change = self.store.remove_tags if remove else self.store.add_tags
        return change(ids, tags, author=author)

