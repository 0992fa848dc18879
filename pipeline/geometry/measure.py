"""Measuring on a depth map: the depth under a pixel, the 3D distance between two pixels, the field of view.

Pure functions (no I/O, no UI). Pixels are (x = column, y = row), integers being pixel indices; the
camera model and rays are pipeline.geometry.pointcloud's (pinhole, principal point at the centre unless given).
Only metric depth (metres) can be measured: a relative label is disparity up to scale and shift, so
its distances are unknown until calibrated (pipeline.geometry.calibration) - `require_metric` says so.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..errors import StudioError
from .pointcloud import focal_from_fov, fov_from_focal, rays_at

__all__ = ["MeasureError", "Measurement", "depth_at", "distance_between", "field_of_view", "focal_from_fov",
           "fov_from_focal", "point_at", "require_metric", "value_at"]

RELATIVE_REASON = (
    "This is a relative model: its output is disparity known only up to scale and shift, so it has no metres "
    "to measure. Use a metric model, or calibrate the label with a known distance first.")


class MeasureError(StudioError, ValueError):
    """A measurement that cannot be made (relative prediction, a pixel without depth, outside the image)."""


@dataclass(frozen=True)
class Measurement:
    distance_m: float
    a: np.ndarray            # (3,) opencv camera coordinates of the first point, metres
    b: np.ndarray            # (3,) the second point
    depth_a_m: float
    depth_b_m: float


def require_metric(kind: str) -> None:
    """Raise MeasureError with the reason when a prediction of this kind has no metres."""
    if kind != "metric_depth":
        raise MeasureError(RELATIVE_REASON)


def _pixel(depth: np.ndarray, point) -> tuple[int, int]:
    h, w = np.shape(depth)[:2]
    try:
        x, y = (int(round(float(c))) for c in point)
    except (TypeError, ValueError):
        raise MeasureError(f"a point is two numbers (x = column, y = row), got {point!r}") from None
    if not (0 <= x < w and 0 <= y < h):
        raise MeasureError(f"point ({x}, {y}) is outside the {w}x{h} image")
    return x, y


def value_at(array: np.ndarray, point, window: int = 0, *, positive: bool = False) -> float | None:
    """Median of the finite values (positive ones if asked) in a (2*window+1)^2 neighbourhood of a pixel; None if none."""
    x, y = _pixel(array, point)
    k = max(int(window), 0)
    patch = np.asarray(array, dtype=np.float64)[max(y - k, 0):y + k + 1, max(x - k, 0):x + k + 1]
    patch = patch[np.isfinite(patch) & (patch > 0)] if positive else patch[np.isfinite(patch)]
    return float(np.median(patch)) if patch.size else None


def depth_at(depth: np.ndarray, point, window: int = 0) -> float | None:
    """Depth under a pixel (median over a (2*window+1)^2 neighbourhood); None where there is none."""
    return value_at(depth, point, window, positive=True)


def point_at(depth: np.ndarray, point, focal_px: float, principal: tuple[float, float] | None = None,
             window: int = 0) -> np.ndarray:
    """(3,) opencv camera coordinates in metres of the surface seen at a pixel."""
    z = depth_at(depth, point, window)
    if z is None:
        x, y = _pixel(depth, point)
        raise MeasureError(f"there is no depth at ({x}, {y}); pick a point on a surface")
    return z * rays_at([point], np.shape(depth), focal_px, principal)[0]


def distance_between(depth: np.ndarray, a, b, focal_px: float, principal: tuple[float, float] | None = None,
                     *, kind: str = "metric_depth", window: int = 0) -> Measurement:
    """Straight-line distance in metres between the surfaces seen at pixels a and b."""
    require_metric(kind)
    pa, pb = (point_at(depth, p, focal_px, principal, window) for p in (a, b))
    return Measurement(float(np.linalg.norm(pa - pb)), pa, pb, float(pa[2]), float(pb[2]))


def field_of_view(width: int, height: int, focal_px: float) -> dict:
    """Horizontal, vertical, diagonal fields of view in degrees (centred principal point) for a focal in pixels."""
    if not (math.isfinite(focal_px) and focal_px > 0):
        raise MeasureError(f"focal length must be a positive number of pixels, got {focal_px}")

    def across(n: float) -> float:
        return math.degrees(2.0 * math.atan(0.5 * n / focal_px))
    return {"horizontal_deg": across(width), "vertical_deg": across(height),
            "diagonal_deg": across(math.hypot(width, height)), "longer_side_deg": fov_from_focal(width, height, focal_px),
            "focal_px": float(focal_px)}
