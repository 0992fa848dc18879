"""Several images at once for the depth tab: one model, every image's files, one zip. No gradio here.

`run_batch(service, images, ...)` decodes each image, predicts it with the depth service's cached
model (one at a time, through the same `infer` the single-image request uses, so a GPU decorator
wraps each call), and writes per image into one request folder:
    <stem>_depth.npy, <stem>_depth16.png (values recoverable), <stem>_depth_color.png
plus `depth_batch.zip` holding them all. An image that cannot be read is reported and skipped;
the others go on. Stems that collide get _2, _3, ...
"""
from __future__ import annotations

import time
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import ConfigError, ImageError, StudioError
from ..files import depth_png
from ..settings import COLORMAPS
from . import depth_outputs
from .depth_service import RANGES

Progress = Callable[[float, str], None]
ZIP_NAME = "depth_batch.zip"


@dataclass
class BatchItem:
    name: str
    color: Path                       # the colour picture (the gallery shows it)
    files: list[Path]
    min: float
    max: float


@dataclass
class BatchResult:
    folder: Path
    items: list[BatchItem]
    failures: list[str]
    zip_path: Path | None
    summary: dict = field(default_factory=dict)


def _unique(stem: str, used: set[str]) -> str:
    out, n = stem, 1
    while out in used:
        n += 1
        out = f"{stem}_{n}"
    used.add(out)
    return out


def run_batch(service, images: Sequence, model: str | None = None, input_size: int | None = None,
              cmap: str | None = None, *, infer: Callable | None = None,
              progress: Progress | None = None) -> BatchResult:
    """Predict every image (paths, bytes, arrays: anything decode accepts) -> files, gallery items, one zip."""
    progress = progress or (lambda fraction, message: None)
    images = list(images or [])
    cap = service.settings.max_batch_images
    if not images:
        raise ImageError("no images given: choose several image files first")
    if len(images) > cap:
        raise ConfigError(f"{len(images)} images is more than the {cap} a batch takes here; split them, or use "
                          "`python -m pipeline predict FOLDER --out DIR` for any number")
    cmap = cmap or service.settings.cmap
    if cmap not in COLORMAPS:
        raise ConfigError(f"unknown colour map {cmap!r}; choose one of {', '.join(COLORMAPS)}")
    input_size = RANGES["input_size"].check(input_size)            # the same range as /predict
    t0 = time.perf_counter()
    progress(0.02, "loading model")
    loaded = service.model(model)
    folder = service.new_request_folder()
    items, failures, used = [], [], set()
    for i, image in enumerate(images):
        label = Path(str(image)).name if isinstance(image, (str, Path)) else f"image {i + 1}"
        progress(0.05 + 0.85 * i / len(images), f"image {i + 1} of {len(images)}: {label}")
        try:
            decoded = service.decode(image)
            prediction = (infer or service.infer)(decoded.rgb, loaded.choice.key, input_size)
            stem = _unique(depth_outputs.safe_stem(label), used)
            items.append(_write(folder, stem, label, prediction, cmap))
        except StudioError as e:
            failures.append(f"{label}: {e}")
    progress(0.92, "packing the zip")
    zip_path = _zip(folder, [f for item in items for f in item.files]) if items else None
    progress(1.0, "done")
    summary = {"images": len(items), "failed": failures, "model": loaded.choice.key, "model_title": loaded.choice.title,
               "kind": loaded.checkpoint.config.output_kind, "untrained": loaded.untrained, "notice": loaded.notice,
               "seconds": round(time.perf_counter() - t0, 2)}
    return BatchResult(folder, items, failures, zip_path, summary)


def _write(folder: Path, stem: str, name: str, prediction, cmap: str) -> BatchItem:
    array = prediction.array                                                # (H, W) float32
    files = [folder / f"{stem}_depth.npy", folder / f"{stem}_depth16.png", folder / f"{stem}_depth_color.png"]
    try:
        np.save(files[0], array.astype(np.float32, copy=False))
        depth_png.write_depth_png(files[1], array, kind=prediction.kind)
        depth_outputs.save_colour_png(depth_outputs.colour_picture(array, prediction.kind, cmap), files[2])
    except OSError as e:
        raise StudioError(f"cannot write the files of {name}: {e.strerror or e}") from None
    finite = array[np.isfinite(array)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (float("nan"), float("nan"))
    return BatchItem(name, files[2], files, lo, hi)


def _zip(folder: Path, files: list[Path]) -> Path:
    path = folder / ZIP_NAME
    with zipfile.ZipFile(path, "w", compresslevel=1) as z:
        for f in files:
            z.write(f, f.name, compress_type=zipfile.ZIP_STORED if f.suffix == ".png" else zipfile.ZIP_DEFLATED)
    return path
