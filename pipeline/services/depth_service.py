"""The depth explorer's service: what the studio's depth tab (and its API) calls. No gradio here.

`DepthService(settings)` owns:
- the model choices (the public checkpoint registry, a `--checkpoint` file, and pluggable
  sources such as the students registered in the label store: pipeline/services/depth_models.py);
- a thread-safe model cache (pipeline/services/depth_models.py): a model loads once per (choice, device) and is reused;
- the "weights missing" state: when a checkpoint cannot be had, the model runs with untrained
  weights and `notice()` says which weights are missing and how to supply them;
- one request end to end, `run(image, ...) -> DepthResult`: decode, predict, and the light set of
  files in a per-request folder (pipeline.services.depth_outputs: colour PNG, .npy and the exact pixels;
  the slider JPEG, 16-bit PNG and viewer's point cloud when first asked), with timings; `results` (pipeline.services.depth_results) re-colours, measures
  and builds the full-resolution exports of a finished request when asked.
"""
from __future__ import annotations

import shutil
import time
import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..config import PATCH_SIZE, ModelConfig
from ..errors import CheckpointError, ConfigError, ImageError
from ..files import depth_png
from ..files.image_io import DecodedImage, decode_image
from ..geometry import measure, pointcloud
from ..predictor import Prediction, Predictor, pick_device
from ..preprocess import MAX_INPUT_SIZE, network_size
from ..ranges import Range
from ..settings import COLORMAPS, StudioSettings
from ..weights import registry as checkpoint_registry
from ..weights.loading import load_model, untrained_model
from . import depth_outputs
from .depth_models import (
    ChoiceSource,
    LoadedModel,
    ModelCache,
    ModelChoice,
    file_choice,
    missing_weights_message,
    registry_choices,
)
from .depth_results import DepthResults

Progress = Callable[[float, str], None]
# Every number /predict takes, checked here whatever the widget allowed (pipeline/ranges.py).
RANGES = {
    "input_size": Range("input size", PATCH_SIZE, MAX_INPUT_SIZE, integer=True, multiple_of=PATCH_SIZE,
                        optional=True),
    "focal_px": Range("focal length (pixels)", 1, 1e6, optional=True),              # 0: EXIF or 60°
    "voxel_size": Range("voxel size", 1e-4, 1e4, optional=True),                     # 0: every point
}


@dataclass
class DepthResult:
    array: np.ndarray                  # float32 (H, W): disparity or metres, see kind
    kind: str                          # "disparity" | "metric_depth"
    unit: str
    folder: Path
    files: dict[str, Path]             # input, color, depth16, npy, ply (the viewer's cloud; none when no cloud);
                                       # input, depth16 and (unfiltered) ply are made when first asked:
                                       # results.files(request id)
    summary: dict = field(default_factory=dict)


def _jsonable(x):
    """numpy scalars and paths in metadata -> plain JSON values."""
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.generic):
        return x.item()
    return x if isinstance(x, (str, int, float, bool, type(None))) else str(x)


def _timed(fn, *args):
    """(fn(*args), seconds it took)."""
    s = time.perf_counter()
    return fn(*args), time.perf_counter() - s


class DepthService:
    def __init__(self, settings: StudioSettings, *, sources: Iterable[ChoiceSource] = (registry_choices,),
                 default: str | None = None, max_models: int = 3):
        self.settings = settings.ensure_dirs()
        self.device = str(pick_device(settings.device))       # cuda when available, else cpu
        self.sources = list(sources)
        self.cache = ModelCache(max_models)
        self._extra: dict[str, ModelChoice] = {}
        self._notices: dict[str, str] = {}
        self._last_cleanup = 0.0
        self._pool = ThreadPoolExecutor(max_workers=3, thread_name_prefix="depth-outputs")
        self.results = DepthResults(self.settings)              # re-colour, measure, export a finished request
        self.default_key = self.add_checkpoint(default or settings.checkpoint)

    # ---- model choices -------------------------------------------------------------------
    def add_checkpoint(self, source: str) -> str:
        """Register a registry name or a checkpoint file; returns its choice key."""
        if source in {c.key for c in self._source_choices()}:
            return source
        path = Path(source).expanduser()
        if not path.suffix and not path.exists():
            raise ConfigError(f"{source!r} is neither a known checkpoint name ("
                              f"{', '.join(checkpoint_registry.KNOWN)}) nor a checkpoint file")
        choice = file_choice(path)
        self._extra[choice.key] = choice
        return choice.key

    def _source_choices(self) -> list[ModelChoice]:
        return [c for source in self.sources for c in source()]

    def choices(self) -> list[ModelChoice]:
        seen, out = set(), []
        for c in [*self._extra.values(), *self._source_choices()]:
            if c.key not in seen:
                seen.add(c.key)
                out.append(c)
        return out

    def choice(self, key: str | None) -> ModelChoice:
        key = key or self.default_key
        for c in self.choices():
            if c.key == key:
                return c
        raise ConfigError(f"unknown model {key!r}; choose one of: {', '.join(c.key for c in self.choices())}")

    # ---- models --------------------------------------------------------------------------
    def model(self, key: str | None = None) -> LoadedModel:
        """The loaded model for a choice, from the cache when already loaded."""
        choice = self.choice(key)
        loaded = self.cache.get((choice.key, self.device), lambda: self._load(choice))
        if loaded.notice:
            self._notices[choice.key] = loaded.notice
        return loaded

    def _load(self, choice: ModelChoice) -> LoadedModel:
        try:
            loaded = LoadedModel(choice, load_model(choice.source, device=self.device), self.device)
        except CheckpointError as e:   # WeightsUnavailable (offline, no cache), unreadable file, ...
            ckpt = untrained_model(choice.config or ModelConfig())
            ckpt.model.to(self.device)
            loaded = LoadedModel(choice, ckpt, self.device, missing_weights_message(choice, e))
        self.predictor(loaded)         # export/compile the backend now, with the load, not in a request
        return loaded

    def predictor(self, loaded: LoadedModel, input_size: int | None = None) -> Predictor:
        """The Predictor for a loaded model at an input size on the configured backend, made once and kept
        with the model (making one moves the network to its device and checks the backend: ~10 ms a
        request on CPU otherwise). It still notices weights changed in place: its runner is rebuilt."""
        key = (self.settings.backend, int(input_size or self.settings.input_size))
        predictor = loaded.predictors.get(key)
        if predictor is None:
            predictor = loaded.predictors.setdefault(key, Predictor(
                loaded.checkpoint, device=loaded.device, backend=key[0], input_size=key[1]))
        return predictor

    def notice(self, key: str | None = None) -> str | None:
        """The banner text: missing weights of `key`, or of every model that fell back when None."""
        if key is not None:
            return self._notices.get(self.choice(key).key)
        return "\n\n".join(self._notices.values()) or None

    def weights_problem(self, key: str | None = None) -> str | None:
        """Why a choice would run with untrained weights, known without loading or downloading; None if none known.

        Registry weights: not cached while the Hub is offline (pipeline.weights.hub's one quick probe); files:
        missing. Answers in well under a second, offline included.
        """
        choice = self.choice(key)
        if choice.key in self._notices:
            return "its weights could not be loaded (see the banner)"
        if choice.kind == "registry":
            return checkpoint_registry.availability(choice.source)
        if not Path(choice.source).exists():
            return f"the file {Path(choice.source).name} is missing"
        return None

    def infer(self, rgb: np.ndarray, key: str | None = None, input_size: int | None = None) -> Prediction:
        """The network step alone (what a GPU decorator wraps): uint8 (H, W, 3) -> Prediction."""
        return self.predictor(self.model(key), input_size).predict(rgb)

    # ---- one request ---------------------------------------------------------------------
    def decode(self, image) -> DecodedImage:
        if image is None:
            raise ImageError("no image given: upload, paste or take a picture first")
        name = Path(image).name if isinstance(image, (str, Path)) else None   # never the server's temp path
        decoded = decode_image(image, max_pixels=self.settings.max_pixels, name=name)
        h, w = decoded.rgb.shape[:2]
        if min(h, w) < self.settings.min_side:
            raise ImageError(f"{decoded.name or 'the image'} is {w}x{h} pixels; depth needs at least "
                             f"{self.settings.min_side} pixels a side. Use a larger image.")
        return decoded

    def run(self, image, model: str | None = None, input_size: int | None = None, cmap: str | None = None,
            focal_px: float | None = None, voxel_size: float | None = None, remove_outliers: bool = False,
            vmin: float | None = None, vmax: float | None = None,
            *, infer: Callable[..., Prediction] | None = None, progress: Progress | None = None) -> DepthResult:
        """Decode, predict and write the request's light set of files (pipeline.services.depth_outputs).

        `infer` replaces `self.infer` (GPU wrap). The full-resolution cloud and the other formats are
        built later, when asked (`self.results.exports`).
        """
        progress = progress or (lambda f, msg: None)
        input_size, focal_px, voxel_size = (RANGES[k].check(v) for k, v in (
            ("input_size", input_size), ("focal_px", focal_px), ("voxel_size", voxel_size)))
        cmap = cmap or self.settings.cmap
        if cmap not in COLORMAPS:
            raise ConfigError(f"unknown colour map {cmap!r}; choose one of {', '.join(COLORMAPS)}")
        vmin, vmax = depth_outputs.check_range(vmin, vmax)
        t = {}
        t0 = time.perf_counter()
        decoded = self.decode(image)
        network_size(*decoded.rgb.shape[:2], input_size or self.settings.input_size, name=decoded.name)  # refused now, named
        t["decode"] = time.perf_counter() - t0
        progress(0.1, "loading model")
        loaded, t["model_load"] = _timed(self.model, model)       # outside the GPU call: loads once, then cached
        progress(0.2, "predicting depth")
        prediction, t["inference"] = _timed(infer or self.infer, decoded.rgb, loaded.choice.key, input_size)
        progress(0.7, "writing outputs")
        request = self._new_request(decoded, prediction, loaded, cmap, focal_px, voxel_size, remove_outliers,
                                    vmin, vmax)
        result = self._render(request, decoded, prediction, t)
        result.summary.update(self._describe(loaded, prediction, input_size))
        result.summary["timings_ms"]["total"] = round(1000 * (time.perf_counter() - t0), 1)
        progress(1.0, "done")
        return result

    def _new_request(self, decoded: DecodedImage, prediction: Prediction, loaded: LoadedModel, cmap: str,
                     focal_px, voxel_size, remove_outliers: bool, vmin, vmax) -> depth_outputs.Request:
        folder = self._request_folder()
        h, w = prediction.array.shape
        focal, focal_source = pointcloud.resolve_focal(w, h, focal_px or None, decoded.focal_px)
        record = depth_outputs.RequestRecord(
            id=folder.name, stem=depth_outputs.safe_stem(decoded.name), name=decoded.name or "image", kind=prediction.kind,
            unit=prediction.unit, width=w, height=h, focal_px=float(focal), focal_source=focal_source,
            model=loaded.choice.key, model_title=loaded.choice.title, cmap=cmap, vmin=vmin, vmax=vmax,
            voxel_size=float(voxel_size) if voxel_size else None, remove_outliers=bool(remove_outliers),
            viewer_points=self.settings.max_viewer_points, cloud_with_request=bool(voxel_size or remove_outliers))
        request = depth_outputs.Request(folder, record)
        request.save()
        return request

    def _render(self, request: depth_outputs.Request, decoded: DecodedImage, prediction: Prediction,
                t: dict) -> DepthResult:
        """The colour map and what /predict sends (.npy, colour PNG, and the pixels); the viewer's cloud is
        counted (summary) and made when first asked (`results.files`), like the slider JPEG and the
        16-bit PNG, unless a voxel or outlier filter needs it built to count: then it is written in a
        parallel thread beside the files (PNG/zlib and numpy release the GIL).

        timings_ms holds each stage's own time; the file stages overlap, so they add up to more
        than the wall time they took together."""
        r = request.record
        files = request.basic_paths()
        array = prediction.array                                         # (H, W) float32
        cloud = self._pool.submit(
            _timed, depth_outputs.write_viewer_cloud, files["ply"], decoded.rgb, array, r.kind, r.focal_px,
            r.viewer_points, r.voxel_size, r.remove_outliers) if r.cloud_with_request else None
        color, t["color_map"] = _timed(depth_outputs.colour_picture, array, r.kind, r.cmap, r.vmin, r.vmax)
        _, t["sent_files"] = _timed(depth_outputs.write_sent, request, decoded.rgb, array, color)
        (points, step, cloud_note), t["point_cloud"] = (
            cloud.result() if cloud else _timed(depth_outputs.viewer_cloud_size, array, r.kind, r.viewer_points))
        if not points:
            files.pop("ply")
        summary = {
            "request": r.id, "image": decoded.name, "width": r.width, "height": r.height,
            "min": float(np.min(array)), "max": float(np.max(array)), "vmin": r.vmin, "vmax": r.vmax,
            "focal_px": round(r.focal_px, 2), "focal_source": r.focal_source,
            "fov_deg": {k: round(v, 2) for k, v in measure.field_of_view(r.width, r.height, r.focal_px).items()
                        if k.endswith("_deg")},
            "points": int(points), "point_stride": step, "cloud_axes": pointcloud.VIEWER_AXES, "cloud_note": cloud_note,
            "exports": list(depth_outputs.EXPORTS),
            "depth16": _jsonable(depth_png.png_metadata(array, prediction.kind)),
            "timings_ms": {k: round(1000 * v, 1) for k, v in t.items()},
        }
        return DepthResult(array, prediction.kind, prediction.unit, request.folder, files, summary)

    def _describe(self, loaded: LoadedModel, prediction: Prediction, input_size) -> dict:
        return {"model": loaded.choice.key, "model_title": loaded.choice.title, "licence": loaded.choice.licence,
                "model_id": prediction.model_id, "untrained": loaded.untrained, "notice": loaded.notice,
                "kind": prediction.kind, "unit": prediction.unit, "device": prediction.device,
                "backend": prediction.backend,
                "input_size": int(input_size or self.settings.input_size)}

    def new_request_folder(self) -> Path:
        """A fresh folder for one request's outputs (served to the page; removed after request_max_age_s)."""
        return self._request_folder()

    def _request_folder(self) -> Path:
        self._cleanup_old_requests()
        folder = self.settings.temp_dir / f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}"
        folder.mkdir(parents=True)
        return folder

    def _cleanup_old_requests(self, every_s: float = 600.0) -> None:
        now = time.time()
        if now - self._last_cleanup < every_s:
            return
        self._last_cleanup = now
        for d in self.settings.temp_dir.iterdir():
            try:
                if d.is_dir() and now - d.stat().st_mtime > self.settings.request_max_age_s:
                    shutil.rmtree(d)   # with its colour-<n>/ and zip-<digest>/ folders
            except OSError:
                pass                   # another request is using or removing it
