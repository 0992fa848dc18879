"""Geometry files other tools read: `.exr` depth, a coloured `.glb` mesh, normals as a picture and `.npy`.

- EXR (OpenEXR's own Python bindings): one 32-bit float channel, "Z" for metric depth in metres (the
  name compositors and Blender read as depth) or "disparity" for a relative prediction, which is not
  depth and is not named so. NaN (no value) is kept. A string attribute `depthAnythingStudio` holds
  JSON {"format", "kind", "unit", ...} so `read_exr` gives the values back with their meaning.
- GLB (trimesh): one vertex per pixel (a regular subsample above `max_vertices`), two triangles per
  2x2 block, dropped where a vertex has no depth or the triangle spans a depth edge: its largest depth
  over its smallest exceeds `max_depth_ratio` (default 1.05: a 5% step between neighbouring samples; a
  floor seen at a grazing angle keeps its triangles until its row-to-row step reaches that). Axes are
  pointcloud.VIEWER_AXES (y up, camera looking down -z), so it stands upright in gr.Model3D. Vertex
  colours (COLOR_0) are the image's sRGB converted to linear, as glTF requires (8-bit, so the darkest
  shades share codes), under a matte double-sided material (glTF's default one is fully metallic). Metric depth is in metres; a relative prediction becomes pointcloud's pseudo-depth
  (zero shift, median depth 1, far tail clipped) and the mesh's `extras.note` says so.
- Normals: see pipeline.geometry.normals; the picture is an OpenGL normal map, the `.npy` float32 (H, W, 3) unit
  normals in opengl axes (x right, y up, z toward the viewer), NaN where none.
All files are written atomically (a temporary file, then a rename).
"""
from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import OpenEXR
import trimesh
from PIL import Image
from trimesh.visual import TextureVisuals
from trimesh.visual.material import PBRMaterial

from ..atomic import atomic_path
from ..errors import ConfigError, ImageError, StudioError
from ..geometry.normals import normals_from_depth, normals_note, normals_picture
from ..geometry.pointcloud import (
    AXES,
    VIEWER_AXES,
    cloud_stride,
    depth_for_point_cloud,
    pixel_rays,
    point_cloud_note,
    resolve_focal,
)
from .depth_png import UNITS

EXR_ATTRIBUTE = "depthAnythingStudio"
EXR_FORMAT = 1
EXR_CHANNELS = {"metric_depth": "Z", "disparity": "disparity"}
DEFAULT_DEPTH_RATIO = 1.05
DEFAULT_MAX_VERTICES = 400_000


def _atomic(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    path = Path(path)
    try:
        with atomic_path(path) as tmp:
            write(tmp)
    except (OSError, RuntimeError) as e:                                    # OpenEXR raises RuntimeError
        reason = getattr(e, "strerror", None) or e
        raise StudioError(f"cannot write {path}: {reason}; check the folder exists and is writable") from None
    return path


def _kind(kind: str) -> str:
    if kind not in UNITS:
        raise ConfigError(f"unknown prediction kind {kind!r}; use one of {', '.join(UNITS)}")
    return kind


# ----------------------------------------------------------------------------- EXR

@dataclass
class ExrDepth:
    array: np.ndarray                 # (H, W) float32
    kind: str | None                  # "metric_depth" | "disparity" | None (a third-party file)
    meta: dict = field(default_factory=dict)


def write_exr(path: str | os.PathLike, array: np.ndarray, kind: str, *, meta: dict | None = None) -> Path:
    """(H, W) prediction -> single-channel float32 EXR (ZIP compressed); `meta` is kept in the header."""
    a = np.ascontiguousarray(array, dtype=np.float32)
    if a.ndim != 2 or a.size == 0:
        raise ConfigError(f"an EXR depth map needs a non-empty 2-D (H, W) array, got shape {a.shape}")
    info = {"format": EXR_FORMAT, "kind": _kind(kind), "unit": UNITS[kind], **(meta or {})}
    header = {"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage,
              EXR_ATTRIBUTE: json.dumps(info)}

    def write(tmp: Path) -> None:
        with OpenEXR.File(header, {EXR_CHANNELS[kind]: a}) as f:
            f.write(str(tmp))
    return _atomic(path, write)


def read_exr(path: str | os.PathLike) -> ExrDepth:
    """Our EXR -> values with their kind; a third-party one -> its "Z" / "depth" / only channel, kind None."""
    path = Path(path)
    if not path.is_file():
        raise ImageError(f"{path}: file not found")
    try:
        with OpenEXR.File(str(path)) as f:
            # copies: the bindings empty the header dict when the file closes
            header = dict(f.header())
            channels = {k: np.array(v.pixels) for k, v in f.channels().items()}
    except Exception as e:
        raise ImageError(f"{path}: cannot read as an OpenEXR file ({e})") from None
    try:
        info = json.loads(header[EXR_ATTRIBUTE]) if EXR_ATTRIBUTE in header else {}
    except (TypeError, ValueError) as e:
        raise ImageError(f"{path}: its {EXR_ATTRIBUTE} attribute is damaged ({e})") from None
    if int(info.get("format", EXR_FORMAT)) > EXR_FORMAT:
        raise ImageError(f"{path}: written by a newer version (format {info['format']}); update the studio")
    kind = info.get("kind")
    for name in ([EXR_CHANNELS[kind]] if kind in EXR_CHANNELS else []) + ["Z", "depth", "Y"]:
        if name in channels:
            break
    else:
        if len(channels) != 1:
            raise ImageError(f"{path}: no depth channel (Z or depth) among {', '.join(sorted(channels))}")
        name = next(iter(channels))
    a = channels[name]
    if a.ndim != 2:
        raise ImageError(f"{path}: channel {name} is not a single-channel image (shape {a.shape})")
    return ExrDepth(a.astype(np.float32), kind if kind in UNITS else None, info)


# ----------------------------------------------------------------------------- mesh

def srgb_to_linear(rgb: np.ndarray) -> np.ndarray:
    """uint8 sRGB -> float64 linear in [0, 1] (the IEC 61966-2-1 transfer function)."""
    c = np.asarray(rgb, dtype=np.float64) / 255.0
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


def _grid_faces(h: int, w: int) -> np.ndarray:
    """(2 (h-1)(w-1), 3) triangles of a row-major h x w vertex grid, counter-clockwise seen from the camera
    in viewer axes (top-left, bottom-left, top-right) and (top-right, bottom-left, bottom-right)."""
    idx = np.arange(h * w).reshape(h, w)
    tl, tr, bl, br = idx[:-1, :-1], idx[:-1, 1:], idx[1:, :-1], idx[1:, 1:]
    return np.concatenate([np.stack([tl, bl, tr], -1).reshape(-1, 3), np.stack([tr, bl, br], -1).reshape(-1, 3)])


def depth_mesh(rgb: np.ndarray, array: np.ndarray, kind: str, *, focal_px: float | None = None,
               principal: tuple[float, float] | None = None, max_depth_ratio: float = DEFAULT_DEPTH_RATIO,
               max_vertices: int | None = DEFAULT_MAX_VERTICES) -> trimesh.Trimesh:
    """Coloured triangle mesh of a (H, W) prediction and its (H, W, 3) uint8 image, without edge-spanning triangles."""
    rgb = np.asarray(rgb)
    h, w = np.shape(array)[:2]
    if rgb.shape != (h, w, 3) or rgb.dtype != np.uint8:
        raise ConfigError(f"the image ({rgb.shape} {rgb.dtype}) must be uint8 (H, W, 3) matching the "
                          f"prediction ({h}, {w})")
    if not (math.isfinite(max_depth_ratio) and max_depth_ratio > 1.0):
        raise ConfigError(f"the depth-edge ratio must be a number above 1 (e.g. 1.05), got {max_depth_ratio}")
    focal, _ = resolve_focal(w, h, focal_px)
    step = cloud_stride(h, w, max_vertices) if max_vertices else 1
    depth = depth_for_point_cloud(array, _kind(kind)).astype(np.float64)[::step, ::step]   # (h', w')
    x, y = pixel_rays((h, w), focal, principal)
    sx, sy, sz = AXES[VIEWER_AXES]
    verts = np.stack([depth * (sx * x[::step])[None, :], depth * (sy * y[::step])[:, None], depth * sz], -1)
    gh, gw = depth.shape
    faces = _grid_faces(gh, gw)
    z = depth.reshape(-1)[faces]                                            # (F, 3)
    with np.errstate(invalid="ignore", divide="ignore"):
        keep = np.isfinite(z).all(1) & (z.max(1) <= max_depth_ratio * z.min(1))
    faces = faces[keep]
    used = np.unique(faces)
    remap = np.full(gh * gw, -1, np.int64)
    remap[used] = np.arange(len(used))
    colours = np.rint(srgb_to_linear(rgb[::step, ::step].reshape(-1, 3)[used]) * 255.0).astype(np.uint8)
    mesh = trimesh.Trimesh(vertices=verts.reshape(-1, 3)[used], faces=remap[faces], process=False)
    # a matte material: without one, glTF's default is fully metallic and viewers draw it nearly black
    mesh.visual = TextureVisuals(material=PBRMaterial(name="photo", baseColorFactor=[255, 255, 255, 255],
                                                      metallicFactor=0.0, roughnessFactor=1.0, doubleSided=True))
    mesh.visual.vertex_attributes["color"] = np.concatenate([colours, np.full((len(used), 1), 255, np.uint8)], 1)
    mesh.metadata.update({"kind": kind, "unit": "m" if kind == "metric_depth" else "pseudo-depth (median 1)",
                          "note": point_cloud_note(kind), "max_depth_ratio": max_depth_ratio, "step": step,
                          "axes": VIEWER_AXES})
    return mesh


def write_glb(path: str | os.PathLike, mesh: trimesh.Trimesh) -> Path:
    """Binary glTF of the mesh (its metadata in the mesh's `extras`)."""
    if len(mesh.faces) == 0:
        raise StudioError("the mesh has no triangles (no depth, or every neighbour pair spans a depth edge); "
                          "raise the depth-edge ratio")
    data = mesh.export(file_type="glb")
    return _atomic(path, lambda tmp: tmp.write_bytes(data))


# ----------------------------------------------------------------------------- normals

def write_normals(png_path: str | os.PathLike, npy_path: str | os.PathLike, array: np.ndarray, kind: str, *,
                  focal_px: float | None = None, principal: tuple[float, float] | None = None) -> dict:
    """Normals of a prediction -> an OpenGL normal-map PNG and an (H, W, 3) float32 `.npy` (opengl axes)."""
    h, w = np.shape(array)[:2]
    focal, source = resolve_focal(w, h, focal_px)
    normals = normals_from_depth(depth_for_point_cloud(array, _kind(kind)), focal, axes="opengl",
                                 principal=principal)                     # (H, W, 3)
    png = _atomic(png_path, lambda tmp: Image.fromarray(normals_picture(normals)).save(tmp, format="PNG"))

    def save_npy(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.save(f, normals)
    npy = _atomic(npy_path, save_npy)
    return {"png": str(png), "npy": str(npy), "axes": "opengl", "focal_px": focal, "focal_source": source,
            "note": normals_note(kind)}
