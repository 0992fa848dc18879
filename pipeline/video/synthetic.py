"""Synthetic clips made from one real photo, for tests and benchmarks (motion known exactly).

- `pan_frames`: a window sliding across the photo, `step` pixels per frame along x (a panning
  camera with a distant scene: pure translation, so frame t's pixel (y, x) shows the photo's
  (y0, x0 + t * step + x)).
- `light_frames`: a static camera and a changing light: the photo times a gain per frame (and an
  optional mover: a square patch that slides across, a moving object whose pixels do not count
  as static).
`write_clip(path, frames, fps)` encodes any frame iterator with `VideoWriter`.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from .io import VideoWriter


def pan_frames(photo: np.ndarray, n: int, size: tuple[int, int], step: int = 2, y0: int = 0,
               x0: int = 0) -> Iterator[np.ndarray]:
    """n crops of (h, w) = size, the window moving `step` px right per frame."""
    h, w = size
    if x0 + (n - 1) * step + w > photo.shape[1] or y0 + h > photo.shape[0]:
        raise ValueError(f"a {n}-frame pan of {w}x{h} at {step} px/frame does not fit in a "
                         f"{photo.shape[1]}x{photo.shape[0]} photo")
    for t in range(n):
        yield np.ascontiguousarray(photo[y0:y0 + h, x0 + t * step:x0 + t * step + w])


def light_gains(n: int, low: float = 0.55, high: float = 1.15, period: int = 12) -> np.ndarray:
    """A light that dims and brightens (a sine between low and high) with a flicker on top."""
    t = np.arange(n)
    flicker = np.where(t % 5 == 3, 0.85, 1.0)
    return ((low + high) / 2 + (high - low) / 2 * np.sin(2 * np.pi * t / period)) * flicker


def mover_box(t: int, shape: tuple[int, int], side: int) -> tuple[slice, slice]:
    """Where the moving square is at frame t (slides left to right along the lower third)."""
    h, w = shape
    x = (t * max(1, side // 3)) % max(1, w - side)
    y = min(h - side, 2 * h // 3)
    return slice(y, y + side), slice(x, x + side)


def light_frames(photo: np.ndarray, gains: Iterable[float], mover: int = 0) -> Iterator[np.ndarray]:
    """The photo under each gain; with mover > 0 a mover x mover grey square moves across it."""
    base = photo.astype(np.float32)
    for t, gain in enumerate(gains):
        frame = np.clip(base * gain, 0, 255).astype(np.uint8)
        if mover:
            ys, xs = mover_box(t, photo.shape[:2], mover)
            frame[ys, xs] = (40, 200, 90)
        yield frame


def write_clip(path: str | Path, frames: Iterable[np.ndarray], fps: float = 24.0) -> Path:
    it = iter(frames)
    first = next(it)
    with VideoWriter(path, fps, first.shape[1], first.shape[0]) as w:
        w.write(first)
        for frame in it:
            w.write(frame)
    return Path(path)
