"""Ray-cast depth of scenes with known geometry, for calibration, measuring, mesh and normal tests.

Camera axes are opencv (x right, y down, z forward); a pixel's ray is (x, y, 1) as in
pipeline.geometry.pointcloud.pixel_rays, so the ray parameter at a hit IS the depth z.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from pipeline.geometry.pointcloud import pixel_rays


@dataclass
class Room:
    """A floor, a back wall and a box, seen by a camera `height` m above the floor, pitched down."""
    depth: np.ndarray        # (H, W) metres
    points: np.ndarray       # (H, W, 3) opencv camera coordinates, metres
    floor: np.ndarray        # (H, W) bool: pixels that see the floor
    wall: np.ndarray         # (H, W) bool: pixels that see the back wall
    box: np.ndarray          # (H, W) bool: pixels that see the box
    focal: float
    height: float
    principal: tuple[float, float] | None


def room(h: int = 96, w: int = 128, *, focal: float = 110.0, height: float = 1.5, pitch_deg: float = 15.0,
         wall_z: float = 8.0, box=((-0.6, 0.4), (0.0, 0.9), (3.0, 4.0)),
         principal: tuple[float, float] | None = None) -> Room:
    th = math.radians(pitch_deg)
    xs, ys = pixel_rays((h, w), focal, principal)
    x, y = np.meshgrid(xs, ys)                                              # (H, W) each
    # world (X right, Y up, Z forward) along the ray t * (x, y, 1): camera at (0, height, 0)
    dx, dy, dz = x, -(y * math.cos(th) + math.sin(th)), math.cos(th) - y * math.sin(th)
    with np.errstate(divide="ignore", invalid="ignore"):
        t_floor = np.where(dy < 0, height / -dy, np.inf)
        t_wall = np.where(dz > 0, wall_z / dz, np.inf)
        t_box = _slab(np.stack([dx, dy, dz], -1), np.array([0.0, height, 0.0]), box)
    t = np.stack([t_floor, t_wall, t_box])                                  # (3, H, W)
    which = np.argmin(t, axis=0)
    depth = t.min(axis=0)
    pts = np.stack([x * depth, y * depth, depth], -1)
    return Room(depth, pts, which == 0, which == 1, which == 2, focal, height, principal)


def _slab(direction: np.ndarray, origin: np.ndarray, box) -> np.ndarray:
    """Ray parameter of the first hit of the axis-aligned box, inf where missed. direction (H, W, 3)."""
    lo = np.array([b[0] for b in box])
    hi = np.array([b[1] for b in box])
    with np.errstate(divide="ignore", invalid="ignore"):
        t1, t2 = (lo - origin) / direction, (hi - origin) / direction       # (H, W, 3)
    t1 = np.where(np.isnan(t1), -np.inf, t1)
    t2 = np.where(np.isnan(t2), np.inf, t2)
    enter = np.minimum(t1, t2).max(-1)
    leave = np.maximum(t1, t2).min(-1)
    return np.where((enter <= leave) & (enter > 0), enter, np.inf)


def sphere(h: int = 64, w: int = 64, *, focal: float = 60.0, centre=(0.0, 0.0, 5.0), radius: float = 2.0,
           background: float = 20.0):
    """Depth of a sphere in front of a frontal background plane -> (depth, hit mask, centre)."""
    xs, ys = pixel_rays((h, w), focal)
    x, y = np.meshgrid(xs, ys)
    c = np.asarray(centre, dtype=np.float64)
    a = x * x + y * y + 1.0                                                 # |ray|^2
    b = x * c[0] + y * c[1] + c[2]                                          # ray . centre
    disc = b * b - a * (c @ c - radius * radius)
    hit = disc > 0
    with np.errstate(invalid="ignore"):
        t = (b - np.sqrt(np.where(hit, disc, 0.0))) / a
    return np.where(hit, t, background), hit, c
