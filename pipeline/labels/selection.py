"""Assisted selection on a label: the masks the correction tools apply to. Pure numpy / scipy /
scikit-image, no I/O, no downloads (SAM, optional, lives in `sam_select.py`).

A selection is a bool (H, W) mask. Seeds are pixels [h, w] (row, column), the form point pairs use.
- `wand_depth`: the connected region around the seed whose closeness (disparity, or 1/Z for metric
  depth: larger = closer) is within `tolerance` x the label's range of the seed's value: the sky
  (disparity ~0), a wall facing the camera, an object standing out.
- `wand_plane`: the connected region that lies on the plane fitted around the seed (closeness is
  linear in the pixel coordinates on any 3D plane, for disparity and 1/Z alike), refitted as it grows:
  a floor or a slanted wall up to the crease where it meets another plane.
- `Superpixels`: scikit-image SLIC (compact, regular) or Felzenszwalb (follows colour edges,
  segments of any size) over the image; `segment_at` selects the segment under a click and
  `snap` makes a rough selection follow segment boundaries.
- `region_from_layers`: painted editor layers (RGBA, alpha > 0 = painted) -> the image's mask.
`tolerance` is a fraction of the label's robust range (2nd-98th percentile of finite closeness),
so one value means the same on every image and for either kind of label.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image
from scipy import ndimage

from .corrections import CorrectionError, closeness, robust_plane

WAND_MODES = ("depth", "plane")
SUPERPIXEL_METHODS = ("slic", "felzenszwalb")
OPERATIONS = ("add", "subtract", "replace")


class SelectionError(CorrectionError):
    """A selection that cannot be made (seed outside the image, no label value there, ...)."""


def _seed(seed, shape: tuple[int, int]) -> tuple[int, int]:
    try:
        h, w = (int(round(float(v))) for v in seed)
    except (TypeError, ValueError):
        raise SelectionError(f"a seed is a pixel [h, w] (row, column); got {seed!r}") from None
    if not (0 <= h < shape[0] and 0 <= w < shape[1]):
        raise SelectionError(f"the seed [h={h}, w={w}] is outside the {shape[1]}x{shape[0]} image")
    return h, w


def _prepared(label: np.ndarray, kind: str, seed) -> tuple[np.ndarray, float, tuple[int, int]]:
    """(closeness (H, W) with NaN where no value, its robust range R, the seed)."""
    c = closeness(label, kind)
    c = np.where(np.isfinite(c), c, np.nan)
    at = _seed(seed, c.shape)
    if not np.isfinite(c[at]):
        raise SelectionError(f"the label has no value at [h={at[0]}, w={at[1]}]; click on a surface with depth")
    fin = c[np.isfinite(c)]
    lo, hi = np.percentile(fin, [2, 98])
    return c, max(float(hi - lo), 1e-12), at


def _tolerance(tolerance: float) -> float:
    t = float(tolerance)
    if not 0 < t <= 1:
        raise SelectionError(f"tolerance is a fraction of the label's range, in (0, 1]; got {tolerance!r}")
    return t


def _connected(within: np.ndarray, at: tuple[int, int]) -> np.ndarray:
    """The 4-connected component of `within` holding the seed."""
    if not within[at]:
        return np.zeros(within.shape, bool)
    labels, _ = ndimage.label(within)
    return labels == labels[at]


def wand_depth(label: np.ndarray, kind: str, seed, tolerance: float = 0.05) -> np.ndarray:
    """bool (H, W): pixels connected to the seed with closeness within tolerance x R of the seed's."""
    c, R, at = _prepared(label, kind, seed)
    with np.errstate(invalid="ignore"):
        within = np.abs(c - c[at]) <= _tolerance(tolerance) * R
    return _connected(within, at)


def wand_plane(label: np.ndarray, kind: str, seed, tolerance: float = 0.03, *, rounds: int = 4) -> np.ndarray:
    """bool (H, W): the connected region on the plane through the seed's neighbourhood, refitted as it
    grows (`rounds` fits); residuals within tolerance x R."""
    c, R, at = _prepared(label, kind, seed)
    H, W = c.shape
    tol = _tolerance(tolerance) * R
    r = max(2, min(H, W) // 40)
    region = np.zeros((H, W), bool)
    region[max(0, at[0] - r):at[0] + r + 1, max(0, at[1] - r):at[1] + r + 1] = True
    region &= np.isfinite(c)
    vv, uu = np.mgrid[0:H, 0:W]
    for _ in range(rounds):
        rows, cols = np.nonzero(region)
        if len(rows) < 3:
            break
        if len(rows) > 20_000:                                   # a fit needs no more points than that
            keep = np.linspace(0, len(rows) - 1, 20_000).astype(int)
            rows, cols = rows[keep], cols[keep]
        coef, _ = robust_plane(cols.astype(np.float64), rows.astype(np.float64), c[rows, cols])
        with np.errstate(invalid="ignore"):
            within = np.abs(c - (coef[0] * uu + coef[1] * vv + coef[2])) <= tol
        grown = _connected(within, at)
        if not grown.any() or np.array_equal(grown, region):
            region = grown if grown.any() else region
            break
        region = grown
    return region


def combine(selection: np.ndarray | None, region: np.ndarray, operation: str = "add") -> np.ndarray:
    """The selection after adding / subtracting a region (replace: the region alone)."""
    if operation not in OPERATIONS:
        raise SelectionError(f"unknown selection operation {operation!r}; use one of {', '.join(OPERATIONS)}")
    region = np.asarray(region, bool)
    if selection is None or operation == "replace":
        return region.copy() if operation != "subtract" else np.zeros_like(region)
    selection = np.asarray(selection, bool)
    return selection | region if operation == "add" else selection & ~region


# ----------------------------------------------------------------------------- superpixels
@dataclass(frozen=True)
class Superpixels:
    """A segmentation of an image: segments (H, W) int32, 0..n-1."""
    segments: np.ndarray
    method: str
    detail: int

    @property
    def count(self) -> int:
        return int(self.segments.max()) + 1

    def segment_at(self, seed) -> np.ndarray:
        """bool (H, W): the segment under the pixel [h, w]."""
        at = _seed(seed, self.segments.shape)
        return self.segments == self.segments[at]

    def snap(self, selection: np.ndarray, share: float = 0.5) -> np.ndarray:
        """The segments at least `share` selected, whole: a rough selection made to follow edges."""
        sel = np.asarray(selection, bool)
        if sel.shape != self.segments.shape:
            raise SelectionError(f"the selection is {sel.shape}, the image {self.segments.shape}")
        inside = np.bincount(self.segments.ravel(), weights=sel.ravel(), minlength=self.count)
        size = np.bincount(self.segments.ravel(), minlength=self.count)
        return (inside / np.maximum(size, 1) >= share)[self.segments]


def superpixels(rgb: np.ndarray, method: str = "slic", detail: int = 400) -> Superpixels:
    """Segment an (H, W, 3) uint8 image. detail: about how many segments (SLIC), or how small they
    may get (Felzenszwalb: larger detail = smaller segments), 10..5000."""
    from skimage import segmentation  # lazy: a second to import
    if method not in SUPERPIXEL_METHODS:
        raise SelectionError(f"unknown superpixel method {method!r}; use one of {', '.join(SUPERPIXEL_METHODS)}")
    detail = int(detail)
    if not 10 <= detail <= 5000:
        raise SelectionError(f"superpixel detail runs from 10 to 5000; got {detail}")
    img = np.asarray(rgb)
    if img.ndim != 3 or img.shape[2] != 3:
        raise SelectionError(f"superpixels need an (H, W, 3) colour image; got shape {img.shape}")
    if method == "slic":
        seg = segmentation.slic(img, n_segments=detail, compactness=10.0, start_label=0)
    else:
        area = img.shape[0] * img.shape[1]
        seg = segmentation.felzenszwalb(img, scale=max(1.0, 4.0e4 / detail), sigma=0.8,
                                        min_size=max(10, area // (4 * detail)))
    _, seg = np.unique(seg, return_inverse=True)                 # 0..n-1 whatever the method returned
    return Superpixels(seg.reshape(img.shape[:2]).astype(np.int32), method, detail)


# ----------------------------------------------------------------------------- painted layers
def region_from_layers(layers, shape: tuple[int, int]) -> np.ndarray:
    """Painted layers of an image editor (RGBA arrays: alpha > 0 = painted; or 2-D / RGB: nonzero) ->
    bool (H, W) of the image's size; a canvas of another size is scaled back (nearest)."""
    mask = np.zeros(shape, bool)
    for layer in layers or []:
        if layer is None:
            continue
        arr = np.asarray(layer)
        if arr.ndim == 3 and arr.shape[2] == 4:
            painted = arr[..., 3] > 0
        elif arr.ndim >= 2:
            painted = arr.reshape(arr.shape[:2] + (-1,)).any(-1)
        else:
            raise SelectionError(f"a painted layer must be an image; got shape {arr.shape}")
        if painted.shape != tuple(shape):
            painted = np.asarray(Image.fromarray(painted).resize((shape[1], shape[0]), Image.NEAREST))
        mask |= painted
    return mask
