"""Image maths the studio's pages need, kept out of studio/ (which only lays out what it is given).

- `draw_points(rgb, points)`: a picture with clicked points A, B (x, y) and the line between them
  (the depth tab's measure read-out);
- `mask_area(mask)`: (selected pixels, all pixels) of a selection mask (the Curate tab's selection
  and calibration-reference read-outs), None meaning nothing selected.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

LABELS = "AB"


def draw_points(rgb: np.ndarray, points: Sequence[Sequence[float]]) -> np.ndarray:
    """uint8 (H, W, 3) with up to two points (x, y), labelled A and B, joined by a line when two."""
    img = Image.fromarray(np.asarray(rgb, dtype=np.uint8)).convert("RGB")
    d = ImageDraw.Draw(img)
    r = max(3, round(min(img.size) / 90))
    pts = [tuple(int(c) for c in p) for p in points][:len(LABELS)]
    if len(pts) == 2:
        d.line(pts, fill=(255, 255, 255), width=max(2, r // 2))
    for i, (x, y) in enumerate(pts):
        d.ellipse([x - r, y - r, x + r, y + r], fill=(255, 255, 255), outline=(0, 0, 0), width=2)
        d.text((x + r + 3, y - r - 2), LABELS[i], fill=(255, 255, 255), stroke_width=2, stroke_fill=(0, 0, 0))
    return np.asarray(img)


def mask_area(mask) -> tuple[int, int]:
    """(pixels set, pixels in all) of a selection mask; (0, 0) for None (nothing selected)."""
    if mask is None:
        return 0, 0
    mask = np.asarray(mask)
    return int(np.count_nonzero(mask)), int(mask.size)
