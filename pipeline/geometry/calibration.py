"""Calibrating a label to metres from a few known measurements. Pure numpy/scipy, no I/O.

A relative label d is disparity known up to scale and shift: 1 / Z = s * d + t with s > 0.
We solve for (s, r) with t = s * r (r is the shift in label units), because then every reference
that measures a length is "its length at s = 1" divided by s:

| reference                          | equation (x, y: pixel -> ray, see pointcloud.rays_at)  | fixes            |
| ---------------------------------- | ------------------------------------------------------ | ---------------- |
| KnownDepth (a point, or a region's | s * (d + r) = 1 / Z  (linear in s and t)               | one equation     |
|   median depth)                    |                                                        |                  |
| KnownDistance (two pixels, metres) | |ray_a / (d_a + r) - ray_b / (d_b + r)| / s = D        | one equation     |
| CameraHeight (a floor region)      | floor d = a x + b y + c; 1 / (s |(a, b, c + r)|) = H   | one equation     |
| RightAngle (two planar regions,    | normals (a, b, c + r) of the two fitted planes are     | r only, never s  |
|   e.g. floor and wall)             | perpendicular                                          |                  |

Unknowns: two (s, t); one with `assume_zero_shift=True` (t = 0: depth = 1 / (s d)); one for a
metric prediction, which is only rescaled (Z = k * prediction). Hence:
- at least one length reference (depth, distance or height) is always needed: angles are blind to scale;
- with the shift free, at least two references in all. ONE KNOWN DISTANCE ALONE IS REFUSED: it is one
  equation for two unknowns, and a whole curve of (s, t) reproduces it exactly while putting every
  other pixel at a different depth. Its honest single-measurement uses are (a) `assume_zero_shift`
  (exact when the label's disparity has no offset, i.e. infinitely far things have label 0; an
  assumption about the model, so it is an explicit option) or (b) the distance plus a RightAngle
  between two painted planes such as floor and wall, which costs no second measurement.
- Flatness alone does not help: an affine change of disparity keeps every plane a plane (1/Z stays
  linear in x, y), so a painted floor is flat for every (s, t); its tilt, however, changes with t,
  which is what CameraHeight and RightAngle use.
- Two references are not always enough: distances are nonlinear in the shift, so two distances (or a
  distance and a depth) often have two exact solutions with different depths elsewhere (in the test
  room, about 4 in 10 random pairs of distances). Such sets are refused, not guessed; a RightAngle or a
  CameraHeight settled every pair tried, which makes "one distance + floor/wall right angle" or
  "one distance + camera height" the recommended minimal sets.
- Degenerate sets are refused too (e.g. two known depths at the same label value pin one number),
  as are inconsistent ones (after the best fit a reference is off by more than `tolerance`); each
  message says what to add or check.

The fit: residuals are log(fitted / given) for lengths (so a 10 m and a 1 m reference weigh the
same relative error) and the angle error in radians; for a fixed r the best log s is their mean, so
r is found by a scan over its feasible range (every reference pixel must stay in front of the
camera), then all references are refined jointly with scipy's least_squares. The report gives each
reference's residual in metres (degrees for angles). Depths, unlike distances, heights and angles,
do not depend on the focal length.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import least_squares

from ..errors import StudioError
from ..labels.corrections import robust_plane
from .measure import MeasureError, value_at
from .pointcloud import pixel_rays, rays_at, resolve_focal

KINDS = ("disparity", "metric_depth")


class CalibrationError(StudioError, ValueError):
    """References that cannot calibrate the label; the message says what else is needed."""


# ----------------------------------------------------------------------------- references

@dataclass(frozen=True)
class KnownDepth:
    """Depth in metres at a pixel (x = column, y = row), or the median depth over a bool (H, W) region."""
    metres: float
    point: tuple[float, float] | None = None
    region: np.ndarray | None = field(default=None, repr=False)
    window: int = 0               # points: median over a (2*window+1)^2 neighbourhood


@dataclass(frozen=True)
class KnownDistance:
    """Straight-line 3D distance in metres between the surfaces seen at two pixels (x, y)."""
    a: tuple[float, float]
    b: tuple[float, float]
    metres: float
    window: int = 0


@dataclass(frozen=True)
class CameraHeight:
    """Distance in metres from the camera to the plane fitted to a bool (H, W) floor region."""
    floor: np.ndarray = field(repr=False)
    metres: float


@dataclass(frozen=True)
class RightAngle:
    """Two bool (H, W) regions that are planes meeting at 90 degrees (floor and wall, two walls)."""
    a: np.ndarray = field(repr=False)
    b: np.ndarray = field(repr=False)


Reference = KnownDepth | KnownDistance | CameraHeight | RightAngle
LENGTHS = (KnownDepth, KnownDistance, CameraHeight)


@dataclass
class Calibration:
    depth: np.ndarray         # (H, W) float32 metres; NaN where the label has no value or is beyond the horizon
    kind: str                 # the input label's kind
    scale: float              # disparity: s in 1/Z = s*d + t (1/m per label unit); metric: k in Z = k * prediction
    shift: float              # disparity: t (1/m); metric: 0
    zero_shift_assumed: bool
    references: list[dict]    # per reference: what was given, what the fit gives, the residual
    beyond_horizon: int       # label pixels with s*d + t <= 0: no finite depth, set to NaN
    focal_px: float
    focal_source: str

    @property
    def formula(self) -> str:
        if self.kind == "metric_depth":
            return f"depth = {self.scale:.6g} * prediction"
        return f"depth = 1 / ({self.scale:.6g} * label + {self.shift:.6g})"

    def summary(self) -> dict:
        """Everything but the array, JSON-ready (what a label revision keeps as provenance)."""
        return {"kind": self.kind, "scale": self.scale, "shift": self.shift, "formula": self.formula,
                "zero_shift_assumed": self.zero_shift_assumed, "references": self.references,
                "beyond_horizon": self.beyond_horizon, "focal_px": self.focal_px,
                "focal_source": self.focal_source}


# ----------------------------------------------------------------------------- geometry of one label

@dataclass
class _Constraint:
    ref: Reference
    name: str
    d_min: float                              # smallest label value used: needs d + r > 0
    unit: Callable[[float], float] | None = None     # lengths: the value at s = 1 for shift ratio r
    target: float = 0.0                       # metres
    cosine: Callable[[float], float] | None = None   # angles: cos between the normals for shift ratio r


class _Scene:
    """The label as disparity d (metric predictions: 1 / depth) with its rays."""

    def __init__(self, d: np.ndarray, focal: float, principal):
        self.d, self.focal, self.principal = d, focal, principal
        self.x, self.y = pixel_rays(d.shape, focal, principal)

    def sample(self, point, window: int, what: str) -> float:
        try:
            value = value_at(self.d, point, window)
        except MeasureError as e:
            raise CalibrationError(f"{what}: {e}") from None
        if value is None:
            raise CalibrationError(f"{what}: the label has no value at {tuple(point)}; pick a point on a surface")
        return value

    def region(self, mask, what: str) -> np.ndarray:
        m = np.asarray(mask, dtype=bool)
        if m.shape != self.d.shape:
            raise CalibrationError(f"{what}: the region is {m.shape[:2]}, the label {self.d.shape}; paint it on this image")
        m = m & np.isfinite(self.d)
        if not m.any():
            raise CalibrationError(f"{what}: the region covers no pixel with a label value; paint over the surface")
        return m

    def plane(self, mask, what: str) -> tuple[np.ndarray, float]:
        """Fit d = a x + b y + c over a region -> ((a, b, c), the smallest fitted d over it)."""
        m = self.region(mask, what)
        rows, cols = np.nonzero(m)
        x, y = self.x[cols], self.y[rows]
        if len(rows) < 3 or np.linalg.matrix_rank(np.stack([x, y, np.ones_like(x)], axis=1)) < 3:
            raise CalibrationError(f"{what}: a plane needs a painted area, not a line or {len(rows)} pixel(s); "
                                   "paint more of the surface")
        coef, _ = robust_plane(x, y, self.d[rows, cols])
        return coef, float((coef[0] * x + coef[1] * y + coef[2]).min())


def _compile(ref, scene: _Scene, i: int) -> _Constraint:
    if isinstance(ref, KnownDepth):
        name = f"depth #{i}"
        if (ref.point is None) == (ref.region is None):
            raise CalibrationError(f"{name}: give either a point or a region, not both or neither")
        dv = scene.sample(ref.point, ref.window, name) if ref.point is not None \
            else float(np.median(scene.d[scene.region(ref.region, name)]))
        return _Constraint(ref, name, dv, unit=lambda r: 1.0 / (dv + r), target=_metres(ref.metres, name))
    if isinstance(ref, KnownDistance):
        name = f"distance #{i}"
        da, db = scene.sample(ref.a, ref.window, name), scene.sample(ref.b, ref.window, name)
        ra, rb = rays_at([ref.a, ref.b], scene.d.shape, scene.focal, scene.principal)
        return _Constraint(ref, name, min(da, db), target=_metres(ref.metres, name),
                           unit=lambda r: float(np.linalg.norm(ra / (da + r) - rb / (db + r))))
    if isinstance(ref, CameraHeight):
        name = f"camera height #{i}"
        (a, b, c), low = scene.plane(ref.floor, name)
        return _Constraint(ref, name, low, unit=lambda r: 1.0 / math.hypot(a, b, c + r),
                           target=_metres(ref.metres, name))
    if isinstance(ref, RightAngle):
        name = f"right angle #{i}"
        (a1, b1, c1), low1 = scene.plane(ref.a, name + " (first plane)")
        (a2, b2, c2), low2 = scene.plane(ref.b, name + " (second plane)")

        def cosine(r):
            n1, n2 = np.array([a1, b1, c1 + r]), np.array([a2, b2, c2 + r])
            return float(n1 @ n2 / (np.linalg.norm(n1) * np.linalg.norm(n2)))
        return _Constraint(ref, name, min(low1, low2), cosine=cosine)
    raise CalibrationError(f"reference #{i} is a {type(ref).__name__}; use KnownDepth, KnownDistance, "
                           "CameraHeight or RightAngle")


def _metres(value, name: str) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        v = math.nan
    if not (math.isfinite(v) and v > 0):
        raise CalibrationError(f"{name}: the known length must be a positive number of metres, got {value!r}")
    return v


# ----------------------------------------------------------------------------- the fit

def _residuals(cons: list[_Constraint], log_s: float, r: float) -> np.ndarray:
    out = []
    for c in cons:
        if c.unit is not None:
            out.append(math.log(c.unit(r) / c.target) - log_s)
        else:
            out.append(math.asin(max(-1.0, min(1.0, c.cosine(r)))))
    return np.array(out)


def _best_log_s(cons: list[_Constraint], r: float) -> float:
    return float(np.mean([math.log(c.unit(r) / c.target) for c in cons if c.unit is not None]))


def _polish(cons, r0: float, r_lo: float, span: float) -> np.ndarray:
    fit = least_squares(lambda p: _residuals(cons, p[0], p[1]), [_best_log_s(cons, r0), r0],
                        bounds=([-np.inf, r_lo + 1e-9 * span], [np.inf, np.inf]), x_scale=[1.0, span],
                        xtol=1e-12, ftol=1e-12, gtol=1e-12)
    return fit.x


def _depths_differ(probe: np.ndarray, one, other, tolerance: float) -> bool:
    """Do two (log s, r) solutions put the probe label values at depths more than `tolerance` apart?"""
    inv1, inv2 = np.exp(one[0]) * (probe + one[1]), np.exp(other[0]) * (probe + other[1])
    both = (inv1 > 0) & (inv2 > 0)
    return bool(np.any((inv1 > 0) != (inv2 > 0)) or np.any(np.abs(np.log(inv1[both] / inv2[both])) > tolerance))


def _solve_shift(cons: list[_Constraint], r_lo: float, span: float, tolerance: float,
                 probe: np.ndarray) -> tuple[float, float]:
    """Scan r over its feasible range, polish the best minima, refuse flat or ambiguous optima.

    probe: label values (percentiles of the label) at which two solutions are compared."""
    grid = r_lo + span * np.logspace(-6, 3, 400)
    cost = np.array([np.sum(_residuals(cons, _best_log_s(cons, r), r) ** 2) for r in grid])
    minima = [i for i in range(len(grid)) if cost[i] <= cost[max(i - 1, 0)] and cost[i] <= cost[min(i + 1, len(grid) - 1)]]
    minima = sorted(minima, key=lambda i: cost[i])[:4]
    sols = [_polish(cons, grid[i], r_lo, span) for i in minima]
    sols.sort(key=lambda p: np.sum(_residuals(cons, *p) ** 2))
    log_s, r = sols[0]
    jac = np.array([[-1.0 if c.unit is not None else 0.0,
                     (_residuals([c], 0.0, r + 1e-7 * span)[0] - _residuals([c], 0.0, r - 1e-7 * span)[0]) / 2e-7]
                    for c in cons])                                       # d residual / (d log s, d r / span)
    sv = np.linalg.svd(jac, compute_uv=False)
    consistent = np.abs(_residuals(cons, log_s, r)).max() <= tolerance     # else _report names the culprit
    if consistent and sv[-1] < 1e-6 * sv[0]:
        raise CalibrationError(
            "these references do not fix the shift: they agree with many (scale, shift) pairs (for example two "
            "known depths at the same label value, or two distances between the same depths); add a reference "
            "at a clearly different distance from the camera, a camera height over the floor, or a right angle "
            "between two planes, or choose 'assume zero shift'")
    best = np.sum(_residuals(cons, log_s, r) ** 2)
    for other_log_s, other_r in sols[1:]:
        if np.sum(_residuals(cons, other_log_s, other_r) ** 2) <= max(4 * best, (0.1 * tolerance) ** 2) and \
                _depths_differ(probe, (log_s, r), (other_log_s, other_r), tolerance):
            raise CalibrationError(
                "two different calibrations fit these references equally well (the equations are nonlinear and "
                "have two solutions here); add one more reference, e.g. a known depth at one of the points")
    return log_s, r


def calibrate(label: np.ndarray, kind: str, references: Sequence[Reference], *,
              focal_px: float | None = None, exif_focal_px: float | None = None,
              principal: tuple[float, float] | None = None, assume_zero_shift: bool = False,
              tolerance: float = 0.05, angle_tolerance_deg: float = 5.0) -> Calibration:
    """Turn a (H, W) label into metres using the references; see the module docstring for what fixes what.

    kind "disparity": relative label, scale and shift fitted (shift 0 with `assume_zero_shift`).
    kind "metric_depth": a metric prediction, rescaled by one factor (the references' best agreement).
    tolerance: the largest relative error of a length reference after the fit (0.05 = 5%).
    """
    if kind not in KINDS:
        raise CalibrationError(f"unknown label kind {kind!r}; use one of {', '.join(KINDS)}")
    a = np.asarray(label, dtype=np.float64)
    if a.ndim != 2 or not np.isfinite(a).any():
        raise CalibrationError(f"the label must be a 2-D (H, W) array with values, got shape {a.shape}")
    focal, source = resolve_focal(a.shape[1], a.shape[0], focal_px, exif_focal_px)
    metric = kind == "metric_depth"
    with np.errstate(divide="ignore", invalid="ignore"):
        d = np.where(np.isfinite(a) & (a > 0), 1.0 / a, np.nan) if metric else np.where(np.isfinite(a), a, np.nan)
    scene = _Scene(d, focal, principal)
    cons = [_compile(ref, scene, i + 1) for i, ref in enumerate(references)]
    _check_count(cons, metric or assume_zero_shift)
    r_lo = -min(c.d_min for c in cons)
    if metric or assume_zero_shift:
        if r_lo >= 0:
            worst = min(cons, key=lambda c: c.d_min)
            raise CalibrationError(f"{worst.name}: the label there is {worst.d_min:.4g}, which has no depth when the "
                                   "shift is zero (depth = 1 / (scale * label)); pick a point with a positive label "
                                   "or do not assume zero shift")
        log_s, r = _best_log_s(cons, 0.0), 0.0
    else:
        probe = np.nanpercentile(d, [2, 25, 50, 75, 98])
        span = float(probe[-1] - probe[0]) if probe[-1] > probe[0] else max(abs(float(probe[-1])), 1.0)
        log_s, r = _solve_shift(cons, r_lo, span, tolerance, probe)
    report = _report(cons, log_s, r, tolerance, angle_tolerance_deg)
    s = math.exp(log_s)
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = s * (d + r)                                                   # (H, W) 1 / metres
        depth = np.where(inv > 0, 1.0 / inv, np.nan).astype(np.float32)
    beyond = int(np.sum(np.isfinite(d) & ~(inv > 0)))
    scale, shift = (1.0 / s, 0.0) if metric else (s, s * r)
    return Calibration(depth, kind, scale, shift, assume_zero_shift and not metric, report, beyond, focal, source)


def _check_count(cons: list[_Constraint], scale_only: bool) -> None:
    lengths = sum(c.unit is not None for c in cons)
    if lengths == 0:
        raise CalibrationError("nothing here fixes the scale (right angles do not): add a known depth, a known "
                               "distance between two points, or the camera height over the floor")
    if scale_only or len(cons) >= 2:
        return
    raise CalibrationError(
        "one reference gives one equation, but a relative label has two unknowns (scale and shift): add a second "
        "reference (another known distance or depth, the camera height over the floor, or a right angle between "
        "two painted planes such as floor and wall), or choose 'assume zero shift' (depth = 1 / (scale * label))")


def _report(cons, log_s: float, r: float, tolerance: float, angle_tolerance_deg: float) -> list[dict]:
    rows, worst = [], None
    for c in cons:
        if c.unit is not None:
            fitted = c.unit(r) / math.exp(log_s)
            row = {"reference": c.name, "given_m": c.target, "fitted_m": fitted, "residual_m": fitted - c.target,
                   "residual_pct": 100.0 * (fitted / c.target - 1.0)}
            bad = abs(fitted / c.target - 1.0) > tolerance
        else:
            angle = math.degrees(math.acos(min(1.0, abs(c.cosine(r)))))
            row = {"reference": c.name, "given_deg": 90.0, "fitted_deg": angle, "residual_deg": angle - 90.0}
            bad = abs(angle - 90.0) > angle_tolerance_deg
        row.update(_describe(c.ref))
        rows.append(row)
        if bad and worst is None:
            worst = row
    if worst is not None:
        got = (f"{worst['fitted_m']:.3g} m against the given {worst['given_m']:.3g} m ({worst['residual_pct']:+.1f}%)"
               if "given_m" in worst else f"{worst['fitted_deg']:.1f} degrees instead of 90")
        raise CalibrationError(f"the references disagree: after the best fit {worst['reference']} comes out at {got}; "
                               "check that measurement, the points and the focal length, or leave that reference out")
    return rows


def _describe(ref) -> dict:
    """What a reference was, without arrays (regions as pixel counts)."""
    if isinstance(ref, KnownDepth):
        return {"type": "depth", "point": None if ref.point is None else [float(v) for v in ref.point],
                "region_pixels": None if ref.region is None else int(np.count_nonzero(ref.region))}
    if isinstance(ref, KnownDistance):
        return {"type": "distance", "points": [[float(v) for v in ref.a], [float(v) for v in ref.b]]}
    if isinstance(ref, CameraHeight):
        return {"type": "camera_height", "region_pixels": int(np.count_nonzero(ref.floor))}
    return {"type": "right_angle", "region_pixels": [int(np.count_nonzero(ref.a)), int(np.count_nonzero(ref.b))]}
