"""Label correction tools: pure numpy functions on (H, W) float32 labels. No I/O.

Every tool returns a NEW array (the input is never modified) and, where it makes one, a mask.
The store turns each result into a new label revision; the UI only paints masks and clicks.

What the tools assume about the label `kind` (the string carried with every prediction):
- "disparity": affine-invariant inverse depth from a relative model, d = s / Z + t with s > 0.
  Larger = closer; 0 is the conventional value for sky / infinitely far.
- "metric_depth": depth Z in metres. Smaller = closer. Geometry (plane fits, closeness) is
  done in inverse depth 1/Z, where planes are linear in the image coordinates.
Pixels that are not finite are ignored by every fit and left as they are outside the region.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from ..errors import StudioError

KINDS = ("disparity", "metric_depth")


class CorrectionError(StudioError, ValueError):
    """A correction that cannot be applied (empty region, wrong shape, unknown kind)."""


# ---------------------------------------------------------------------------- validation
def _label(label: np.ndarray) -> np.ndarray:
    arr = np.asarray(label)
    if arr.ndim != 2:
        raise CorrectionError(f"a label must be a 2-D (H, W) array; got shape {arr.shape}")
    return arr.astype(np.float32, copy=True)


def _mask(mask, shape: tuple[int, int], what: str = "mask") -> np.ndarray:
    """Any array (bool, 0/1, 0..255) of the label's shape -> bool (H, W); nonzero = painted."""
    m = np.asarray(mask)
    if m.shape != tuple(shape):
        raise CorrectionError(f"the {what} has shape {m.shape} but the label is {tuple(shape)}; "
                              "paint it on the same image")
    return m.astype(bool) if m.dtype != bool else m.copy()


def _kind(kind: str) -> str:
    if kind not in KINDS:
        raise CorrectionError(f"unknown label kind {kind!r}; expected one of {', '.join(KINDS)}")
    return kind


def _nonempty(region: np.ndarray, what: str) -> None:
    if not region.any():
        raise CorrectionError(f"the selection is empty; select (magic wand) or paint the area to {what} first")


# ---------------------------------------------------------------------------- masks and sky
def ignore_mask(painted, existing=None, *, shape: tuple[int, int] | None = None) -> np.ndarray:
    """Union of a painted mask with an existing ignore mask (regions training must skip).

    Returns a new bool (H, W) array; `existing=None` means no previous mask.
    """
    shape = tuple(shape) if shape is not None else np.asarray(painted).shape
    out = _mask(painted, shape, "painted mask")
    if existing is not None:
        out |= _mask(existing, shape, "existing ignore mask")
    return out


def mark_sky(label: np.ndarray, region, kind: str, *, max_depth: float | None = None
             ) -> tuple[np.ndarray, np.ndarray]:
    """Mark a region as sky / infinitely far. Returns (new_label, sky_mask (H, W) bool).

    disparity: the region becomes 0 (infinitely far under d = s / Z with no shift).
    metric_depth: the region becomes `max_depth` (the model's range cap, e.g. 20 or 80 m).
    `max_depth` is required for metric labels, because an infinity breaks 16-bit export and
    training losses; pass `max_depth=np.inf` to store a true infinity on purpose.
    """
    out = _label(label)
    sky = _mask(region, out.shape, "sky region")
    _nonempty(sky, "mark as sky")
    if _kind(kind) == "disparity":
        out[sky] = 0.0
    else:
        if max_depth is None or not max_depth > 0:
            raise CorrectionError("marking sky on a metric depth label needs max_depth "
                                  "(the model's maximum depth in metres, e.g. 20 or 80)")
        out[sky] = np.float32(max_depth)
    return out, sky


# ---------------------------------------------------------------------------- plane fit
@dataclass(frozen=True)
class PlaneFit:
    """inverse = a * u + b * v + c over pixel coordinates (u = column, v = row)."""
    a: float
    b: float
    c: float
    inlier_fraction: float    # share of the region's valid pixels the final fit used
    rms: float                # RMS residual over the inliers, in the fitted space

    def evaluate(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        return self.a * u + self.b * v + self.c


def _lstsq_plane(u: np.ndarray, v: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Least-squares (a, b, c) of y = a*u + b*v + c via centred 3x3 normal equations.

    Sums, not a BLAS/LAPACK call: on a busy machine their threads cost more than the work."""
    mu, mv, my = u.mean(), v.mean(), y.mean()
    du, dv, dy = u - mu, v - mv, y - my
    M = np.array([[(du * du).sum(), (du * dv).sum()], [(du * dv).sum(), (dv * dv).sum()]])
    rhs = np.array([(du * dy).sum(), (dv * dy).sum()])
    ab = np.linalg.lstsq(M, rhs, rcond=None)[0] if abs(np.linalg.det(M)) < 1e-12 * max(M.max(), 1) \
        else np.linalg.solve(M, rhs)
    return np.array([ab[0], ab[1], my - ab[0] * mu - ab[1] * mv])


def robust_plane(u: np.ndarray, v: np.ndarray, y: np.ndarray, *, trials: int = 128,
                 refits: int = 4, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Fit y = a*u + b*v + c ignoring outliers (up to ~half the points).

    Least median of squares over `trials` random 3-point planes (deterministic `seed`; the
    medians on a 4096-point subsample), then `refits` rounds of least squares on the points
    within 3 robust sigmas. All in float64. Returns (coef (3,), inlier mask (N,)).
    """
    u, v, y = (np.asarray(a, np.float64) for a in (u, v, y))
    n = len(y)
    if n < 3:
        raise CorrectionError(f"a plane needs at least 3 valid pixels in the region; got {n}")
    rng = np.random.default_rng(seed)
    idx = np.stack([rng.choice(n, 3, replace=False) for _ in range(trials)])     # (T, 3)
    A = np.stack([u[idx], v[idx], np.ones(idx.shape)], axis=-1)                  # (T, 3, 3)
    ok = np.abs(np.linalg.det(A)) > 1e-9
    best = _lstsq_plane(u, v, y)
    if ok.any():
        coefs = np.linalg.solve(A[ok], y[idx[ok]][..., None])[..., 0]           # (T', 3)
        sub = rng.choice(n, min(n, 4096), replace=False)
        res = coefs[:, :1] * u[sub] + coefs[:, 1:2] * v[sub] + coefs[:, 2:] - y[sub]   # (T', S)
        med = np.median(res * res, axis=1)
        if med.min() < np.median((best[0] * u[sub] + best[1] * v[sub] + best[2] - y[sub]) ** 2):
            best = coefs[int(np.argmin(med))]
    scale = max(float(np.abs(y).max()), 1e-30)
    inliers = np.ones(n, bool)
    for _ in range(refits):
        r = np.abs(best[0] * u + best[1] * v + best[2] - y)
        sigma = 1.4826 * np.median(r)
        inliers = r <= max(3.0 * sigma, 1e-6 * scale)
        if inliers.sum() < 3:
            break
        best = _lstsq_plane(u[inliers], v[inliers], y[inliers])
    return best, inliers


def fit_plane(label: np.ndarray, region, kind: str, *, max_depth: float | None = None
              ) -> tuple[np.ndarray, PlaneFit]:
    """Replace a painted region (wall, floor, table) by the plane that fits it best.

    Under a pinhole camera a 3D plane n.X = h gives 1/Z = (n . K^-1 [u, v, 1]) / h: inverse
    depth is exactly linear in the pixel coordinates. So disparity labels (d = s/Z + t, still
    linear) are fitted as d = a*u + b*v + c, and metric labels as 1/Z = a*u + b*v + c then
    inverted. The fit is robust (see `robust_plane`) so the corrupted pixels a user paints
    over do not bend it. For metric labels, where the plane lies farther than `max_depth` or
    beyond its horizon (inverse depth <= 0) the value becomes `max_depth` (inf when not given).
    Returns (new_label, PlaneFit).
    """
    out = _label(label)
    kind = _kind(kind)
    reg = _mask(region, out.shape, "plane region")
    _nonempty(reg, "fit a plane to")
    vals = out[reg].astype(np.float64)
    inverse = vals if kind == "disparity" else np.where(vals > 0, 1.0 / np.where(vals > 0, vals, 1.0), np.nan)
    valid = np.isfinite(inverse)
    vs, us = np.nonzero(reg)                                          # rows, columns
    coef, inl = robust_plane(us[valid].astype(np.float64), vs[valid].astype(np.float64), inverse[valid])
    plane = coef[0] * us + coef[1] * vs + coef[2]                     # (N,) float64
    if kind == "disparity":
        new = plane
    else:
        far = np.inf if max_depth is None else float(max_depth)
        near_enough = plane > 1.0 / far                               # plane > 0 when far = inf
        new = np.where(near_enough, 1.0 / np.where(near_enough, plane, 1.0), far)
    out[reg] = new.astype(np.float32)
    fit_u, fit_v, fit_y = us[valid][inl], vs[valid][inl], inverse[valid][inl]
    rms = float(np.sqrt(np.mean((coef[0] * fit_u + coef[1] * fit_v + coef[2] - fit_y) ** 2))) if inl.any() \
        else float("nan")
    return out, PlaneFit(float(coef[0]), float(coef[1]), float(coef[2]),
                         float(inl.mean()), rms)


# ---------------------------------------------------------------------------- smoothing
def _gaussian(values: np.ndarray, weight: np.ndarray, sigma: float, **_) -> np.ndarray:
    """Normalised convolution: blur(values * weight) / blur(weight)."""
    num = ndimage.gaussian_filter(values * weight, sigma, mode="nearest")
    den = ndimage.gaussian_filter(weight, sigma, mode="nearest")
    return num / np.maximum(den, 1e-12)


def _bilateral(values: np.ndarray, weight: np.ndarray, sigma: float, *, range_sigma: float,
               **_) -> np.ndarray:
    """Edge-aware: neighbours whose value differs by >> range_sigma get no weight."""
    r = int(np.ceil(2 * sigma))
    pad = lambda a: np.pad(a, r, mode="edge")                         # noqa: E731
    pv, pw = pad(values), pad(weight)
    H, W = values.shape
    num = np.zeros_like(values)
    den = np.zeros_like(values)
    for dy in range(-r, r + 1):
        for dx in range(-r, r + 1):
            nv = pv[r + dy:r + dy + H, r + dx:r + dx + W]
            nw = pw[r + dy:r + dy + H, r + dx:r + dx + W]
            w = nw * np.exp(-(dx * dx + dy * dy) / (2 * sigma ** 2)
                            - (nv - values) ** 2 / (2 * range_sigma ** 2))
            num += w * nv
            den += w
    return num / np.maximum(den, 1e-12)


SMOOTHERS = {"gaussian": _gaussian, "bilateral": _bilateral}


def smooth_region(label: np.ndarray, region, *, sigma: float = 2.0, method: str = "gaussian",
                  range_sigma: float | None = None) -> np.ndarray:
    """Smooth the label inside `region` only; every value outside is unchanged bit for bit.

    The filter reads neighbours on both sides of the region's edge (so the result joins its
    surroundings) but ignores non-finite pixels. `method`: "gaussian" (spatial sigma in pixels)
    or "bilateral" (edge-aware; `range_sigma` in label units, default 10% of the region's
    value spread). Works the same for disparity and metric depth (smoothing is local).
    """
    if method not in SMOOTHERS:
        raise CorrectionError(f"unknown smoothing method {method!r}; choose one of {', '.join(SMOOTHERS)}")
    if not sigma > 0:
        raise CorrectionError(f"sigma must be positive pixels; got {sigma!r}")
    out = _label(label)
    reg = _mask(region, out.shape, "smoothing region")
    _nonempty(reg, "smooth")
    finite = np.isfinite(out)
    vals = np.where(finite, out, 0.0).astype(np.float64)
    if range_sigma is None:
        inside = out[reg & finite]
        spread = float(inside.max() - inside.min()) if inside.size else 0.0
        range_sigma = max(0.1 * spread, 1e-6)
    # work on the region's bounding box plus the filter's reach: same values, less work
    reach = int(4.0 * sigma + 0.5) + 1                   # gaussian_filter's truncate=4 radius
    rows, cols = np.nonzero(reg.any(axis=1))[0], np.nonzero(reg.any(axis=0))[0]
    box = (slice(max(rows[0] - reach, 0), rows[-1] + reach + 1),
           slice(max(cols[0] - reach, 0), cols[-1] + reach + 1))
    smoothed = SMOOTHERS[method](vals[box], finite[box].astype(np.float64), sigma, range_sigma=range_sigma)
    write = reg[box] & finite[box]
    out[box][write] = smoothed[write].astype(np.float32)  # out[box] is a view into out
    return out


# ---------------------------------------------------------------------------- copy / align
@dataclass(frozen=True)
class Alignment:
    """target ~= scale * source + shift, fitted by least squares on `pixels` pixels."""
    scale: float
    shift: float
    pixels: int


def align_scale_shift(source: np.ndarray, target: np.ndarray, mask=None) -> Alignment:
    """Least-squares scale and shift taking `source` onto `target` over `mask` (finite pixels).

    Relative models' disparities are each affine in the true inverse depth, so two models'
    outputs are only comparable after this alignment.
    """
    src, tgt = np.asarray(source, np.float64), np.asarray(target, np.float64)
    if src.shape != tgt.shape:
        raise CorrectionError(f"cannot align arrays of shapes {src.shape} and {tgt.shape}")
    use = np.isfinite(src) & np.isfinite(tgt)
    if mask is not None:
        use &= _mask(mask, src.shape, "alignment mask")
    n = int(use.sum())
    if n < 2:
        raise CorrectionError("too few pixels outside the region to align the two predictions; "
                              "paint a smaller region")
    x, y = (src.ravel(), tgt.ravel()) if n == use.size else (src[use], tgt[use])   # (n,)
    xc = x - x.mean()
    var = float(np.square(xc).sum())                 # not `@`: BLAS threads cost more than they save here
    scale = float((xc * (y - y.mean())).sum()) / var if var > 0 else 0.0
    return Alignment(scale, float(y.mean() - scale * x.mean()), n)


def copy_from_prediction(label: np.ndarray, source: np.ndarray, region
                         ) -> tuple[np.ndarray, Alignment]:
    """Replace the region's values by another model's prediction, aligned to this label.

    The scale and shift come from least squares over the pixels OUTSIDE the region (where the
    label is trusted), then `scale * source + shift` is written inside it. Both arrays must be
    of the same kind (two disparities, or two metric depths): convert before calling.
    """
    out = _label(label)
    src = np.asarray(source, np.float32)
    if src.shape != out.shape:
        raise CorrectionError(f"the other prediction has shape {src.shape} but the label is "
                              f"{out.shape}; predict the same image")
    reg = _mask(region, out.shape, "copy region")
    _nonempty(reg, "copy")
    al = align_scale_shift(src, out, ~reg)
    out[reg] = (al.scale * src[reg].astype(np.float64) + al.shift).astype(np.float32)
    return out, al


# ---------------------------------------------------------------------------- point pairs
# One form everywhere (the store, the curation service, the studio's tables, exports): DA-2K's
# files, points as [h, w] = (row, column), `closer` 1 or 2 (DA-2K: "closer_point": "point1" | "point2").
def pair_form(p) -> tuple[tuple[int, int], tuple[int, int], int]:
    """((h1, w1), (h2, w2), closer 1|2) of a point pair given as the store's PointPair (.point1,
    .point2, .closer), a DA-2K dict ({"point1": [h, w], "point2": [h, w], "closer_point": "point1"}) or a
    tuple (point1 [h, w], point2 [h, w], closer 1 | 2)."""
    if isinstance(p, Mapping):
        closer = p.get("closer_point", p.get("closer"))
        p1, p2 = p["point1"], p["point2"]
    elif hasattr(p, "point1"):
        p1, p2, closer = p.point1, p.point2, p.closer
    else:
        p1, p2, closer = p
    closer = {"point1": 1, "point2": 2}.get(closer, closer)
    if closer not in (1, 2):
        raise CorrectionError(f"a point pair's closer point must be 1 or 2 ('point1' / 'point2'); got {closer!r}")
    (h1, w1), (h2, w2) = p1, p2
    return (int(h1), int(w1)), (int(h2), int(w2)), int(closer)


def closeness(label: np.ndarray, kind: str) -> np.ndarray:
    """A float64 array where larger = closer: disparity itself, or 1/Z for metric depth."""
    arr = np.asarray(label, np.float64)
    if _kind(kind) == "disparity":
        return arr
    with np.errstate(divide="ignore"):
        return np.where(arr > 0, 1.0 / arr, np.inf)


def check_point_pairs(label: np.ndarray, pairs: Iterable, kind: str, *, margin: float = 0.0
                      ) -> np.ndarray:
    """Which pairs the label disagrees with. Returns bool (P,), True = flagged.

    pairs: in DA-2K form, points [h, w] (see `pair_form`). A pair agrees when
    closeness(closer) - closeness(farther) > margin * R, where closeness is disparity (larger =
    closer) or 1/Z for metric depth (smaller Z = closer), and R is the label's robust closeness
    range (2nd to 98th percentile of finite values), so the margin is a fraction of the scene's
    range and invariant to the disparity's scale and shift. Equal values are flagged (the label
    cannot tell which is closer). The store calls this whenever an image's head label changes
    (the one place flags are computed).
    """
    arr = np.asarray(label)
    if arr.ndim != 2:
        raise CorrectionError(f"a label must be a 2-D (H, W) array; got shape {arr.shape}")
    c = closeness(arr, kind)
    fin = c[np.isfinite(c)]
    R = float(np.percentile(fin, 98) - np.percentile(fin, 2)) if fin.size else 0.0
    H, W = arr.shape
    flags = []
    for p1, p2, closer in map(pair_form, pairs):
        for h, w in (p1, p2):
            if not (0 <= h < H and 0 <= w < W):
                raise CorrectionError(f"point [h={h}, w={w}] is outside the {W}x{H} image")
        c1, c2 = c[p1], c[p2]
        near, far = (c1, c2) if closer == 1 else (c2, c1)
        flags.append(not (near - far > margin * R))
    return np.array(flags, dtype=bool)


# ---------------------------------------------------------------------------- confidence
def flip_consistency(pred: np.ndarray, pred_of_flipped: np.ndarray, *, valid=None
                     ) -> tuple[float, np.ndarray]:
    """Confidence of a pseudo-label from its horizontal-flip prediction. Low = bad.

    `pred_of_flipped` is the model's output for the horizontally flipped image, as it came out
    (this function flips it back). It is aligned to `pred` by least-squares scale and shift,
    then the per-pixel confidence is 1 - min(1, |pred - aligned| / R), where R is `pred`'s
    robust range (2nd to 98th percentile; on images over 65536 pixels, of every other row and
    column). Returns (mean confidence over valid pixels,
    confidence map float32 (H, W) in [0, 1]; 0 where not finite).
    """
    p = np.asarray(pred, np.float64)
    back = np.asarray(pred_of_flipped, np.float64)[:, ::-1]
    if p.shape != back.shape or p.ndim != 2:
        raise CorrectionError(f"prediction shapes differ: {p.shape} vs {back.shape}")
    use = np.isfinite(p) & np.isfinite(back)
    if valid is not None:
        use &= _mask(valid, p.shape, "valid mask")
    if use.sum() < 2:
        return 0.0, np.zeros(p.shape, np.float32)
    al = align_scale_shift(back, p, use)
    # R from a 1-in-4 pixel grid on large images: a normaliser, 4x cheaper to sort
    grid = (p[::2, ::2], use[::2, ::2]) if p.size > 65536 else (p, use)
    lo, hi = np.quantile(grid[0][grid[1]], [0.02, 0.98])
    R = max(float(hi - lo), 1e-12)
    err = np.abs(p - (al.scale * back + al.shift)) / R
    conf = np.where(use, 1.0 - np.minimum(err, 1.0), 0.0).astype(np.float32)
    return float(conf[use].mean()), conf
