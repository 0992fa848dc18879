"""Depth for a clip in the studio (what the depth tab's video panel and its API call). No gradio here.

`run_video(depth_service, video_path, ...)` uses the depth service's model cache and request
folders, so a clip runs with the same model, device and input size choices as an image, and
its files are served from the same place (and cleaned up with the other requests).
Caps: at most `settings.max_video_frames` predicted frames per request (a longer clip is cut,
and the summary says so) and `settings.max_pixels` per frame.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ..errors import ConfigError, VideoError
from ..preprocess import MAX_INPUT_SIZE
from ..ranges import Range
from ..settings import COLORMAPS
from ..video.io import VideoReader
from ..video.process import VideoOptions, VideoResult, expected_frames, predict_video

Progress = Callable[[float, str], None]

RANGES = {                      # every number /predict_video takes, enforced here whatever the widget allows
    "input_size": Range("input size", 14, MAX_INPUT_SIZE, integer=True, multiple_of=14, optional=True),
    "stride": Range("frame stride", 1, 1000, integer=True, optional=True),            # 0 / none: every frame
    "max_frames": Range("max frames", 1, 1_000_000, integer=True, optional=True),     # none: the studio's cap
}


def run_video(service, video, model: str | None = None, input_size: int | None = None, cmap: str | None = None,
              stride: int = 1, max_frames: int | None = None, align: bool = True, side_by_side: bool = True,
              *, progress: Progress | None = None) -> tuple[VideoResult, dict]:
    """Predict a clip (a file path) into a new request folder -> (result with its files, summary dict)."""
    progress = progress or (lambda fraction, message: None)
    if not video:
        raise VideoError("no video given: upload a clip or record one with the webcam first")
    settings = service.settings
    cmap = cmap or settings.cmap
    if cmap not in COLORMAPS:
        raise ConfigError(f"unknown colour map {cmap!r}; choose one of {', '.join(COLORMAPS)}")
    input_size = RANGES["input_size"].check(input_size)
    stride = RANGES["stride"].check(stride) or 1
    cap = settings.max_video_frames
    frames = min(RANGES["max_frames"].check(max_frames) or cap, cap)
    options = VideoOptions(stride=stride, max_frames=frames, align=bool(align), cmap=cmap,
                           side_by_side=bool(side_by_side), max_pixels=settings.max_pixels)
    path = Path(video)
    with VideoReader(path, max_pixels=settings.max_pixels) as reader:          # fail early on a bad clip
        cut = expected_frames(reader.info, VideoOptions(stride=options.stride))
    progress(0.02, "loading model")
    loaded = service.model(model)
    predictor = service.predictor(loaded, input_size)                    # the studio's backend, as for images

    def report(stage: str, done: int, total: int | None) -> None:
        share = (done / total) if total else 0.0
        base, span = (0.05, 0.85) if stage == "predicting" else (0.9, 0.1)
        progress(min(1.0, base + span * share), f"{stage} frame {done}" + (f" of {total}" if total else ""))

    result = predict_video(predictor, path, service.new_request_folder(), stem=_stem(path.name),
                           options=options, progress=report)
    summary = {**result.summary(), "model": loaded.choice.key, "model_title": loaded.choice.title,
               "untrained": loaded.untrained, "notice": loaded.notice, "device": loaded.device,
               "input_size": predictor.input_size, "backend": predictor.backend, "aligned": options.align,
               "cut_to_frames": frames if cut and cut > frames else None}
    progress(1.0, "done")
    return result, summary


def _stem(name: str) -> str:
    from .depth_outputs import safe_stem
    return safe_stem(name)
