"""The video half of `python -m pipeline predict` (not a command of its own): options and one clip.

For each video <stem> it writes <stem>_depth.mp4, <stem>.npz (or <stem>_depth_frames/*.png with
--depth-frames png) and, with --side-by-side, <stem>_side_by_side.mp4; see pipeline/video/process.py.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tqdm import tqdm

from ..predictor import Predictor
from ..video.process import VideoOptions, VideoResult, predict_video


def add_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("videos (mp4, mov, webm, mkv, avi, ...; folders of frames with --frames-folder)")
    g.add_argument("--stride", type=int, default=1, metavar="N", help="predict every N-th frame (default 1)")
    g.add_argument("--max-frames", type=int, metavar="N", help="predict at most N frames of each video")
    g.add_argument("--no-align", action="store_true",
                   help="keep each frame's own scale and shift (relative models flicker; default: align them)")
    g.add_argument("--side-by-side", action="store_true", help="also write <stem>_side_by_side.mp4 (input | depth)")
    g.add_argument("--depth-frames", choices=("npz", "png"), default="npz",
                   help="float depth as one <stem>.npz (default) or 16-bit PNG frames in <stem>_depth_frames/ (large clips)")
    g.add_argument("--frames-folder", action="store_true",
                   help="treat each folder given as ONE video made of its image files (natural order)")
    g.add_argument("--fps", type=float, metavar="F", help="frame rate of a --frames-folder clip (default 30)")


def options_from(args: argparse.Namespace) -> VideoOptions:
    return VideoOptions(stride=args.stride, max_frames=args.max_frames, batch_size=args.batch_size,
                        align=not args.no_align, cmap=args.colormap, side_by_side=args.side_by_side,
                        depth_format=args.depth_frames, fps=args.fps)


def run_clip(predictor: Predictor, path: Path, stem: str, out: Path, options: VideoOptions) -> VideoResult:
    """Predict one clip with a progress bar in frames; print its figures."""
    bar = tqdm(unit="frame", desc=path.name, file=sys.stderr, leave=False)
    shown = {"stage": None}

    def progress(stage: str, done: int, total: int | None) -> None:
        if shown["stage"] != stage:
            shown["stage"] = stage
            bar.reset(total=total)
            bar.set_description(f"{path.name} {stage}")
        bar.update(done - bar.n)

    try:
        result = predict_video(predictor, path, out, stem=stem, options=options, progress=progress)
    finally:
        bar.close()
    print(describe(result, out), file=sys.stderr)
    return result


def describe(result: VideoResult, out: Path) -> str:
    """One clip's figures: frames, size, fps, speed with and without the video work, files."""
    s = result.summary()
    e2e, inf = s["fps_end_to_end"], s["fps_inference"]
    overhead = f" ({100 * (inf / e2e - 1):.0f}% over inference alone)" if e2e and inf else ""
    scale = (f"; aligned scale {min(result.scale):.3g}..{max(result.scale):.3g}"
             if result.kind == "disparity" and result.frames else "")
    files = ", ".join(s["files"].values())
    return (f"{result.name}: {result.frames} frames {result.width}x{result.height} at {result.fps:g} fps, "
            f"{result.kind} ({result.unit}); {e2e} frames/s end to end, {inf} frames/s inference{overhead}"
            f"{scale} -> {out}/ {files}")
