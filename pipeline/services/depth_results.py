"""What can be done with a depth request after it ran: re-colour, read out, measure, export. No gradio here.

A request is named by its id (the `request` field of a /predict summary: its folder under the
studio's temp folder, see pipeline.services.depth_outputs). Nothing here runs the network: every call reads
the request's saved prediction, so these answer in milliseconds (exports: about a second).
"""
from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

from PIL import Image

from ..atomic import atomic_path
from ..errors import ConfigError
from ..geometry import measure
from ..settings import COLORMAPS, StudioSettings
from . import depth_outputs, depth_readout
from .depth_outputs import Request, check_range

Progress = Callable[[float, str], None]


def legend(array, kind: str, cmap: str, vmin: float | None, vmax: float | None, focal_px: float,
           *, grid_side: int = 160) -> dict:
    """Everything the read-out panel shows: colour bar, histogram, hover grid, field of view."""
    lo, hi = depth_readout.value_range(array, vmin, vmax)
    h, w = array.shape
    return {"kind": kind, "bar": depth_readout.colour_bar(kind, cmap, lo, hi),
            "histogram": depth_readout.histogram(array, lo, hi), "grid": depth_readout.hover_grid(array, grid_side),
            "clipped": vmin is not None or vmax is not None, "width": w, "height": h,
            "fov": measure.field_of_view(w, h, focal_px)}


class DepthResults:
    def __init__(self, settings: StudioSettings):
        self.settings = settings

    def open(self, request_id: str) -> Request:
        return depth_outputs.open_request(self.settings.temp_dir, request_id)

    def files(self, request_id: str) -> dict[str, Path]:
        """Every file of the request's light set ({"input", "color", "depth16", "npy", "ply"}), the ones
        /predict did not wait for made now (once)."""
        return depth_outputs.complete(self.open(request_id))

    def legend(self, request_id: str) -> dict:
        req = self.open(request_id)
        r = req.record
        return legend(req.array(), r.kind, r.cmap, r.vmin, r.vmax, r.focal_px)

    def recolour(self, request_id: str, cmap: str | None = None, vmin: float | None = None,
                 vmax: float | None = None) -> tuple[Path, dict]:
        """A new colour picture over [vmin, vmax] (None: the data's own) -> (colour PNG, legend)."""
        cmap = cmap or self.settings.cmap
        if cmap not in COLORMAPS:
            raise ConfigError(f"unknown colour map {cmap!r}; choose one of {', '.join(COLORMAPS)}")
        vmin, vmax = check_range(vmin, vmax)
        req = self.open(request_id)
        r, array = req.record, req.array()
        color = depth_outputs.colour_picture(array, r.kind, cmap, vmin, vmax)
        before = req.colour_path()
        path = req.colour_path(r.recoloured + 1)                  # a new path: the page's URL changes with it
        path.parent.mkdir(exist_ok=True)
        with atomic_path(path, durable=False) as tmp:
            depth_outputs.save_colour_png(color, tmp)
        r.cmap, r.vmin, r.vmax, r.recoloured = cmap, vmin, vmax, r.recoloured + 1
        req.save()
        if r.recoloured > 1:                                      # the first picture stays: /predict sent it
            shutil.rmtree(before.parent, ignore_errors=True)
        return path, legend(array, r.kind, cmap, vmin, vmax, r.focal_px)

    def measure(self, request_id: str, points) -> dict:
        """depth_readout.measure_points on the request's prediction, with its focal length."""
        req = self.open(request_id)
        return depth_readout.measure_points(req.array(), req.record.kind, req.record.focal_px, points)

    def colour_rgb(self, request_id: str):
        """(H, W, 3) uint8 of the request's current colour picture (for drawing clicked points on)."""
        import numpy as np
        with Image.open(self.open(request_id).colour_path()) as im:
            return np.asarray(im.convert("RGB"))

    def exports(self, request_id: str, keys, *, zip_all: bool = True,
                progress: Progress | None = None) -> tuple[list[Path], Path | None]:
        """Build the asked-for formats (once) -> (every file of the request, one zip of them all or None)."""
        req = self.open(request_id)
        built = depth_outputs.build_exports(req, keys, progress)
        files = [*depth_outputs.complete(req).values(), *(p for paths in built.values() for p in paths)]
        return files, depth_outputs.zip_outputs(req, files) if zip_all else None
