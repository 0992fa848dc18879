"""The human-readable line under the depth results, from a DepthResult summary dict."""
from __future__ import annotations

TIMING_LABELS = (("inference", "inference"), ("color_map", "colour map"), ("encode_16bit", "16-bit PNG"),
                 ("point_cloud", "point cloud"), ("decode", "decode"), ("other_files", "other files"),
                 ("total", "total"))


def _number(x: float) -> str:
    return f"{x:.4g}"


def format_summary(s: dict) -> str:
    if not s:
        return ""
    what = "Depth in metres" if s.get("kind") == "metric_depth" else "Relative disparity (near = large)"
    lines = [
        f"**{what}**: {_number(s['min'])} to {_number(s['max'])} {s.get('unit', '')}".rstrip(),
        f"{s['width']}×{s['height']} px · model **{s.get('model_title', s.get('model'))}** · "
        f"device **{s.get('device')}** · backend **{s.get('backend', 'torch')}** · input size {s.get('input_size')}",
        f"point cloud: {s.get('points', 0):,} points, focal {s.get('focal_px')} px ({s.get('focal_source')})",
    ]
    if s.get("cloud_note"):
        lines.append(f"<small>{s['cloud_note']}</small>")
    t = s.get("timings_ms", {})
    lines.append(" · ".join(f"{label} {t[k]:.0f} ms" for k, label in TIMING_LABELS if k in t))
    if s.get("untrained"):
        lines.insert(0, "**UNTRAINED weights: this depth map is meaningless (see the banner).**")
    return "\n\n".join(lines)
