"""Surface normals from a depth map, and their picture. Pure numpy, no I/O.

Each pixel is back-projected with pipeline.geometry.pointcloud (pinhole, principal point at the centre unless
given); the normal is the cross product of the horizontal and vertical tangents: central differences where
the surface is smooth (the depth steps to both neighbours within a factor 2), otherwise the one side
whose depth is closer, so a pixel next to a depth edge uses the surface it belongs to, not the jump. Normals are unit vectors facing the camera, NaN where the
pixel has no depth or no neighbour with one.

Axes: "opencv" (x right, y down, z forward: a wall facing the camera has normal (0, 0, -1)) or
"opengl" (x right, y up, z toward the viewer: the same wall has (0, 0, 1)). The picture is the usual
OpenGL normal map: RGB = (n + 1) / 2 in opengl axes, so a wall facing the camera is (128, 128, 255)
lavender, a floor (normal up) is green-ish; pixels without a normal are black.

For relative predictions the depth is pipeline.geometry.pointcloud's pseudo-depth (zero shift assumed): an
unknown shift in disparity tilts planes, so such normals show shape qualitatively, not true angles.
"""
from __future__ import annotations

import numpy as np

from ..errors import ConfigError
from .pointcloud import AXES, backproject, point_cloud_note

RELATIVE_NORMALS_NOTE = (" Normals of this pseudo-depth show shape only: the unknown shift in disparity tilts "
                         "surfaces, so angles between them are not true angles.")


def _tangent(p: np.ndarray, axis: int) -> np.ndarray:
    """(H, W, 3) points -> (H, W, 3) tangents along image axis 0 (down) or 1 (right), edge-aware."""
    diff = np.diff(p, axis=axis)                                          # (H-1, W, 3) or (H, W-1, 3)
    nan_row = np.full_like(np.take(diff, [0], axis=axis), np.nan)
    forward = np.concatenate([diff, nan_row], axis=axis)                  # p[i+1] - p[i]
    backward = np.concatenate([nan_row, diff], axis=axis)                 # p[i] - p[i-1]
    jump_f = np.abs(forward[..., 2])
    jump_b = np.abs(backward[..., 2])
    jump_f = np.where(np.isnan(jump_f), np.inf, jump_f)
    jump_b = np.where(np.isnan(jump_b), np.inf, jump_b)
    central = 0.5 * (forward + backward)
    smooth = np.maximum(jump_f, jump_b) <= 2.0 * np.minimum(jump_f, jump_b) + 1e-9 * np.abs(p[..., 2])
    one_sided = np.where((jump_f <= jump_b)[..., None], forward, backward)
    return np.where(smooth[..., None], central, one_sided)


def normals_from_depth(depth: np.ndarray, focal_px: float, *, axes: str = "opencv",
                       principal: tuple[float, float] | None = None) -> np.ndarray:
    """(H, W) depth (NaN / <= 0: none) -> (H, W, 3) float32 unit normals facing the camera, in `axes`."""
    if axes not in AXES:
        raise ConfigError(f"unknown axes {axes!r}; use one of {', '.join(AXES)}")
    z = np.asarray(depth, dtype=np.float64)
    if z.ndim != 2 or min(z.shape) < 2:
        raise ConfigError(f"normals need a 2-D depth map of at least 2x2 pixels, got shape {z.shape}")
    z = np.where(np.isfinite(z) & (z > 0), z, np.nan)
    p = backproject(z, focal_px, "opencv", principal).astype(np.float64)   # (H, W, 3)
    n = np.cross(_tangent(p, 0), _tangent(p, 1))                          # down x right: faces the camera (-z)
    length = np.linalg.norm(n, axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        n = np.where(length > 0, n / length, np.nan)
    n[np.isnan(z)] = np.nan
    return (n * np.array(AXES[axes])).astype(np.float32)


def normals_note(kind: str) -> str:
    """The sentence a UI shows next to normals computed from a prediction of this kind."""
    return point_cloud_note(kind) + ("" if kind == "metric_depth" else RELATIVE_NORMALS_NOTE)


def normals_picture(normals_opengl: np.ndarray) -> np.ndarray:
    """(H, W, 3) opengl-axes unit normals -> (H, W, 3) uint8 normal map; no normal -> black."""
    n = np.asarray(normals_opengl, dtype=np.float64)
    ok = np.isfinite(n).all(axis=-1)
    rgb = np.clip(np.rint((np.nan_to_num(n) + 1.0) * 127.5), 0, 255).astype(np.uint8)
    rgb[~ok] = 0
    return rgb
