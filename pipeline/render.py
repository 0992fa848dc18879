"""Pictures of a prediction, always made from the float array (never from an 8-bit copy).

Direction: the lowest value maps to the start of the colour map, the highest to its end.
With the default `Spectral_r` a disparity map therefore shows NEAR (high disparity) in red
and far in blue, like the official Depth Anything demo. Metric depth is the other way round
(near = small metres = blue); pass `invert=True` to keep near red for metric depth.
In `grayscale`, high values are bright (near is bright for disparity).

Non-finite values (NaN, +-inf) are ignored when finding the range and drawn black (0).
A constant array maps to the start of the colour map (0 in grayscale).
"""
from __future__ import annotations

import difflib

import matplotlib
import numpy as np

from .errors import ConfigError

DEFAULT_CMAP = "Spectral_r"
_LUT_SIZE = 256
BAD_COLOR = (0, 0, 0)


def normalize(array: np.ndarray, vmin: float | None = None, vmax: float | None = None) -> tuple[np.ndarray, np.ndarray]:
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
    return np.rint(unit * (_LUT_SIZE - 1)).astype(np.intp)


def colorize(array: np.ndarray, cmap: str = DEFAULT_CMAP, vmin: float | None = None, vmax: float | None = None,
             *, invert: bool = False) -> np.ndarray:
    """(H, W) float -> (H, W, 3) uint8 through a matplotlib colour map (see module docstring)."""
    lut = _lut(cmap)
    unit, finite = normalize(array, vmin, vmax)
    if invert:
        unit = 1.0 - unit
    rgb = lut[_indices(unit)]                                               # (H, W, 3)
    rgb[~finite] = BAD_COLOR
    return rgb


def grayscale(array: np.ndarray, vmin: float | None = None, vmax: float | None = None,
              *, invert: bool = False) -> np.ndarray:
    """(H, W) float -> (H, W) uint8, high values bright; non-finite values 0."""
    unit, finite = normalize(array, vmin, vmax)
    if invert:
        unit = 1.0 - unit
    gray = np.rint(unit * 255.0).astype(np.uint8)
    gray[~finite] = 0
    return gray
