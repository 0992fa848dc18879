"""Pictures of a prediction, always made from the float array (never from an 8-bit copy).

Direction (`colour_position`, the one owner of the rule; every picture, colour bar and export
asks it): near is at the END of the colour map for both kinds. Disparity (near = high) maps
its lowest value to the start and its highest to the end, so the default `Spectral_r` shows
NEAR in red and far in blue, like the official Depth Anything demo; metric depth (near = small
metres) is drawn the other way round so near stays red. In `grayscale`, near is bright.

Non-finite values (NaN, +-inf) are ignored when finding the range and drawn black (0).
A constant array maps to the start of the colour map (0 in grayscale).
"""
from __future__ import annotations

import difflib

import matplotlib
import numpy as np
from PIL import Image

from .errors import ConfigError

DEFAULT_CMAP = "Spectral_r"
_LUT_SIZE = 256
BAD_COLOR = (0, 0, 0)


def to_unit_range(array: np.ndarray, vmin: float | None = None, vmax: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(H, W) float -> ((H, W) float32 in [0, 1], (H, W) bool finite mask). Range from finite values."""
    a = np.asarray(array, dtype=np.float32)
    if a.ndim != 2:
        raise ConfigError(f"expected a 2-D (H, W) prediction array, got shape {a.shape}")
    finite = np.isfinite(a)
    if vmin is None or vmax is None:
        values = a[finite]
        lo, hi = (float(values.min()), float(values.max())) if values.size else (0.0, 1.0)
        vmin = lo if vmin is None else vmin
        vmax = hi if vmax is None else vmax
    span = float(vmax) - float(vmin)
    if not np.isfinite(span):
        raise ConfigError(f"vmin/vmax must be finite numbers, got {vmin!r}, {vmax!r}")
    with np.errstate(invalid="ignore", over="ignore"):
        out = (a - np.float32(vmin)) / np.float32(span) if span != 0 else np.zeros_like(a)
    return np.clip(np.where(finite, out, 0.0), 0.0, 1.0).astype(np.float32), finite


def _lut(cmap: str) -> np.ndarray:
    """A matplotlib colour map as a (256, 3) uint8 table; ConfigError naming how to list names."""
    try:
        cm = matplotlib.colormaps[cmap]
    except (KeyError, TypeError):
        close = difflib.get_close_matches(str(cmap), list(matplotlib.colormaps), n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ConfigError(
            f"unknown colour map {cmap!r}.{hint} Any matplotlib colour map name works (e.g. Spectral_r, "
            "viridis, magma, inferno, turbo, gray); list them with "
            "python -c \"import matplotlib; print(sorted(matplotlib.colormaps))\"") from None
    return np.rint(cm(np.linspace(0.0, 1.0, _LUT_SIZE))[:, :3] * 255.0).astype(np.uint8)


def colormap_table(cmap: str) -> np.ndarray:
    """The (256, 3) uint8 colours of a matplotlib colour map, start to end (what colorize indexes)."""
    return _lut(cmap).copy()


def check_colormap(cmap: str) -> str:
    """`cmap` if matplotlib knows it, else ConfigError (say which names exist)."""
    _lut(cmap)
    return cmap


def _indices(unit: np.ndarray) -> np.ndarray:
    return np.rint(unit * (_LUT_SIZE - 1)).astype(np.uint8)


def colour_position(unit, kind: str = "disparity"):
    """Where a value at `unit` of the colour range (0 = vmin, 1 = vmax) sits along the colour map
    (0 = its start, 1 = its end): near at the end, so metric depth (near = small) is reversed."""
    return 1.0 - unit if kind == "metric_depth" else unit


def _positions(array: np.ndarray, vmin: float | None, vmax: float | None, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """(H, W) prediction of `kind` -> ((H, W) uint8 positions in a 256-colour table, (H, W) bool finite);
    non-finite pixels hold 0."""
    unit, finite = to_unit_range(array, vmin, vmax)
    return _indices(colour_position(unit, kind)), finite


def colorize(array: np.ndarray, cmap: str = DEFAULT_CMAP, vmin: float | None = None, vmax: float | None = None,
             *, kind: str = "disparity") -> np.ndarray:
    """(H, W) prediction of `kind` -> (H, W, 3) uint8 through a matplotlib colour map (see module docstring)."""
    lut = _lut(cmap)
    return _looked_up(lut, *_positions(array, vmin, vmax, kind))


def _looked_up(lut: np.ndarray, index: np.ndarray, finite: np.ndarray) -> np.ndarray:
    rgb = lut[index]                                                        # (H, W, 3)
    rgb[~finite] = BAD_COLOR
    return rgb


def colour_image(array: np.ndarray, cmap: str = DEFAULT_CMAP, vmin: float | None = None, vmax: float | None = None,
                 *, kind: str = "disparity") -> Image.Image:
    """`colorize`'s picture as a PIL image to save: a palette ("P") image of the map's 256 colours, so a
    PNG of it stores one byte a pixel instead of three (about 4x faster to write and half the size, the
    same pixels once decoded); "RGB" when non-finite pixels need BAD_COLOR and the map lacks it."""
    lut = _lut(cmap)
    index, finite = _positions(array, vmin, vmax, kind)
    if not finite.all():
        bad = np.flatnonzero((lut == BAD_COLOR).all(axis=1))
        if not bad.size:
            return Image.fromarray(_looked_up(lut, index, finite), "RGB")
        index[~finite] = bad[0]
    image = Image.fromarray(index, "P")
    image.putpalette(lut.tobytes())
    return image


def grayscale(array: np.ndarray, vmin: float | None = None, vmax: float | None = None,
              *, kind: str = "disparity") -> np.ndarray:
    """(H, W) prediction of `kind` -> (H, W) uint8, near bright; non-finite values 0."""
    unit, finite = to_unit_range(array, vmin, vmax)
    unit = colour_position(unit, kind)
    gray = np.rint(unit * 255.0).astype(np.uint8)
    gray[~finite] = 0
    return gray
