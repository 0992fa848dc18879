"""Numbers a person reads off a depth map: the colour bar's ticks, a histogram, the hover grid, two-point measures.

Pure functions on a prediction array (no I/O, no UI); the studio draws what they return.
- `colour_bar`: the colours from the low end of the range to the high end and "nice" tick values,
  in the prediction's unit (metres, or relative disparity), matching pipeline.render's direction
  (render.colour_position: near at the map's end).
- `histogram`: counts over the colour range, plus how many values fall below / above it (clipped)
  and how many pixels have none.
- `hover_grid`: the prediction sampled every `step`-th pixel (at most `max_side` samples a side),
  as 16-bit codes with offset/scale (pipeline.files.depth_png's encoding, so the read-out is within
  span / 65535 of the sampled value), base64 little-endian for the page's read-out script. The page
  states the grid's resolution; a click asks the server for the exact value.
- `measure_points`: the value under one or two clicked pixels and, for metric predictions, their 3D
  distance (pipeline.geometry.measure); relative predictions get measure.RELATIVE_REASON instead.
"""
from __future__ import annotations

import base64
import math

import numpy as np
from matplotlib.ticker import MaxNLocator

from .. import render
from ..files import depth_png
from ..files.depth_png import UNITS
from ..geometry import measure

WINDOW = 1                       # clicks read the median of a 3x3 neighbourhood


def value_range(array: np.ndarray, vmin: float | None = None, vmax: float | None = None) -> tuple[float, float]:
    """The colour range: the given limits, else the finite data's min / max ((0, 1) when there is none)."""
    a = np.asarray(array)
    finite = a[np.isfinite(a)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    return (lo if vmin is None else float(vmin)), (hi if vmax is None else float(vmax))


def colour_bar(kind: str, cmap: str, vmin: float, vmax: float, *, stops: int = 16, ticks: int = 6) -> dict:
    """{"colors": hex stops from vmin to vmax, "ticks": [(position 0..1, label)], "vmin", "vmax", "unit"}."""
    t = np.linspace(0.0, 1.0, stops)
    unit_pos = render.colour_position(t, kind)                              # as render.colorize draws it
    lut = render.colormap_table(cmap)
    rows = lut[np.rint(unit_pos * (len(lut) - 1)).astype(int)]                 # (stops, 3) uint8
    colors = ["#" + bytes(row.tolist()).hex() for row in rows]
    span = vmax - vmin
    marks = [(0.0, f"{vmin:.4g}")]
    if span > 0:                                     # the ends, and round numbers not crowding them
        for v in MaxNLocator(nbins=ticks - 1).tick_values(vmin, vmax):
            pos = (float(v) - vmin) / span
            if 0.12 <= pos <= 0.88:
                marks.append((pos, f"{float(v):.4g}"))
        marks.append((1.0, f"{vmax:.4g}"))
    return {"colors": colors, "ticks": marks, "vmin": vmin, "vmax": vmax, "unit": UNITS.get(kind, "")}


def histogram(array: np.ndarray, vmin: float, vmax: float, bins: int = 48) -> dict:
    """{"counts": per bin over [vmin, vmax], "edges", "below", "above", "missing", "total"}."""
    a = np.asarray(array, dtype=np.float64).ravel()
    finite = a[np.isfinite(a)]
    hi = vmax if vmax > vmin else vmin + 1e-12
    inside = finite[(finite >= vmin) & (finite <= hi)]
    counts, edges = np.histogram(inside, bins=bins, range=(vmin, hi))
    return {"counts": counts.tolist(), "edges": edges.tolist(), "below": int((finite < vmin).sum()),
            "above": int((finite > hi).sum()), "missing": int(a.size - finite.size), "total": int(a.size)}


def hover_grid(array: np.ndarray, max_side: int = 160) -> dict:
    """The prediction every `step`-th pixel as base64 uint16 codes (module docstring)."""
    h, w = np.shape(array)
    step = max(1, math.ceil(max(h, w) / max_side))
    sample = np.asarray(array, dtype=np.float32)[::step, ::step]            # (h', w')
    codes, meta = depth_png.encode(sample)
    data = base64.b64encode(codes.astype("<u2").tobytes()).decode("ascii")
    return {"width": int(sample.shape[1]), "height": int(sample.shape[0]), "step": step, "offset": meta["offset"],
            "scale": meta["scale"], "nodata": meta["nodata"], "data": data}


def decode_grid(grid: dict) -> np.ndarray:
    """hover_grid's dict -> (h', w') float32 values (what the page's script reads)."""
    codes = np.frombuffer(base64.b64decode(grid["data"]), dtype="<u2").reshape(grid["height"], grid["width"])
    return depth_png.decode(codes, grid["offset"], grid["scale"], grid["nodata"])


def measure_points(array: np.ndarray, kind: str, focal_px: float, points) -> dict:
    """Values under 1-2 pixels (x = column, y = row) and, for two on a metric prediction, their distance.

    -> {"points": [{"x", "y", "value"}], "unit", "distance_m" (metric, two points), "refusal" (relative)}.
    Raises measure.MeasureError for a point outside the image or without depth (when a distance needs it).
    """
    pts = [(int(round(float(x))), int(round(float(y)))) for x, y in points][:2]
    out = {"unit": UNITS.get(kind, ""), "kind": kind, "window": 2 * WINDOW + 1, "points": []}
    for p in pts:
        value = measure.value_at(array, p, WINDOW, positive=kind == "metric_depth")
        out["points"].append({"x": p[0], "y": p[1], "value": value})
    if len(pts) == 2:
        if kind == "metric_depth":
            m = measure.distance_between(array, pts[0], pts[1], focal_px, kind=kind, window=WINDOW)
            out["distance_m"] = m.distance_m
            out["a_xyz_m"], out["b_xyz_m"] = m.a.tolist(), m.b.tolist()
        else:
            out["refusal"] = measure.RELATIVE_REASON
    return out
