"""The depth view's read-outs as page elements: colour bar with numbers, histogram, hover grid, measures.

The numbers come from pipeline.services.depth_results (`legend`, `measure`); this module only lays them out.
The hover script (assets/depth_readout.js) reads the grid from the legend's data attributes and
shows the value under the cursor; the legend states the grid's resolution.
"""
from __future__ import annotations

import html
from pathlib import Path

from .summary import ordinal

LEGEND_ID = "depth-legend"
READOUT_JS = (Path(__file__).resolve().parents[1] / "assets" / "depth_readout.js").read_text()
EMPTY_LEGEND = ('<div class="depth-legend depth-legend-empty">Compute depth to see the colour bar, the histogram '
                'and the value under the cursor.</div>')
MEASURE_HINT = "Click two points on the depth map to measure between them."


def _what(kind: str) -> str:
    return "depth in metres" if kind == "metric_depth" else "relative disparity (near = large, no unit)"


def _histogram_bars(hist: dict, colors: list[str]) -> str:
    counts = [float(c) for c in hist["counts"]]
    top = max(counts, default=0.0) or 1.0
    bars = []
    for i, c in enumerate(counts):
        colour = colors[min(len(colors) - 1, int(i * len(colors) / max(len(counts), 1)))]
        bars.append(f'<i style="height:{100 * c / top:.1f}%;background:{colour}" title="{int(c)} pixels"></i>')
    return f'<div class="depth-hist" aria-label="histogram of values">{"".join(bars)}</div>'


def _anchor(pos: float) -> int:
    """How far (percent of its width) a tick label sits left of its mark: ends flush, the rest centred."""
    return 0 if pos <= 0.0 else 100 if pos >= 1.0 else 50


def legend_html(legend: dict | None) -> str:
    """Colour bar, ticks, histogram and the hover grid of a request (pipeline.services.depth_results.legend)."""
    if not legend:
        return EMPTY_LEGEND
    bar, hist, grid = legend["bar"], legend["histogram"], legend["grid"]
    unit = bar["unit"]
    ticks = "".join(f'<span style="left:{100 * pos:.2f}%;transform:translateX(-{_anchor(pos)}%)">'
                    f'{html.escape(label)}</span>' for pos, label in bar["ticks"])
    clipped = []
    total = max(hist["total"], 1)
    for side, n in (("below", hist["below"]), ("above", hist["above"])):
        if n:
            clipped.append(f"{100 * n / total:.1f}% {side} the range (drawn at its end)")
    if hist["missing"]:
        clipped.append(f"{100 * hist['missing'] / total:.1f}% without a value (black)")
    near = "left" if legend["kind"] == "metric_depth" else "right"
    fov = legend["fov"]
    note = [f"{_what(legend['kind'])} from {bar['vmin']:.4g} to {bar['vmax']:.4g}"
            + (" (clipped range)" if legend.get("clipped") else "") + f"; near is on the {near}", *clipped,
            f"camera: focal {fov['focal_px']:.1f} px, field of view {fov['horizontal_deg']:.1f}° × "
            f"{fov['vertical_deg']:.1f}°"]
    data = " ".join(f'data-{k}="{html.escape(str(v))}"' for k, v in (
        ("grid", grid["data"]), ("w", grid["width"]), ("h", grid["height"]), ("step", grid["step"]),
        ("offset", repr(grid["offset"])), ("scale", repr(grid["scale"])),
        ("nodata", "" if grid["nodata"] is None else grid["nodata"]), ("unit", unit if unit == "m" else "(relative)"),
        ("width", legend["width"]), ("height", legend["height"])))
    resolution = ("every pixel" if grid["step"] == 1 else f"every {ordinal(grid['step'])} pixel")
    return (f'<div class="depth-legend" {data}>'
            f'<div class="depth-hover" id="depth-hover">Hover over the depth map for the value under the cursor '
            f'(read from a {grid["width"]}×{grid["height"]} grid, {resolution}); click for the exact value.</div>'
            f'{_histogram_bars(hist, bar["colors"])}'
            f'<div class="depth-bar" style="background:linear-gradient(to right,{",".join(bar["colors"])})"></div>'
            f'<div class="depth-ticks">{ticks}</div>'
            f'<div class="depth-legend-note">{html.escape(" · ".join(note))}</div></div>')


def _value(v, unit: str) -> str:
    if v is None:
        return "no value"
    return f"{v:.4g} m" if unit == "m" else f"{v:.4g} (relative)"


def measure_markdown(m: dict) -> str:
    """One line about the clicked point(s): values, and the distance or why there is none."""
    unit = m["unit"]
    names = "AB"
    parts = [f"**{names[i]}** ({p['x']}, {p['y']}): {_value(p['value'], unit)}" for i, p in enumerate(m["points"])]
    line = " · ".join(parts)
    if "distance_m" in m:
        line += f" → **distance {m['distance_m']:.3f} m** (3D, median of {m['window']}×{m['window']} pixels)"
    elif m.get("refusal"):
        line += f"\n\n**No distance:** {m['refusal']}"
    elif len(m["points"]) == 1:
        line += " · now click point B"
    return line
