"""Depth for a whole clip: decode -> batched per-frame prediction -> temporal alignment -> files.

    result = predict_video(predictor, "clip.mp4", "out/", options=VideoOptions(side_by_side=True))

Writes into the output folder (stem = the clip's file name without extension):
    <stem>_depth.mp4       colour-mapped depth, as many frames as were predicted, at input fps / stride,
                           with ONE colour range for the whole clip (so brightness means the same
                           depth in every frame)
    <stem>_side_by_side.mp4  with side_by_side: the input frame | its depth
    <stem>.npz             float depth (T, H, W) and the alignment (see depth_files.py)
Memory does not grow with the clip's length: two passes over the frames, the first (decode,
predict, align) streaming the aligned float frames to a temporary file in the output folder, the
second (one colour range now known) turning them into the videos and the npz. Frames go through
`Predictor.predict_many` as arrays, so the preprocessing and the pixel bounds of images apply.
"""
from __future__ import annotations

import contextlib
import itertools
import math
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from .. import render
from ..files.image_io import MAX_PIXELS
from ..predictor import Predictor
from .align import AlignParams, TemporalAligner
from .depth_files import FORMATS, DepthFramesWriter
from .io import Frame, VideoInfo, VideoReader, VideoWriter

Progress = Callable[[str, int, int | None], None]       # (stage, frames done, frames expected)
RANGE_PERCENTILES = (1.0, 99.0)                          # per frame; the clip's range is their envelope


@dataclass(frozen=True)
class VideoOptions:
    stride: int = 1                  # predict every n-th frame
    max_frames: int | None = None    # at most this many predicted frames
    batch_size: int = 4              # frames per forward pass
    align: bool = True               # temporal alignment of relative (disparity) models
    cmap: str = render.DEFAULT_CMAP
    side_by_side: bool = False
    depth_format: str = "npz"        # "npz": one float npz; "png": 16-bit PNG frames + npz without depth
    fps: float | None = None         # frame rate of a folder of frames (default 30)
    max_pixels: int = MAX_PIXELS
    align_params: AlignParams = field(default_factory=AlignParams)

    def __post_init__(self):
        from ..errors import ConfigError
        if self.stride < 1 or self.batch_size < 1 or (self.max_frames is not None and self.max_frames < 1):
            raise ConfigError(f"stride, batch size and max frames must be at least 1; got stride={self.stride}, "
                              f"batch size={self.batch_size}, max frames={self.max_frames}")
        if self.depth_format not in FORMATS:
            raise ConfigError(f"unknown depth format {self.depth_format!r}; use one of {', '.join(FORMATS)}")
        render.check_colormap(self.cmap)


@dataclass
class VideoResult:
    name: str
    files: dict[str, Path]
    frames: int
    fps: float                       # of the outputs
    width: int
    height: int
    kind: str
    unit: str
    model_id: str
    scale: np.ndarray                # (T,)
    shift: np.ndarray                # (T,)
    vmin: float
    vmax: float
    seconds: dict[str, float]        # decode, inference, align, pass1, render, total

    def summary(self) -> dict:
        s = self.seconds
        return {"video": self.name, "frames": self.frames, "fps": round(self.fps, 3), "width": self.width,
                "height": self.height, "kind": self.kind, "unit": self.unit, "model_id": self.model_id,
                "colour_range": [round(self.vmin, 6), round(self.vmax, 6)],
                "scale_range": [float(self.scale.min()), float(self.scale.max())] if self.frames else [],
                "fps_end_to_end": round(self.frames / s["total"], 3) if s.get("total") else None,
                "fps_inference": round(self.frames / s["inference"], 3) if s.get("inference") else None,
                "seconds": {k: round(v, 3) for k, v in s.items()},
                "files": {k: Path(v).name for k, v in self.files.items()}}


def expected_frames(info: VideoInfo, options: VideoOptions) -> int | None:
    """Frames the options will select, from the container's declared count (None: unknown)."""
    count = info.frame_count or (round(info.duration_s * info.fps) if info.duration_s else None)
    if count is None:
        return options.max_frames
    n = math.ceil(count / options.stride)
    return min(n, options.max_frames) if options.max_frames else n


def prefetch(items: Iterable, depth: int) -> Iterator:
    """Iterate `items` in a background thread, `depth` ahead (decoding overlaps the forward passes)."""
    q: queue.Queue = queue.Queue(maxsize=max(1, depth))
    done, stop = object(), threading.Event()

    def work():
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        q.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put(done)
        except BaseException as e:  # noqa: BLE001 - handed to the consumer, raised there
            q.put(e)

    thread = threading.Thread(target=work, daemon=True, name="video-decode")
    thread.start()
    try:
        while (item := q.get()) is not done:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join()


class _Pass1:
    """Decode, predict in batches, align, stream the aligned float frames to `raw`; track the colour range."""

    def __init__(self, predictor: Predictor, options: VideoOptions, progress: Progress, total: int | None):
        self.predictor, self.options, self.progress, self.total = predictor, options, progress, total
        kind = predictor.kind if options.align else "none"
        self.aligner = TemporalAligner(kind, options.align_params)
        self.scale, self.shift, self.times, self.index = [], [], [], []
        self.lo, self.hi = math.inf, -math.inf
        self.seconds = {"decode": 0.0, "inference": 0.0, "align": 0.0}

    def run(self, frames: Iterator[Frame], raw) -> None:
        it = prefetch(frames, 2 * self.options.batch_size)
        try:
            self._batches(it, raw)
        finally:
            it.close()              # stop and join the decoding thread before the reader is closed

    def _batches(self, it: Iterator[Frame], raw) -> None:
        while True:
            t0 = time.perf_counter()
            batch = list(itertools.islice(it, self.options.batch_size))
            t1 = time.perf_counter()
            self.seconds["decode"] += t1 - t0                  # waiting for decoded frames
            if not batch:
                return
            predictions = self.predictor.predict_many([f.rgb for f in batch], batch_size=len(batch))
            t2 = time.perf_counter()
            self.seconds["inference"] += t2 - t1
            for frame, p in zip(batch, predictions, strict=True):
                raw.write(self._aligned(frame, p.array).tobytes())
            self.seconds["align"] += time.perf_counter() - t2
            self.progress("predicting", len(self.scale), self.total)

    def _aligned(self, frame: Frame, array: np.ndarray) -> np.ndarray:
        s, b = self.aligner.align(array, frame.rgb)
        out = array if (s, b) == (1.0, 0.0) else (s * array.astype(np.float64) + b).astype(np.float32)
        self.scale.append(s)
        self.shift.append(b)
        self.times.append(frame.time_s)
        self.index.append(frame.index)
        finite = out[::4, ::4][np.isfinite(out[::4, ::4])]                 # a sample is enough for a range
        if finite.size:
            lo, hi = np.percentile(finite, RANGE_PERCENTILES)
            self.lo, self.hi = min(self.lo, float(lo)), max(self.hi, float(hi))
        return out


def predict_video(predictor: Predictor, source: str | Path, out_dir: str | Path, *, stem: str | None = None,
                  options: VideoOptions | None = None, progress: Progress | None = None) -> VideoResult:
    """Depth for every selected frame of `source` (a video file or a folder of frames) -> files in out_dir."""
    options = options or VideoOptions()
    progress = progress or (lambda stage, done, total: None)
    out = Path(out_dir)
    start = time.perf_counter()
    with VideoReader(source, fps=options.fps, max_pixels=options.max_pixels) as reader:
        info = reader.info
        stem = stem or Path(source).stem
        raw_path = out / f".{stem}.depth-{time.time_ns()}.f32"
        p1 = _Pass1(predictor, options, progress, expected_frames(info, options))
        try:
            with open(raw_path, "wb") as raw:
                p1.run(reader.frames(stride=options.stride, max_frames=options.max_frames), raw)
            seconds = {**p1.seconds, "pass1": time.perf_counter() - start}
            t = time.perf_counter()
            files = _pass2(raw_path, p1, info, out, stem, source, options, progress)
            seconds["render"] = time.perf_counter() - t
        finally:
            raw_path.unlink(missing_ok=True)
    seconds["total"] = time.perf_counter() - start
    vmin, vmax = _range(p1)
    return VideoResult(info.name, files, len(p1.scale), info.fps / options.stride, info.width, info.height,
                       predictor.kind, _unit(predictor.kind), predictor.model_id, np.asarray(p1.scale),
                       np.asarray(p1.shift), vmin, vmax, seconds)


def _unit(kind: str) -> str:
    from ..predictor import UNITS
    return UNITS[kind]


def _range(p1: _Pass1) -> tuple[float, float]:
    if not math.isfinite(p1.lo):
        return 0.0, 1.0
    return p1.lo, (p1.hi if p1.hi > p1.lo else p1.lo + 1.0)


def _pass2(raw_path: Path, p1: _Pass1, info: VideoInfo, out: Path, stem: str, source, options: VideoOptions,
           progress: Progress) -> dict[str, Path]:
    """The float frames back from disk -> colour video, side-by-side video, npz / PNG frames."""
    n, (h, w) = len(p1.scale), (info.height, info.width)
    vmin, vmax = _range(p1)
    kind = p1.predictor.kind
    fps = info.fps_fraction / options.stride
    files = {"depth_video": out / f"{stem}_depth.mp4", "npz": out / f"{stem}.npz"}
    depth_files = DepthFramesWriter(files["npz"], n, h, w, fmt=options.depth_format)
    if depth_files.png_dir is not None:
        files["depth_frames"] = depth_files.png_dir
    rgb_frames = None
    if options.side_by_side:
        files["side_by_side"] = out / f"{stem}_side_by_side.mp4"
        rgb_reader = VideoReader(source, fps=options.fps, max_pixels=options.max_pixels)
        rgb_frames = rgb_reader.frames(stride=options.stride, max_frames=options.max_frames)
    try:
        with open(raw_path, "rb") as raw, VideoWriter(files["depth_video"], fps, w, h) as video, \
                _maybe_writer(files.get("side_by_side"), fps, 2 * w, h) as sbs:
            for i in range(n):
                frame = np.fromfile(raw, np.float32, h * w).reshape(h, w)
                color = render.colorize(frame, options.cmap, vmin, vmax, kind=kind)
                video.write(color)
                if sbs is not None:
                    sbs.write(np.concatenate([next(rgb_frames).rgb, color], axis=1))
                depth_files.write(frame, kind)
                if i % 8 == 7 or i == n - 1:
                    progress("writing", i + 1, n)
        depth_files.close(_meta(p1, kind, float(fps), vmin, vmax))
    except BaseException:
        depth_files.abort()
        raise
    finally:
        if rgb_frames is not None:
            rgb_frames.close()
            rgb_reader.close()
    return files


def _maybe_writer(path: Path | None, fps, width: int, height: int):
    return VideoWriter(path, fps, width, height) if path is not None else contextlib.nullcontext()


def _meta(p1: _Pass1, kind: str, fps: float, vmin: float, vmax: float) -> dict:
    return {"fps": np.float64(fps), "kind": np.str_(kind), "unit": np.str_(_unit(kind)),
            "scale": np.asarray(p1.scale, np.float64), "shift": np.asarray(p1.shift, np.float64),
            "times": np.asarray(p1.times, np.float64), "frame_index": np.asarray(p1.index, np.int64),
            "model_id": np.str_(p1.predictor.model_id), "vmin": np.float64(vmin), "vmax": np.float64(vmax)}


def with_options(options: VideoOptions | None, **changes) -> VideoOptions:
    """A copy of `options` (or the defaults) with the non-None `changes` applied."""
    return replace(options or VideoOptions(), **{k: v for k, v in changes.items() if v is not None})
