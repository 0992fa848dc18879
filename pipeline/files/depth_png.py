"""16-bit PNG depth/disparity files whose float values can be recovered.

Encoding (format version 1): the finite values' range [min, max] is spread over the full
0..65535 range, code = round((value - offset) / scale) with offset = min and
scale = (max - min) / 65535, so `read_depth_png` recovers every value to within scale / 2 =
(max - min) / 65535 / 2. A constant array stores scale 0 and is recovered exactly.

NaN convention: when the array has non-finite values (NaN, +-inf), code 0 means "no value"
and finite values use codes 1..65535 (scale = (max - min) / 65534); such pixels read back as
NaN. Without non-finite values, no code is reserved.

What the file holds: a 16-bit grayscale PNG plus one text chunk, key `depth-anything-studio`,
whose value is JSON: {"format": 1, "offset", "scale", "nodata": 0 | null, "kind", "unit",
"min", "max"}. Any 16-bit PNG reader sees a sensible picture (high values bright).

Third-party 16-bit PNGs (no such chunk) are not silently given units: `read_depth_png` refuses
them, `load_depth_png` returns their raw integer values with `calibrated=False`.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, PngImagePlugin

from ..atomic import atomic_path
from ..errors import ConfigError, ImageError, StudioError

TEXT_KEY = "depth-anything-studio"
FORMAT_VERSION = 1
UNITS = {"disparity": "relative disparity", "metric_depth": "m"}


@dataclass
class DepthPng:
    array: np.ndarray            # (H, W) float32: recovered values, or raw codes when not calibrated
    calibrated: bool             # True: our file, values in the stored units; False: raw integers
    kind: str | None = None      # "disparity" | "metric_depth" | None
    scale: float | None = None
    offset: float | None = None
    bit_depth: int = 16


def _calibration(array) -> tuple[np.ndarray, np.ndarray, dict]:
    """(float64 array, finite mask, {"offset", "scale", "nodata", "min", "max"}) of a (H, W) array."""
    a = np.asarray(array, dtype=np.float64)
    if a.ndim != 2 or a.size == 0:
        raise ConfigError(f"a depth PNG needs a non-empty 2-D (H, W) array, got shape {a.shape}")
    finite = np.isfinite(a)
    has_nodata = not finite.all()
    levels = 65535 - (1 if has_nodata else 0)                             # code 0 kept for "no value"
    lo, hi = (float(a[finite].min()), float(a[finite].max())) if finite.any() else (0.0, 0.0)
    return a, finite, {"offset": lo, "scale": (hi - lo) / levels, "nodata": 0 if has_nodata else None,
                       "min": lo, "max": hi}


def encode(array: np.ndarray) -> tuple[np.ndarray, dict]:
    """(H, W) float -> ((H, W) uint16 codes, {"offset", "scale", "nodata", "min", "max"})."""
    a, finite, meta = _calibration(array)
    first = 0 if meta["nodata"] is None else 1                            # lowest code for a value
    lo, scale, levels = meta["offset"], meta["scale"], 65535 - first
    codes = np.zeros(a.shape, np.uint16)
    if scale > 0:
        codes[finite] = np.clip(np.rint((a[finite] - lo) / scale), 0, levels).astype(np.uint16) + first
    else:
        codes[finite] = first
    return codes, meta


def png_metadata(array: np.ndarray, kind: str | None = None) -> dict:
    """What `write_depth_png(path, array, kind=kind)` records in the file (without encoding it)."""
    _check_kind(kind)
    return _file_metadata(_calibration(array)[2], kind)


def _check_kind(kind: str | None) -> None:
    if kind is not None and kind not in UNITS:
        raise ConfigError(f"unknown prediction kind {kind!r}; use one of {', '.join(UNITS)}")


def _file_metadata(meta: dict, kind: str | None) -> dict:
    return {"format": FORMAT_VERSION, **meta, "kind": kind, "unit": UNITS.get(kind)}


def decode(codes: np.ndarray, offset: float, scale: float, nodata: int | None) -> np.ndarray:
    """(H, W) uint16 codes -> (H, W) float32 values (NaN where code == nodata)."""
    first = 0 if nodata is None else 1
    out = offset + (codes.astype(np.float64) - first) * scale
    if nodata is not None:
        out[codes == nodata] = np.nan
    return out.astype(np.float32)


def write_depth_png(path: str | os.PathLike, array: np.ndarray, *, kind: str | None = None) -> dict:
    """Write `array` as a 16-bit PNG with its scale/offset recorded; returns the stored metadata."""
    _check_kind(kind)
    codes, meta = encode(array)
    meta = _file_metadata(meta, kind)
    info = PngImagePlugin.PngInfo()
    info.add_text(TEXT_KEY, json.dumps(meta))
    path = Path(path)
    try:
        with atomic_path(path) as tmp:
            # mode I;16 -> 16-bit gray; zlib level 1: half the encode time of the default, lossless all the same
            Image.fromarray(codes).save(tmp, format="PNG", pnginfo=info, compress_level=1)
    except OSError as e:
        raise StudioError(f"cannot write {path}: {e.strerror or e}; check the folder exists and is writable") from None
    return {"path": str(path), **meta}


def load_depth_png(path: str | os.PathLike) -> DepthPng:
    """Any 8/16-bit grayscale PNG: ours -> calibrated values; others -> raw codes (calibrated=False)."""
    path = Path(path)
    try:
        with Image.open(path) as im:
            im.load()
            text = im.info.get(TEXT_KEY)
            mode = im.mode
            codes = np.asarray(im)
    except FileNotFoundError:
        raise ImageError(f"{path}: file not found") from None
    except Exception as e:
        raise ImageError(f"{path}: cannot read as a PNG ({e})") from None
    if codes.ndim != 2:
        raise ImageError(f"{path}: a depth PNG must be single-channel grayscale, this one is mode {mode}")
    bit_depth = 8 if codes.dtype == np.uint8 else 16
    if text is None:
        return DepthPng(codes.astype(np.float32), calibrated=False, bit_depth=bit_depth)
    try:
        meta = json.loads(text)
        offset, scale, nodata = float(meta["offset"]), float(meta["scale"]), meta.get("nodata")
    except (ValueError, KeyError, TypeError) as e:
        raise ImageError(f"{path}: its {TEXT_KEY} metadata is damaged ({e})") from None
    if int(meta.get("format", 1)) > FORMAT_VERSION:
        raise ImageError(f"{path}: written by a newer version (format {meta['format']}); update the studio")
    array = decode(codes.astype(np.uint16), offset, scale, None if nodata is None else int(nodata))
    return DepthPng(array, calibrated=True, kind=meta.get("kind"), scale=scale, offset=offset, bit_depth=bit_depth)


def read_depth_png(path: str | os.PathLike) -> np.ndarray:
    """A depth PNG written by `write_depth_png` -> (H, W) float32 values (NaN where none)."""
    loaded = load_depth_png(path)
    if not loaded.calibrated:
        raise ImageError(f"{path}: has no {TEXT_KEY} scale/offset record, so its {loaded.bit_depth}-bit "
                         "values have no known units; use pipeline.files.depth_png.load_depth_png to read the raw values")
    return loaded.array
