"""Point clouds from a prediction: intrinsics, back-projection, downsampling, binary `.ply`.

Camera model: pinhole with square pixels, principal point at the image centre unless given
(cx, cy in continuous pixel coordinates, where the image spans [0, W] x [0, H]), pixel (u, v)
sampled at its centre (u + 0.5, v + 0.5). `pixel_rays` / `rays_at` are the one place that
turns pixels into viewing rays; calibration, measuring, meshes and normals all use them. Focal length priority: a given focal (pixels) >
the EXIF focal of the image > a field-of-view default (60 degrees across the longer side).

Axes: "opencv" (default, as the official depth_to_pointcloud script): x right, y down,
z forward (away from the camera). "opengl": x right, y up, z toward the viewer (points
at negative z), which puts the cloud upright in three.js / glTF viewers.

Metric depth is used as metres. Relative disparity is NOT depth; see `DISPARITY_NOTE` for
the assumption used to turn it into a pseudo-depth (shown to users by the studio).
"""
from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import open3d as o3d

from ..atomic import atomic_path
from ..errors import ConfigError, StudioError

DEFAULT_FOV_DEG = 60.0
DEFAULT_FAR_PERCENTILE = 98.0
AXES = {"opencv": (1.0, 1.0, 1.0), "opengl": (1.0, -1.0, -1.0)}   # sign of (x, y, z)
VIEWER_AXES = "opengl"      # y up, camera looking down -z: upright in gr.Model3D and most 3D viewers
METRIC_NOTE = "Metric depth: coordinates are metres from the camera."
DISPARITY_NOTE = (
    "Relative model: the prediction is disparity known only up to scale and shift. The cloud assumes "
    "zero shift (depth = 1 / disparity), is scaled so the median depth is 1 (units are arbitrary), and "
    "puts everything beyond the {pct:g}th percentile of depth (sky, zero disparity) on that far limit. "
    "Shapes are plausible, absolute distances and depth ratios are not; use a metric model for metres.")


def focal_from_fov(width: int, height: int, fov_deg: float = DEFAULT_FOV_DEG) -> float:
    """Focal length in pixels for a field of view of `fov_deg` degrees across the longer side."""
    if not 0.0 < fov_deg < 180.0:
        raise ConfigError(f"field of view must be between 0 and 180 degrees, got {fov_deg}")
    return 0.5 * max(width, height) / math.tan(math.radians(fov_deg) / 2.0)


def resolve_focal(width: int, height: int, focal_px: float | None = None, exif_focal_px: float | None = None,
                  fov_deg: float = DEFAULT_FOV_DEG) -> tuple[float, str]:
    """(focal in pixels, where it came from): given > EXIF > field-of-view default."""
    if focal_px is not None:
        if not (math.isfinite(focal_px) and focal_px > 0):
            raise ConfigError(f"focal length must be a positive number of pixels, got {focal_px}")
        return float(focal_px), "given"
    if exif_focal_px:
        return float(exif_focal_px), "exif"
    return focal_from_fov(width, height, fov_deg), f"{fov_deg:g} degree field of view"


def point_cloud_note(kind: str, far_percentile: float = DEFAULT_FAR_PERCENTILE) -> str:
    """The sentence a UI shows next to a cloud made from a prediction of this kind."""
    return METRIC_NOTE if kind == "metric_depth" else DISPARITY_NOTE.format(pct=far_percentile)


def point_mask(array: np.ndarray, kind: str) -> np.ndarray:
    """(H, W) bool: the pixels that become points (where depth_for_point_cloud is finite): finite positive
    metres; any finite disparity (zero or negative ones are put at the far plane). ConfigError for an
    unknown kind, or a disparity with no positive value (no depth scale to show)."""
    a = np.asarray(array, dtype=np.float32)
    finite = np.isfinite(a)
    if kind == "metric_depth":
        return finite & (a > 0)
    if kind != "disparity":
        raise ConfigError(f"unknown prediction kind {kind!r}; use disparity or metric_depth")
    if not (finite & (a > 0)).any():
        raise ConfigError("the prediction has no positive disparity, so there is no depth to show")
    return finite


def depth_for_point_cloud(array: np.ndarray, kind: str,
                          far_percentile: float = DEFAULT_FAR_PERCENTILE) -> np.ndarray:
    """(H, W) prediction -> (H, W) float32 depth (metres, or pseudo-depth); NaN where unusable (point_mask)."""
    a = np.asarray(array, dtype=np.float32)
    finite = point_mask(a, kind)
    if kind == "metric_depth":
        return np.where(finite, a, np.nan).astype(np.float32)
    positive = finite & (a > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.reciprocal(a, where=positive, out=np.full(a.shape, np.inf, np.float32))  # (H, W)
    median, far = np.percentile(z[positive], [50.0, far_percentile])
    np.minimum(z, far, out=z)                                                # sky / zero disparity -> far
    z /= np.float32(median)                                                  # median depth 1
    z[~finite] = np.nan
    return z


def fov_from_focal(width: int, height: int, focal_px: float) -> float:
    """Field of view in degrees across the longer side for a focal length in pixels (inverse of focal_from_fov)."""
    if not (math.isfinite(focal_px) and focal_px > 0):
        raise ConfigError(f"focal length must be a positive number of pixels, got {focal_px}")
    return math.degrees(2.0 * math.atan(0.5 * max(width, height) / focal_px))


def _principal(h: int, w: int, principal: tuple[float, float] | None) -> tuple[float, float]:
    if principal is None:
        return w / 2.0, h / 2.0
    cx, cy = (float(c) for c in principal)
    if not (math.isfinite(cx) and math.isfinite(cy)):
        raise ConfigError(f"the principal point must be two finite pixel coordinates, got {principal}")
    return cx, cy


def pixel_rays(shape: tuple[int, int], focal_px: float,
               principal: tuple[float, float] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Normalised coordinates of the pixel centres: x (W,) = (u + 0.5 - cx) / f, y (H,) = (v + 0.5 - cy) / f.

    The viewing ray of pixel (u, v) is (x[u], y[v], 1) in opencv axes; a point at depth z is z times it.
    """
    h, w = shape[:2]
    cx, cy = _principal(h, w, principal)
    x = (np.arange(w, dtype=np.float64) + 0.5 - cx) / focal_px                # (W,)
    y = (np.arange(h, dtype=np.float64) + 0.5 - cy) / focal_px                # (H,)
    return x, y


def rays_at(points_xy, shape: tuple[int, int], focal_px: float,
            principal: tuple[float, float] | None = None) -> np.ndarray:
    """(N, 2) pixel positions (x = column, y = row; integers are pixel indices) -> (N, 3) opencv rays (x, y, 1)."""
    h, w = shape[:2]
    cx, cy = _principal(h, w, principal)
    p = np.asarray(points_xy, dtype=np.float64).reshape(-1, 2)
    return np.stack([(p[:, 0] + 0.5 - cx) / focal_px, (p[:, 1] + 0.5 - cy) / focal_px, np.ones(len(p))], axis=1)


def backproject(depth: np.ndarray, focal_px: float, axes: str = "opencv",
                principal: tuple[float, float] | None = None) -> np.ndarray:
    """(H, W) depth -> (H, W, 3) float32 points; pinhole, principal point at the centre unless given."""
    if axes not in AXES:
        raise ConfigError(f"unknown axes {axes!r}; use one of {', '.join(AXES)}")
    h, w = depth.shape
    sx, sy, sz = AXES[axes]
    x, y = pixel_rays((h, w), focal_px, principal)
    u, v = x.astype(np.float32), y.astype(np.float32)                        # (W,), (H,)
    pts = np.empty((h, w, 3), np.float32)
    pts[..., 0] = depth * (sx * u)[None, :]
    pts[..., 1] = depth * (sy * v)[:, None]
    pts[..., 2] = depth * sz
    return pts


def make_point_cloud(rgb: np.ndarray, array: np.ndarray, kind: str, *, focal_px: float | None = None,
                     voxel_size: float | None = None, remove_outliers: bool = False,
                     max_points: int | None = None, axes: str = "opencv",
                     far_percentile: float = DEFAULT_FAR_PERCENTILE,
                     principal: tuple[float, float] | None = None) -> o3d.geometry.PointCloud:
    """Coloured open3d cloud of a (H, W) prediction and its (H, W, 3) uint8 image.

    focal_px None -> the 60 degree default (pass the EXIF focal via `resolve_focal` first).
    voxel_size is in the cloud's units (metres, or pseudo-depth units where median depth = 1).
    max_points caps the output with a fixed-seed random subset (deterministic).
    """
    rgb = np.asarray(rgb)
    h, w = np.shape(array)[:2]
    if rgb.shape != (h, w, 3) or rgb.dtype != np.uint8:
        raise ConfigError(f"the image ({rgb.shape} {rgb.dtype}) must be uint8 (H, W, 3) matching the "
                          f"prediction ({h}, {w})")
    focal, _ = resolve_focal(w, h, focal_px)
    depth = depth_for_point_cloud(array, kind, far_percentile)              # (H, W)
    pts = backproject(depth, focal, axes, principal).reshape(-1, 3)          # (H*W, 3)
    colors = rgb.reshape(-1, 3)                                              # (H*W, 3)
    valid = np.isfinite(depth).reshape(-1)
    if not valid.all():
        pts, colors = pts[valid], colors[valid]
    if max_points is not None and not voxel_size and len(pts) > max_points:
        keep = _subset(len(pts), max_points)
        pts, colors = pts[keep], colors[keep]
    pcd = o3d.geometry.PointCloud()
    pcd.points = o3d.utility.Vector3dVector(pts.astype(np.float64))
    pcd.colors = o3d.utility.Vector3dVector(colors.astype(np.float64) / 255.0)
    if voxel_size:
        if not voxel_size > 0:
            raise ConfigError(f"voxel size must be positive, got {voxel_size}")
        pcd = pcd.voxel_down_sample(float(voxel_size))
    if remove_outliers and len(pcd.points) > 20:
        pcd, _ = pcd.remove_statistical_outlier(nb_neighbors=20, std_ratio=2.0)
    if max_points is not None and len(pcd.points) > max_points:
        pcd = pcd.select_by_index(_subset(len(pcd.points), max_points).tolist())
    return pcd


# ----------------------------------------------------------------------------- strided clouds

def cloud_stride(height: int, width: int, max_points: int) -> int:
    """The pixel step that keeps a cloud (or mesh) of every step-th pixel under `max_points` points."""
    return max(1, math.ceil(math.sqrt(height * width / max(int(max_points), 1))))


def strided_principal(width: int, height: int, step: int) -> tuple[float, float]:
    """Principal point of the every-`step`-th-pixel grid of a (width, height) image with a centred camera."""
    return ((width / 2.0 - 0.5) / step + 0.5, (height / 2.0 - 0.5) / step + 0.5)


def strided_cloud(rgb: np.ndarray, array: np.ndarray, kind: str, focal_px: float, max_points: int, *,
                  voxel_size: float | None = None, remove_outliers: bool = False,
                  axes: str = VIEWER_AXES) -> tuple[o3d.geometry.PointCloud, int]:
    """(cloud of every step-th pixel, step): the points of the full image's cloud at those pixels (the same
    depth scale, focal / step and the strided principal point), at most about `max_points` of them."""
    h, w = np.shape(array)[:2]
    step = cloud_stride(h, w, max_points)
    depth = depth_for_point_cloud(array, kind)[::step, ::step]               # (h', w') metres or pseudo-depth
    pcd = make_point_cloud(np.ascontiguousarray(np.asarray(rgb)[::step, ::step]), depth, "metric_depth",
                           focal_px=focal_px / step, voxel_size=voxel_size or None,
                           remove_outliers=bool(remove_outliers), axes=axes,
                           principal=strided_principal(w, h, step))
    return pcd, step


def _subset(n: int, k: int) -> np.ndarray:
    return np.sort(np.random.default_rng(0).choice(n, size=k, replace=False))


def write_ply(path: str | os.PathLike, pcd: o3d.geometry.PointCloud) -> Path:
    """Binary little-endian .ply (float32 x y z [nx ny nz], uchar red green blue) -> its path.

    Written with numpy from zero-copy views of the cloud (open3d's writer is ~10x slower);
    open3d, MeshLab, CloudCompare and three.js's PLYLoader read it.
    """
    path = Path(path)
    points = np.asarray(pcd.points)                                          # (N, 3) view
    fields = [("x", "<f4"), ("y", "<f4"), ("z", "<f4")]
    columns = {"x": points[:, 0], "y": points[:, 1], "z": points[:, 2]}
    if pcd.has_normals():
        normals = np.asarray(pcd.normals)
        fields += [("nx", "<f4"), ("ny", "<f4"), ("nz", "<f4")]
        columns.update(nx=normals[:, 0], ny=normals[:, 1], nz=normals[:, 2])
    if pcd.has_colors():
        rgb = np.clip(np.rint(np.asarray(pcd.colors) * 255.0), 0, 255).astype(np.uint8)
        fields += [("red", "u1"), ("green", "u1"), ("blue", "u1")]
        columns.update(red=rgb[:, 0], green=rgb[:, 1], blue=rgb[:, 2])
    table = np.empty(len(points), dtype=np.dtype(fields))                    # packed records
    for name, column in columns.items():
        table[name] = column
    kinds = {"<f4": "float", "u1": "uchar"}
    header = "".join(["ply\nformat binary_little_endian 1.0\ncomment Depth Anything Studio\n",
                      f"element vertex {len(points)}\n",
                      *(f"property {kinds[t]} {n}\n" for n, t in fields), "end_header\n"])
    try:
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            f.write(header.encode("ascii"))
            table.tofile(f)
    except OSError as e:
        raise StudioError(f"cannot write {path}: {e.strerror or e}; check the folder exists and is writable") from None
    return path
