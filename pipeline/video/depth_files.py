"""Where a clip's float depth goes, frame by frame: a streamed `.npz` or a folder of 16-bit PNGs.

`<stem>.npz` (written without holding the clip in memory: the `depth` member is streamed into the
zip frame after frame, uncompressed, so `np.load(path)["depth"]` reads it as one array):
    depth        float32 (T, H, W) at the input resolution (disparity or metres, see kind)
    fps          float, the frame rate of the depth video (input fps / stride)
    kind, unit   "disparity" | "metric_depth", "relative disparity" | "m"
    scale, shift float64 (T,): depth[t] = scale[t] * prediction[t] + shift[t] (temporal alignment)
    times        float64 (T,) seconds of each frame in the source; frame_index int64 (T,)
    model_id, vmin, vmax   the model, and the one colour range of the depth video
With `png` frames, `<stem>_depth_frames/000000.png ...` hold the depth (pipeline.files.depth_png: each frame
spread over 0..65535 with its own scale/offset recorded) and `<stem>.npz` the rest, without `depth`.
Every array is a plain .npy member: `np.load` never needs pickle.
"""
from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np

from ..errors import StudioError
from ..files import depth_png

FORMATS = ("npz", "png")


def _npy_bytes(value) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.asarray(value), allow_pickle=False)
    return buf.getvalue()


class DepthFramesWriter:
    """`write(frame)` T times, then `close(meta)`; `frames`, `height`, `width` fixed up front."""

    def __init__(self, npz_path: str | Path, frames: int, height: int, width: int, *, fmt: str = "npz"):
        if fmt not in FORMATS:
            raise StudioError(f"unknown depth frame format {fmt!r}; use one of {', '.join(FORMATS)}")
        self.npz_path = Path(npz_path)
        self.shape = (int(frames), int(height), int(width))
        self.fmt = fmt
        self.written = 0
        self.png_dir = self.npz_path.with_name(f"{self.npz_path.stem}_depth_frames") if fmt == "png" else None
        self._zip = zipfile.ZipFile(self.npz_path, "w", zipfile.ZIP_STORED, allowZip64=True)
        self._member = None
        if fmt == "npz":
            self._member = self._zip.open("depth.npy", "w", force_zip64=True)
            header = {"descr": "<f4", "fortran_order": False, "shape": self.shape}
            np.lib.format.write_array_header_2_0(self._member, header)
        else:
            self.png_dir.mkdir(exist_ok=True)

    def write(self, frame: np.ndarray, kind: str | None = None) -> None:
        if frame.shape != self.shape[1:]:
            raise ValueError(f"frame of shape {frame.shape}, expected {self.shape[1:]}")
        if self.written >= self.shape[0]:
            raise ValueError(f"all {self.shape[0]} frames are written already")
        if self._member is not None:
            self._member.write(np.ascontiguousarray(frame, dtype="<f4").tobytes())
        else:
            depth_png.write_depth_png(self.png_dir / f"{self.written:06d}.png", frame, kind=kind)
        self.written += 1

    def close(self, meta: dict) -> Path:
        """Finish the depth member and add the per-clip and per-frame arrays of `meta`."""
        if self.written != self.shape[0]:
            raise ValueError(f"{self.written} frames written, {self.shape[0]} announced")
        if self._member is not None:
            self._member.close()
            self._member = None
        for key, value in meta.items():
            self._zip.writestr(f"{key}.npy", _npy_bytes(value))
        self._zip.close()
        return self.npz_path

    def abort(self) -> None:
        """Close without finishing (after an error); the partial file is removed."""
        try:
            if self._member is not None:
                self._member.close()
            self._zip.close()
        except (OSError, ValueError, zipfile.BadZipFile):
            pass
        self.npz_path.unlink(missing_ok=True)
