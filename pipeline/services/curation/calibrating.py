"""A label calibrated to metres from what a person knows about the scene, saved as a new revision.

References (points [h, w], regions bool (H, W) masks or boxes [top, left, bottom, right] inclusive):
    {"type": "distance", "a": [h, w], "b": [h, w], "metres": 2.4}      two surfaces this far apart
    {"type": "depth", "point": [h, w], "metres": 3.1}                  this far from the camera
    {"type": "depth", "region": mask | box, "metres": 3.1}             median depth of a region
    {"type": "camera_height", "region": mask | box, "metres": 1.6}     camera this high over a floor
    {"type": "right_angle", "region": mask | box, "region_b": ...}     two planes meeting at 90 degrees
The maths is pipeline/geometry/calibration.py's (which references fix which unknowns, refusals with what else
is needed); this module converts the references (its points are (x, y): converted here, once), finds
the focal length (typed, else the image's EXIF, else calibration's default field of view) and saves
the result as ONE revision: tool "calibrate", kind metric_depth, source "human", its note the formula
and fit, its meta the calibration summary and the references as given. Pixels the calibration leaves
without a depth (beyond the horizon) are added to the ignore mask, so training skips them. The
revision's status is 'corrected', so `Store.training_items` hands it to metric training as a
metric_depth label. Per-pixel provenance: the values keep their origin (a person chose the scale and
shift, not each value), so a calibrated pseudo-label is never evidence against the model that made it.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...files.image_io import decode_image
from ...geometry import calibration as cal
from ...store import Revision
from .common import RANGES, Base, CurationError, check_id, check_point

REFERENCE_TYPES = ("distance", "depth", "camera_height", "right_angle")
CALIBRATE_TOOL = "calibrate"


@dataclass(frozen=True)
class Calibrated:
    revision: Revision
    calibration: cal.Calibration


def _region(value, shape: tuple[int, int], what: str) -> np.ndarray:
    """A bool (H, W) mask, or a box [top, left, bottom, right] (inclusive) made into one."""
    if value is None:
        raise CurationError(f"{what}: select the region first")
    arr = np.asarray(value)
    if arr.ndim == 2:
        if arr.shape != shape:
            raise CurationError(f"{what}: the region is {arr.shape}, the image {shape}; select it on this image")
        return arr.astype(bool)
    if arr.shape != (4,):
        raise CurationError(f"{what}: give a region as a mask or a box [top, left, bottom, right]")
    (t, left), (b, r) = check_point(arr[:2], shape, f"{what} box corner"), check_point(arr[2:], shape, f"{what} box corner")
    if b < t or r < left:
        raise CurationError(f"{what}: the box [{t}, {left}, {b}, {r}] is empty; give [top, left, bottom, right]")
    mask = np.zeros(shape, bool)
    mask[t:b + 1, left:r + 1] = True
    return mask


def _xy(point, shape: tuple[int, int], what: str) -> tuple[float, float]:
    h, w = check_point(point, shape, f"{what} point")
    return float(w), float(h)                        # calibration.py's (x = column, y = row)


def to_reference(ref: dict, shape: tuple[int, int], i: int):
    """One reference as calibration.py's object (the conversion from [h, w] happens here only)."""
    kind, what = ref.get("type"), f"reference {i}"
    if kind not in REFERENCE_TYPES:
        raise CurationError(f"{what}: unknown type {kind!r}; use one of {', '.join(REFERENCE_TYPES)}")
    metres = None if kind == "right_angle" else RANGES["metres"].check(ref.get("metres"))
    if kind == "distance":
        return cal.KnownDistance(_xy(ref.get("a"), shape, what), _xy(ref.get("b"), shape, what), metres, window=1)
    if kind == "depth":
        if ref.get("point") is not None:
            return cal.KnownDepth(metres, point=_xy(ref["point"], shape, what), window=1)
        return cal.KnownDepth(metres, region=_region(ref.get("region"), shape, what))
    if kind == "camera_height":
        return cal.CameraHeight(_region(ref.get("region"), shape, what), metres)
    return cal.RightAngle(_region(ref.get("region"), shape, what + " (first plane)"),
                          _region(ref.get("region_b"), shape, what + " (second plane)"))


def describe(ref: dict) -> dict:
    """A reference as JSON (regions as pixel counts or their box): what the revision's meta keeps."""
    out = {k: v for k, v in ref.items() if k not in ("region", "region_b")}
    for key in ("region", "region_b"):
        value = ref.get(key)
        if value is not None:
            arr = np.asarray(value)
            out[key] = [int(v) for v in arr] if arr.ndim == 1 else {"pixels": int(np.count_nonzero(arr))}
    return out


class Calibrating(Base):
    def calibrate(self, image_id: int, references: list[dict], *, expected_head, focal_px=None,
                  assume_zero_shift: bool = False, author: str = "studio") -> Calibrated:
        """The head label in metres from `references` (see the module docstring), as a new revision.
        CalibrationError (nothing saved) when they cannot fix it, saying what else is needed."""
        image_id = check_id("image_id", image_id)
        self.store.check_head(image_id, expected_head)               # read-only: refused before any work
        rec = self.store.get_image(image_id)
        head = self.store.head(image_id)
        if head is None:
            raise CurationError(f"image {image_id} has no label yet; pseudo-label it before calibrating it")
        if not references:
            raise CurationError("add a reference first: a known distance between two points, a known depth, "
                                "the camera height over the floor, or a right angle between two planes")
        shape = (rec.height, rec.width)
        refs = [to_reference(r, shape, i + 1) for i, r in enumerate(references)]
        label = self.render.label(head)
        exif = decode_image(self.store.image_bytes(rec.id), name=rec.name, max_pixels=self.settings.max_pixels).focal_px
        result = cal.calibrate(label.depth, head.kind, refs, focal_px=RANGES["focal_px"].check(focal_px),
                               exif_focal_px=exif, assume_zero_shift=bool(assume_zero_shift))
        depth = result.depth.astype(np.float32)
        masks = {}
        if result.beyond_horizon:
            old = label.masks.get("ignore")
            no_depth = ~np.isfinite(depth)
            masks["ignore"] = no_depth | np.asarray(old, bool) if old is not None else no_depth
        worst = max((abs(r.get("residual_pct", 0.0)) for r in result.references), default=0.0)
        note = (f"calibrated to metres from {len(refs)} reference(s): {result.formula}; worst length off by "
                f"{worst:.1f}%; focal {result.focal_px:.0f} px ({result.focal_source})")
        meta = {"calibration": result.summary(), "references": [describe(r) for r in references],
                "from_revision": head.number}
        rev = self.store.save_revision(image_id, depth, expected_head=head.id, tool=CALIBRATE_TOOL, author=author,
                                       kind="metric_depth", masks=masks or None, note=note, meta=meta)
        return Calibrated(rev, result)
