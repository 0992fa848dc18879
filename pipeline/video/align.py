"""Temporal alignment of per-frame relative predictions: one scale and shift per frame.

A relative model predicts disparity up to an unknown scale and shift that differ from frame to
frame, which is what makes a clip predicted frame by frame flicker. `TemporalAligner` chooses, for
each frame t, the (s_t, b_t) that bring s_t * d_t + b_t onto the frames already aligned, so the
whole sequence shares the first frame's scale:

- causal and streaming: frame t is aligned to its predecessors only, holding a small window of
  them at low resolution (`grid` pixels on the long side): the `window` most recent frames and
  keyframes (every `keyframe_every`-th frame, the last `keyframes` of them) against drift;
- camera motion: the shift between consecutive frames is estimated by phase correlation of
  their low-resolution grey images (scikit-image), accumulated, and each predecessor is compared
  on its OVERLAP with frame t only, so a pan compares the same scene points;
- robust to moving objects and to pixels the motion estimate gets wrong: trimmed least squares,
  refitting on the `keep` fraction of pixel pairs whose residual is smallest (the pixels whose
  disparity changed least);
- guarded: a fit with a non-positive or non-finite scale (or too few pairs) falls back to
  matching the median and the mean absolute deviation of the overlap.

Metric models output metres, which are already consistent between frames: they are left as
they are (scale 1, shift 0). What this can fix: global flicker (the per-frame scale and shift).
What it cannot: local flicker inside a frame (one object's depth wobbling while the rest is
steady), errors the network makes consistently, or detail the per-frame model never predicted.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np
from PIL import Image

MIN_PAIRS = 32
MAX_PAIRS = 40_000             # pixel pairs per fit (an even subsample beyond this)


@dataclass(frozen=True)
class AlignParams:
    grid: int = 160                # long side of the low-resolution fitting grid (pixels)
    window: int = 4                # most recent aligned frames compared with
    keyframe_every: int = 12       # every n-th frame becomes a keyframe...
    keyframes: int = 3             # ...and the last this many keyframes are compared with too
    keep: float = 0.5              # trimmed least squares: fraction of pairs kept for the refit
    iterations: int = 3
    motion: bool = True            # estimate camera translation between frames
    min_overlap: float = 0.3       # a predecessor sharing less of the frame is not used


@dataclass
class _Ref:
    disparity: np.ndarray          # (h, w) aligned, low resolution
    position: np.ndarray           # (2,) accumulated camera shift (rows, cols) in grid pixels


def _small(array: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Area-average downsampling of a float (H, W) array to (h, w)."""
    if array.shape == size:
        return array.astype(np.float32, copy=False)
    return np.asarray(Image.fromarray(array.astype(np.float32, copy=False), mode="F")
                      .resize((size[1], size[0]), Image.BOX), dtype=np.float32)


def _gray(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    small = np.asarray(Image.fromarray(rgb).resize((size[1], size[0]), Image.BOX), dtype=np.float32)
    g = small @ np.array([0.299, 0.587, 0.114], np.float32)                          # (h, w)
    return (g - g.mean()) / (g.std() + 1e-6)          # gain changes do not move the correlation peak


def fit_scale_shift(x: np.ndarray, y: np.ndarray, keep: float = 0.5, iterations: int = 3) -> tuple[float, float]:
    """Trimmed least squares for s * x + b ~ y (1-D arrays); falls back to robust moments."""
    x, y = x.astype(np.float64), y.astype(np.float64)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    if x.size < MIN_PAIRS:
        return 1.0, 0.0
    s, b = _lstsq(x, y)
    n_keep = max(MIN_PAIRS, int(keep * x.size))
    for _ in range(iterations):
        if not (np.isfinite(s) and s > 0):
            break
        r = np.abs(s * x + b - y)
        idx = np.argpartition(r, n_keep - 1)[:n_keep] if n_keep < x.size else slice(None)
        s, b = _lstsq(x[idx], y[idx])
    if not (np.isfinite(s) and s > 0 and np.isfinite(b)):
        return _moments(x, y)
    return float(s), float(b)


def _lstsq(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    mx, my = x.mean(), y.mean()
    var = ((x - mx) ** 2).sum()
    if var <= 1e-12 * max(1.0, (mx * mx) * x.size):
        return float("nan"), float("nan")
    s = ((x - mx) * (y - my)).sum() / var
    return float(s), float(my - s * mx)


def _moments(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    mx, my = np.median(x), np.median(y)
    dx, dy = np.mean(np.abs(x - mx)), np.mean(np.abs(y - my))
    s = dy / dx if dx > 1e-12 and dy > 0 else 1.0
    return float(s), float(my - s * mx)


def _overlap(cur: np.ndarray, ref: np.ndarray, offset: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (cur[y, x], ref[y + dy, x + dx]) where both exist."""
    (h, w), (dy, dx) = cur.shape, offset
    y0, y1, x0, x1 = max(0, -dy), min(h, h - dy), max(0, -dx), min(w, w - dx)
    if y1 <= y0 or x1 <= x0:
        return cur[:0, :0].ravel(), ref[:0, :0].ravel()
    return cur[y0:y1, x0:x1].ravel(), ref[y0 + dy:y1 + dy, x0 + dx:x1 + dx].ravel()


class TemporalAligner:
    """`align(prediction, rgb) -> (scale, shift)` for each frame in order; apply as scale * d + shift."""

    def __init__(self, kind: str, params: AlignParams | None = None):
        self.kind = kind
        self.params = params or AlignParams()
        self.enabled = kind == "disparity"
        self._recent: deque[_Ref] = deque(maxlen=self.params.window)
        self._keys: deque[_Ref] = deque(maxlen=self.params.keyframes)
        self._size: tuple[int, int] | None = None
        self._prev_gray: np.ndarray | None = None
        self._position = np.zeros(2)
        self.count = 0

    def _grid(self, shape: tuple[int, int]) -> tuple[int, int]:
        h, w = shape
        f = min(1.0, self.params.grid / max(h, w))
        return max(4, round(h * f)), max(4, round(w * f))

    def align(self, prediction: np.ndarray, rgb: np.ndarray | None = None) -> tuple[float, float]:
        if not self.enabled:
            self.count += 1
            return 1.0, 0.0
        self._size = self._size or self._grid(prediction.shape)
        d = _small(prediction, self._size)                                      # (h, w)
        self._track(rgb)
        if self.count == 0:
            scale, shift = 1.0, 0.0
        else:
            xs, ys = self._pairs(d)
            scale, shift = fit_scale_shift(xs, ys, self.params.keep, self.params.iterations) if xs.size \
                else (1.0, 0.0)
        ref = _Ref(scale * d + shift, self._position.copy())
        self._recent.append(ref)
        if self.count % self.params.keyframe_every == 0:
            self._keys.append(ref)
        self.count += 1
        return scale, shift

    def _track(self, rgb: np.ndarray | None) -> None:
        """Accumulate the camera's translation since the first frame (grid pixels)."""
        if not self.params.motion or rgb is None:
            return
        g = _gray(rgb, self._size)
        if self._prev_gray is not None:
            from skimage.registration import phase_cross_correlation
            shift, _, _ = phase_cross_correlation(self._prev_gray, g, upsample_factor=2, normalization=None)
            if np.all(np.isfinite(shift)) and np.all(np.abs(shift) < 0.25 * np.array(self._size)):
                self._position = self._position + np.asarray(shift, float)
        self._prev_gray = g

    def _pairs(self, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        xs, ys = [], []
        refs = {id(r): r for r in (*self._recent, *self._keys)}.values()       # a keyframe may also be recent
        for ref in refs:
            dy, dx = np.rint(self._position - ref.position).astype(int)
            x, y = _overlap(d, ref.disparity, (int(dy), int(dx)))
            if x.size >= self.params.min_overlap * d.size:
                xs.append(x)
                ys.append(y)
        if not xs:
            return np.zeros(0), np.zeros(0)
        x, y = np.concatenate(xs), np.concatenate(ys)
        step = -(-x.size // MAX_PAIRS)
        return x[::step], y[::step]
