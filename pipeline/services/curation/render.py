"""Pictures the Curate tab shows, made from the stored arrays (never from an 8-bit picture of them).

Files (image, colour label, thumbnail, point cloud) are named by the content they show (sha256s),
so each is made once and reused by every page that shows it. The editor's view is made per request:
the label over the image at an opacity, the current selection tinted with its outline, and marks
(point pairs, clicked points) drawn on top, at a display size of at most DISPLAY_MAX_SIDE pixels; a
small image is enlarged by a whole factor (nearest pixel) to at least DISPLAY_MIN_SIDE, so it fills
the view and a click lands on the pixel meant (`scale` maps the view's pixels back to the image's:
image = view / scale).
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

from ... import render
from ...atomic import atomic_path
from ...errors import ConfigError
from ...files.image_io import decode_image
from ...geometry import pointcloud
from ...store import ImageRecord, Label, Revision, Store

THUMB_HEIGHT = 128
DISPLAY_MAX_SIDE = 1600
DISPLAY_MIN_SIDE = 800
IGNORE_TINT = np.array([128, 128, 128], np.float32)     # ignored pixels are shown greyed out
SELECTION_TINT = np.array([255, 0, 255], np.float32)    # the selection: magenta, outlined
GOOD, FLAGGED, PENDING, CALIBRATION = (40, 200, 80), (230, 40, 40), (255, 220, 0), (0, 220, 255)


@dataclass(frozen=True)
class Mark:
    """Points [h, w] drawn on the view (joined by a line when two), with a label beside each."""
    points: list
    colour: tuple[int, int, int]
    labels: tuple[str, ...] = ()
    emphasise: int | None = None          # index of a point drawn larger (a pair's closer point)


@dataclass(frozen=True)
class View:
    picture: np.ndarray                   # (h, w, 3) uint8 at display size
    scale: float                          # display pixels per image pixel (<= 1)
    marks: list[Mark] = field(default_factory=list)


def display_scale(height: int, width: int) -> float:
    side = max(height, width)
    return float(max(1, DISPLAY_MIN_SIDE // side)) if side <= DISPLAY_MIN_SIDE else min(1.0, DISPLAY_MAX_SIDE / side)


class _Lru:
    """A small content-keyed cache (keys name what the value is made from, so it never goes stale)."""

    def __init__(self, size: int):
        self.size, self.items, self.lock = size, OrderedDict(), threading.Lock()

    def get(self, key, make):
        with self.lock:
            if key in self.items:
                self.items.move_to_end(key)
                return self.items[key]
        value = make()
        with self.lock:
            self.items[key] = value
            while len(self.items) > self.size:
                self.items.popitem(last=False)
        return value


class Renderer:
    def __init__(self, store: Store, render_dir: Path, *, cmap: str, max_pixels: int, max_cloud_points: int):
        self.store, self.dir, self.cmap = store, Path(render_dir), cmap
        self.max_pixels, self.max_cloud_points = max_pixels, max_cloud_points
        self.dir.mkdir(parents=True, exist_ok=True)
        self._rgbs, self._labels = _Lru(4), _Lru(4)

    # ---- arrays (cached by content) -------------------------------------------------------
    def rgb(self, rec: ImageRecord) -> np.ndarray:
        """(H, W, 3) uint8, EXIF orientation applied."""
        return self._rgbs.get(rec.sha256, lambda: decode_image(self.store.image_bytes(rec.id), name=rec.name,
                                                               max_pixels=self.max_pixels).rgb)

    def label(self, revision: Revision) -> Label:
        return self._labels.get((revision.depth_sha256, tuple(sorted(revision.masks.items()))),
                                lambda: self.store.load_label(revision))

    def label_rgb(self, label: Label) -> np.ndarray:
        """The colour label (near = warm for both kinds), ignored pixels greyed."""
        rgb = render.colorize(label.depth, self.cmap, kind=label.revision.kind).astype(np.float32)   # (H, W, 3)
        ignore = label.masks.get("ignore")
        if ignore is not None:
            m = np.asarray(ignore, bool)
            rgb[m] = 0.35 * rgb[m] + 0.65 * IGNORE_TINT
        return rgb.astype(np.uint8)

    # ---- files (cached by content) --------------------------------------------------------
    def image_file(self, rec: ImageRecord) -> Path:
        path = self.dir / f"image-{rec.sha256[:24]}.png"
        if not path.exists():
            _save_atomic(Image.fromarray(self.rgb(rec)), path, compress_level=1)
        return path

    def label_file(self, label: Label) -> Path:
        path = self.dir / f"label-{label.revision.depth_sha256[:24]}-{mask_key(label.revision)}-{self.cmap}.png"
        if not path.exists():
            _save_atomic(Image.fromarray(self.label_rgb(label)), path, compress_level=1)
        return path

    def thumbnail(self, rec: ImageRecord) -> Path:
        """image | label at THUMB_HEIGHT (the image alone before it has a label)."""
        head = self.store.head(rec.id) if rec.head_revision_id else None
        key = f"{rec.sha256[:16]}-{head.depth_sha256[:16] if head else 'none'}-{mask_key(head)}"
        path = self.dir / f"thumb-{key}-{self.cmap}.jpg"
        if not path.exists():
            panels = [self.rgb(rec)] + ([self.label_rgb(self.label(head))] if head else [])
            thumbs = [_fit_height(p, THUMB_HEIGHT) for p in panels]
            _save_atomic(Image.fromarray(np.concatenate(thumbs, axis=1)), path, quality=85)
        return path

    def cloud_file(self, rec: ImageRecord, label: Label) -> tuple[Path | None, str]:
        """The label as a coloured point cloud (.ply), strided to at most max_cloud_points."""
        kind = label.revision.kind
        path = self.dir / f"cloud-{rec.sha256[:16]}-{label.revision.depth_sha256[:24]}.ply"
        note = pointcloud.point_cloud_note(kind)
        if path.exists():
            return path, note
        rgb, depth = self.rgb(rec), label.depth                                # (H, W, 3), (H, W)
        focal, _ = pointcloud.resolve_focal(depth.shape[1], depth.shape[0])
        try:
            pcd, _ = pointcloud.strided_cloud(rgb, depth, kind, focal, self.max_cloud_points)
        except ConfigError as e:
            return None, f"No point cloud: {e}"
        pointcloud.write_ply(path, pcd)
        return path, note

    # ---- the editor's view ----------------------------------------------------------------
    def view(self, rgb: np.ndarray, label_rgb: np.ndarray | None, *, opacity: float,
             selection: np.ndarray | None = None, marks: list[Mark] | None = None) -> View:
        """The label over the image at `opacity` (0: the image, 1: the label), the selection tinted
        and outlined, marks on top; at display size."""
        h, w = rgb.shape[:2]
        scale = display_scale(h, w)
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        small = _resize(rgb, size)
        out = small.astype(np.float32)
        if label_rgb is not None and opacity > 0:
            out = (1.0 - opacity) * out + opacity * _resize(label_rgb, size).astype(np.float32)
        if selection is not None and np.any(selection):
            sel = np.asarray(Image.fromarray(np.asarray(selection, np.uint8) * 255).resize(size, Image.NEAREST)) > 0
            out[sel] = 0.55 * out[sel] + 0.45 * SELECTION_TINT
            edge = sel & ~ndimage.binary_erosion(sel, iterations=max(1, round(2 * max(size) / 800)))
            out[edge] = SELECTION_TINT
        picture = Image.fromarray(np.clip(out, 0, 255).astype(np.uint8))
        _draw_marks(picture, marks or [], scale)
        return View(np.asarray(picture), scale, list(marks or []))


def _draw_marks(img: Image.Image, marks: list[Mark], scale: float) -> None:
    d = ImageDraw.Draw(img)
    r = max(3, round(min(img.size) / 80))
    for m in marks:
        xy = [((p[1] + 0.5) * scale, (p[0] + 0.5) * scale) for p in m.points]      # [h, w] -> picture (x, y)
        if len(xy) == 2:
            d.line(xy, fill=m.colour, width=max(1, r // 2))
        for i, (x, y) in enumerate(xy):
            big, dot = r * (2 if m.emphasise == i else 1), max(1, r // 2)
            d.ellipse([x - big, y - big, x + big, y + big], outline=m.colour, width=2)
            d.ellipse([x - dot, y - dot, x + dot, y + dot], fill=m.colour)
            if i < len(m.labels) and m.labels[i]:
                d.text((x + big + 2, y - big), m.labels[i], fill=m.colour)


def mask_key(rev: Revision | None) -> str:
    if rev is None or not rev.masks:
        return "nomask"
    return "".join(rev.masks[n][:6] for n in sorted(rev.masks))


def _resize(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Down: bilinear; up: nearest (each image pixel a block, so a click picks one)."""
    if (rgb.shape[1], rgb.shape[0]) == size:
        return rgb
    up = size[0] > rgb.shape[1]
    return np.asarray(Image.fromarray(rgb).resize(size, Image.NEAREST if up else Image.BILINEAR))


def _fit_height(rgb: np.ndarray, height: int) -> np.ndarray:
    h, w = rgb.shape[:2]
    return _resize(rgb, (max(1, round(w * height / h)), height))


def _save_atomic(img: Image.Image, path: Path, **kwargs) -> None:
    with atomic_path(path) as tmp:
        img.save(tmp, **kwargs)
