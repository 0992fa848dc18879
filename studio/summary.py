"""The human-readable line under the depth results, from a DepthResult summary dict."""
from __future__ import annotations

from .text import md

TIMING_LABELS = (("inference", "inference"), ("model_load", "model load"), ("color_map", "colour map"),
                 ("sent_files", "colour PNG + .npy"), ("point_cloud", "point cloud"), ("decode", "decode"),
                 ("total", "total"))


def _number(x: float) -> str:
    return f"{x:.4g}"


def ordinal(n: int) -> str:
    """2 -> "2nd", 3 -> "3rd", 4 -> "4th", 11 -> "11th"."""
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def _camera(s: dict) -> str:
    """The 3D view's line: points shown, and the focal length / field of view used (and where it came from)."""
    step = s.get("point_stride", 1)
    every = "every pixel" if step == 1 else f"every {ordinal(step)} pixel; every pixel: the .ply in Downloads"
    fov = s.get("fov_deg") or {}
    angles = (f", field of view {fov['horizontal_deg']:.1f}° × {fov['vertical_deg']:.1f}°"
              if "horizontal_deg" in fov else "")
    return (f"3D view: {s.get('points', 0):,} points ({every}) · camera: focal {s.get('focal_px')} px "
            f"({s.get('focal_source')}){angles}")


def format_summary(s: dict) -> str:
    if not s:
        return ""
    what = "Depth in metres" if s.get("kind") == "metric_depth" else "Relative disparity (near = large)"
    lines = [
        f"**{what}**: {_number(s['min'])} to {_number(s['max'])} {s.get('unit', '')}".rstrip(),
        f"{s['width']}×{s['height']} px · model **{md(s.get('model_title', s.get('model')))}** · "
        f"device **{s.get('device')}** · backend **{s.get('backend', 'torch')}** · input size {s.get('input_size')}",
        _camera(s),
    ]
    if s.get("cloud_note"):
        lines.append(f"<small>{md(s['cloud_note'])}</small>")
    t = s.get("timings_ms", {})
    lines.append(" · ".join(f"{label} {t[k]:.0f} ms" for k, label in TIMING_LABELS if k in t))
    if s.get("untrained"):
        lines.insert(0, "**UNTRAINED weights: this depth map is meaningless (see the banner).**")
    return "\n\n".join(lines)
