"""Reading and writing videos with PyAV (FFmpeg inside the wheel), one frame at a time.

`VideoReader(path)` opens a video file (mp4, mov, webm, mkv, avi, ... whatever FFmpeg reads) or a
folder of frame images and yields `Frame(index, time_s, rgb)`, never holding more than the frame
being decoded:
- rotation metadata (the display matrix of phone videos) is applied, so frames are upright as a
  player shows them; `info.width`/`info.height` are the upright size;
- variable frame rate: each frame keeps its own presentation time (`time_s`); `info.fps` is the
  stream's average rate, which the writers use for an output with the same frame count;
- audio, subtitle and data streams are ignored;
- anything unusable raises `VideoError` naming the file and, once decoding started, the frame:
  not a video, no video stream, a frame that fails to decode, a file that ends before the frame
  count its header declares (truncated), a frame over the pixel cap.
A folder of frames: its image files in natural order (frame2 before frame10), all one size,
timed at `fps` (default 30) frames per second.

`VideoWriter(path, fps, width, height)` encodes RGB frames as H.264 (yuv420p, the format every
browser plays) in an mp4, padding odd sizes by one replicated pixel row/column.
"""
from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from ..errors import ImageError, VideoError
from ..files.dataset_layout import IMAGE_EXTENSIONS
from ..files.image_io import MAX_PIXELS, decode_image

VIDEO_EXTENSIONS = frozenset({".mp4", ".m4v", ".mov", ".webm", ".mkv", ".avi", ".mpg", ".mpeg", ".ogv", ".wmv",
                              ".flv", ".3gp", ".mts", ".m2ts"})     # not .ts: TypeScript sources share it
DEFAULT_FOLDER_FPS = 30.0
ENCODERS = ("libx264", "h264", "libopenh264", "mpeg4")       # first available wins


def is_video_file(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


@dataclass(frozen=True)
class VideoInfo:
    name: str
    width: int                  # upright (rotation applied)
    height: int
    fps: float                  # average frame rate
    frame_count: int | None     # as the container declares it (None: unknown)
    duration_s: float | None
    rotation: int               # degrees counter-clockwise applied to the decoded frames
    codec: str

    @property
    def fps_fraction(self) -> Fraction:
        return Fraction(self.fps).limit_denominator(1001)


@dataclass
class Frame:
    index: int                  # position in the source (0-based), before any stride
    time_s: float               # presentation time from the start of the clip
    rgb: np.ndarray             # (H, W, 3) uint8, upright


def _natural_key(name: str) -> list:
    return [int(p) if p.isdigit() else p.lower() for p in re.split(r"(\d+)", name)]


def _upright(rgb: np.ndarray, rotation: int) -> np.ndarray:
    """Apply a display rotation (degrees counter-clockwise, a multiple of 90)."""
    k = (round(rotation / 90)) % 4
    return np.ascontiguousarray(np.rot90(rgb, k)) if k else rgb


class VideoReader:
    """Frames of a video file or a folder of images; use as a context manager (closes the file)."""

    def __init__(self, path: str | os.PathLike, *, fps: float | None = None, max_pixels: int = MAX_PIXELS,
                 name: str | None = None):
        self.path = Path(path)
        self.name = name or self.path.name
        self.max_pixels = max_pixels
        self._container = None
        if not self.path.exists():
            raise VideoError(f"{self.name}: file not found")
        if fps is not None and not fps > 0:
            raise VideoError(f"{self.name}: the frame rate must be positive, got {fps}")
        self.info = self._open_folder(fps) if self.path.is_dir() else self._open_file()

    # ---- opening ------------------------------------------------------------------------
    def _open_folder(self, fps: float | None) -> VideoInfo:
        self._files = sorted((p for p in self.path.iterdir() if p.is_file() and not p.name.startswith(".")
                              and p.suffix.lower() in IMAGE_EXTENSIONS), key=lambda p: _natural_key(p.name))
        if not self._files:
            raise VideoError(f"{self.name}: the folder holds no image files to use as frames")
        first = self._decode_file(self._files[0], 0)
        h, w = first.shape[:2]
        rate = float(fps or DEFAULT_FOLDER_FPS)
        return VideoInfo(self.name, w, h, rate, len(self._files), len(self._files) / rate, 0, "images")

    def _open_file(self) -> VideoInfo:
        import av
        if self.path.stat().st_size == 0:
            raise VideoError(f"{self.name}: the file is empty (0 bytes)")
        try:
            self._container = av.open(str(self.path), "r")
        except (av.FFmpegError, OSError, ValueError) as e:
            raise VideoError(f"{self.name}: not a readable video, or damaged or truncated ({_why(e)})") from None
        if not self._container.streams.video:
            self.close()
            raise VideoError(f"{self.name}: has no video stream (audio only, or not a video)")
        stream = self._stream = self._container.streams.video[0]
        stream.thread_type = "AUTO"                   # frame/slice threads inside FFmpeg's decoder
        cc = stream.codec_context
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        if not rate or float(rate) <= 0:
            raise VideoError(f"{self.name}: the video stream declares no frame rate")
        duration = float(stream.duration * stream.time_base) if stream.duration and stream.time_base else None
        if duration is None and self._container.duration:
            duration = self._container.duration / 1_000_000          # AV_TIME_BASE microseconds
        rotation = self._peek_rotation()
        w, h = (cc.height, cc.width) if rotation % 180 else (cc.width, cc.height)
        if w < 1 or h < 1:
            raise VideoError(f"{self.name}: the video stream has no picture size")
        if w * h > self.max_pixels:
            raise VideoError(f"{self.name}: frames of {w}x{h} pixels exceed the limit of {self.max_pixels:,} "
                             "pixels; downscale the video first")
        return VideoInfo(self.name, w, h, float(rate), int(stream.frames) or None, duration, rotation,
                         cc.name)

    def _peek_rotation(self) -> int:
        """The display rotation, read from the first decoded frame (then decoding starts over)."""
        try:
            frame = next(self._container.decode(self._stream), None)
        except Exception as e:  # noqa: BLE001 - any FFmpeg error on the first frame
            raise VideoError(f"{self.name}: frame 0 cannot be decoded ({_why(e)})") from None
        if frame is None:
            raise VideoError(f"{self.name}: the video has no frames")
        rotation = int(round(getattr(frame, "rotation", 0) or 0))
        self._container.seek(0, stream=self._stream)
        return rotation

    # ---- frames -------------------------------------------------------------------------
    def frames(self, *, stride: int = 1, max_frames: int | None = None) -> Iterator[Frame]:
        """Every `stride`-th frame from the start, at most `max_frames` of them."""
        if stride < 1:
            raise VideoError(f"{self.name}: the frame stride must be at least 1, got {stride}")
        if max_frames is not None and max_frames < 1:
            raise VideoError(f"{self.name}: max frames must be at least 1, got {max_frames}")
        source = self._folder_frames(stride) if self._container is None else self._file_frames(stride)
        for n, frame in enumerate(source):
            if max_frames is not None and n >= max_frames:
                break
            yield frame

    def _folder_frames(self, stride: int) -> Iterator[Frame]:
        for index in range(0, len(self._files), stride):
            rgb = self._decode_file(self._files[index], index)
            if rgb.shape[:2] != (self.info.height, self.info.width):
                raise VideoError(f"{self.name}: frame {index} ({self._files[index].name}) is "
                                 f"{rgb.shape[1]}x{rgb.shape[0]} pixels, the first frame "
                                 f"{self.info.width}x{self.info.height}; every frame must have one size")
            yield Frame(index, index / self.info.fps, rgb)

    def _decode_file(self, path: Path, index: int) -> np.ndarray:
        try:
            return decode_image(path, max_pixels=self.max_pixels, name=path.name).rgb
        except ImageError as e:
            raise VideoError(f"{self.name}: frame {index}: {e}") from None

    def _file_frames(self, stride: int) -> Iterator[Frame]:
        import av
        info, stream = self.info, self._stream
        # decoded size before rotation: every frame is converted to it (a mid-stream size change is rescaled)
        dw, dh = (info.height, info.width) if info.rotation % 180 else (info.width, info.height)
        index, start = 0, None
        decoder = self._container.decode(stream)
        while True:
            try:
                frame = next(decoder)
            except StopIteration:
                break
            except (av.FFmpegError, ValueError, OSError) as e:
                raise VideoError(f"{self.name}: frame {index} cannot be decoded ({_why(e)}); the file is damaged "
                                 "or truncated") from None
            t = frame.time if frame.time is not None else index / info.fps
            start = t if start is None else start
            if index % stride == 0:
                rgb = frame.to_ndarray(format="rgb24", width=dw, height=dh)     # (h, w, 3) uint8
                yield Frame(index, max(0.0, t - start), _upright(rgb, info.rotation))
            index += 1
        declared = info.frame_count
        if declared and index < declared - 1:       # containers may count one frame the decoder drops
            raise VideoError(f"{self.name}: truncated: the file declares {declared} frames but frame {index} "
                             "and later ones are missing")
        if index == 0:
            raise VideoError(f"{self.name}: the video has no decodable frames")

    def close(self) -> None:
        if self._container is not None:
            self._container.close()
            self._container = None

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _why(e: Exception) -> str:
    """FFmpeg's reason without the errno prefix and the trailing path or function name."""
    text = str(e).strip() or type(e).__name__
    text = re.sub(r"^\[Errno -?\d+\]\s*", "", text)
    return text.split(": '")[0] if ": '" in text else text


class VideoWriter:
    """H.264 mp4 (yuv420p) at a constant `fps`; `write(rgb)` one (H, W, 3) uint8 frame at a time."""

    def __init__(self, path: str | os.PathLike, fps: float | Fraction, width: int, height: int, *, crf: int = 18):
        import av
        self.path = Path(path)
        self.size = (int(width), int(height))
        self.frames = 0
        rate = fps if isinstance(fps, Fraction) else Fraction(float(fps)).limit_denominator(1001)
        try:
            self._container = av.open(str(self.path), "w", options={"movflags": "+faststart"})
        except (av.FFmpegError, OSError) as e:
            raise VideoError(f"cannot write {self.path}: {_why(e)}") from None
        self._stream = self._add_stream(rate, crf)

    def _add_stream(self, rate: Fraction, crf: int):
        import av
        width, height = (s + s % 2 for s in self.size)                 # yuv420p needs even sides
        for codec in ENCODERS:
            try:
                stream = self._container.add_stream(codec, rate=rate)
            except (av.FFmpegError, ValueError):
                continue
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            if codec == "libx264":
                stream.options = {"crf": str(crf), "preset": "veryfast"}
            return stream
        self._container.close()
        raise VideoError(f"cannot write {self.path}: this FFmpeg build has none of the encoders {', '.join(ENCODERS)}")

    def write(self, rgb: np.ndarray) -> None:
        import av
        w, h = self.size
        if rgb.shape != (h, w, 3) or rgb.dtype != np.uint8:
            raise ValueError(f"expected uint8 ({h}, {w}, 3) frames, got {rgb.dtype} {rgb.shape}")
        if (w % 2) or (h % 2):
            rgb = np.pad(rgb, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        try:
            for packet in self._stream.encode(frame):
                self._container.mux(packet)
        except (av.FFmpegError, OSError) as e:
            raise VideoError(f"cannot write {self.path}: {_why(e)}") from None
        self.frames += 1

    def close(self) -> None:
        if self._container is None:
            return
        try:
            for packet in self._stream.encode():                        # flush the encoder
                self._container.mux(packet)
        finally:
            self._container.close()
            self._container = None

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
