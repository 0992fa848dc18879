"""Frames of a video into the label store, at a chosen rate, as images grouped by clip and frame time.

`import_video(store, path, report, rate=1.0)` decodes the clip once, frame by frame, and keeps the
first frame at or after each multiple of 1/rate seconds (so a variable-frame-rate clip is sampled
by time, not by frame count). Each kept frame is stored as a lossless PNG (the stored bytes ARE
the frame: no second lossy encode), named `<stem>_t<seconds>.png`, with `clip` =
`<file name>#<first 12 hex of the video's sha256>` and its `frame_time` / `frame_index`, so the
gallery can show one clip's frames in order and a clip imported twice adds nothing new.
A frame identical to an image already in the store is reported as a duplicate; a video that
fails part way keeps the frames added so far and is reported as rejected with the frame named.
"""
from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path, PurePosixPath

from PIL import Image

from ..errors import ConfigError, VideoError
from ..files.image_io import MAX_PIXELS
from ..store import Store
from ..store.blobs import sha256_bytes
from ..video.io import VideoReader
from .report import Duplicate, ImportReport

DEFAULT_RATE = 1.0           # frames per second taken from a video


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def clip_id(name: str, sha256: str) -> str:
    return f"{PurePosixPath(name).name}#{sha256[:12]}"


def check_rate(rate: float | None) -> float:
    rate = DEFAULT_RATE if rate is None else float(rate)
    if not rate > 0:
        raise ConfigError(f"the video frame rate to import must be positive (frames per second), got {rate}")
    return rate


def import_video(store: Store, path: str | os.PathLike, report: ImportReport, *, name: str | None = None,
                 rate: float | None = None, source: str = "cli", author: str = "system",
                 max_pixels: int = MAX_PIXELS) -> None:
    """Add the frames of one clip (every 1/rate seconds) to `store`; outcomes go into `report`."""
    rate = check_rate(rate)
    name = name or Path(path).name
    try:
        clip = clip_id(name, file_sha256(path))
        with VideoReader(path, max_pixels=max_pixels, name=name) as reader:
            next_time = 0.0
            for frame in reader.frames():
                if frame.time_s + 1e-6 < next_time:
                    continue
                next_time = (int(frame.time_s * rate + 1e-6) + 1) / rate
                _add_frame(store, report, clip, name, frame, source, author)
    except OSError as e:
        report.rejected.append((name, f"cannot be read: {e.strerror or e}"))
    except VideoError as e:
        report.rejected.append((name, _reason(str(e), name)))


def _add_frame(store: Store, report: ImportReport, clip: str, name: str, frame, source: str, author: str) -> None:
    buf = io.BytesIO()
    Image.fromarray(frame.rgb).save(buf, format="PNG", compress_level=6)
    data = buf.getvalue()
    frame_name = f"{PurePosixPath(name).stem}_t{frame.time_s:09.3f}s.png"
    existing = store.find_image(sha256_bytes(data))
    if existing is not None:
        report.duplicates.append(Duplicate(f"{name} @ {frame.time_s:.3f} s", existing.id, existing.name))
        return
    h, w = frame.rgb.shape[:2]
    record, created = store.add_image(data, frame_name, width=w, height=h, source=source,
                                      author=author, clip=clip, frame_time=frame.time_s, frame_index=frame.index)
    if created:
        report.added.append(record)
    else:
        report.duplicates.append(Duplicate(f"{name} @ {frame.time_s:.3f} s", record.id, record.name))


def _reason(message: str, name: str) -> str:
    prefix = f"{name}: "
    return message[len(prefix):] if message.startswith(prefix) else message
