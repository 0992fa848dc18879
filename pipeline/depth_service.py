"""The depth explorer's service: what the studio's depth tab (and its API) calls. No gradio here.

`DepthService(settings)` owns:
- the model choices (the public checkpoint registry, a `--checkpoint` file, and pluggable
  sources such as the students registered in the label store);
- a thread-safe model cache: a model loads once per (choice, device) and is reused;
- the "weights missing" state: when a checkpoint cannot be had, the model runs with untrained
  weights and `notice()` says which weights are missing and how to supply them;
- one request end to end, `run(image, ...) -> DepthResult`: decode, predict, colour map,
  grayscale, 16-bit PNG, .npy, colour PNG and .ply in a per-request folder, with timings.
"""
from __future__ import annotations

import math
import re
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
from PIL import Image

from . import checkpoint_registry, depth_png, pointcloud, render
from .checkpoints import LoadedCheckpoint, load_model, untrained_model
from .config import ModelConfig
from .errors import CheckpointError, ConfigError, ImageError
from .image_io import DecodedImage, decode_image
from .predictor import Prediction, Predictor, pick_device
from .settings import COLORMAPS, StudioSettings

Progress = Callable[[float, str], None]


@dataclass(frozen=True)
class ModelChoice:
    key: str                          # what the UI/API passes back: registry name, "file:<name>", "trained:<id>"
    title: str
    licence: str
    source: str                       # what load_model() is given
    kind: str                         # "registry" | "file" | "trained"
    config: ModelConfig | None = None  # for the untrained stand-in when the weights are missing
    note: str = ""

    @property
    def label(self) -> str:
        return f"{self.title} ({self.licence})"


ChoiceSource = Callable[[], Iterable[ModelChoice]]


def registry_choices() -> list[ModelChoice]:
    """The public checkpoints of the registry (V1/V2 sizes, metric indoor/outdoor)."""
    out = []
    for name, k in checkpoint_registry.KNOWN.items():
        out.append(ModelChoice(name, k.title, k.licence, name, "registry", k.config, f"{k.repo_id}/{k.filename}"))
    return out


def file_choice(path: str | Path, licence: str = "licence of the supplied file") -> ModelChoice:
    path = Path(path)
    # the key names the file only: the API shows it, and the server's folders are nobody's business
    return ModelChoice(f"file:{path.name}", f"{path.name} (local file)", licence, str(path), "file", None, path.name)


def store_choices(db_path: str | Path) -> ChoiceSource:
    """Students trained by this project and registered in the label store (docs/STORE.md).

    Read on every call, so a run that finishes while the studio is up appears without a restart.
    Empty while the database does not exist (listing never creates it).
    """
    def source() -> list[ModelChoice]:
        if not Path(db_path).exists():
            return []
        from .store import Store
        out = []
        for c in Store(db_path).list_checkpoints():
            try:
                config = ModelConfig.from_dict(c.config)
            except (ConfigError, TypeError):
                config = None
            out.append(ModelChoice(f"trained:{c.id}", f"{c.model_id} (trained here, #{c.id})",
                                   "derived from its teacher's weights: the teacher's licence applies",
                                   c.path, "trained", config, c.path))
        return out
    return source


@dataclass
class LoadedModel:
    choice: ModelChoice
    checkpoint: LoadedCheckpoint
    device: str
    notice: str | None = None          # set when these are untrained stand-in weights

    @property
    def untrained(self) -> bool:
        return self.notice is not None


@dataclass
class DepthResult:
    array: np.ndarray                  # float32 (H, W): disparity or metres, see kind
    kind: str                          # "disparity" | "metric_depth"
    unit: str
    color: np.ndarray                  # uint8 (H, W, 3)
    gray: np.ndarray                   # uint8 (H, W)
    folder: Path
    files: dict[str, Path]             # input, color, gray, depth16, npy, ply (no ply when no cloud)
    summary: dict = field(default_factory=dict)


def missing_weights_message(choice: ModelChoice, error: Exception) -> str:
    where = f" ({choice.note})" if choice.note else ""
    return (f"Weights for {choice.title}{where} are missing: {error} "
            f"The studio is running this model with UNTRAINED random weights, so its depth maps are "
            f"meaningless. To supply the weights, start the studio with `python app.py --checkpoint FILE` "
            f"(an official .pth or a project .safetensors), or place the checkpoint in the Hugging Face "
            f"cache (`huggingface-cli download` it on a machine with internet and copy the cache folder).")


class ModelCache:
    """Loaded models by key, loaded once even under concurrent requests; least recently used evicted."""

    def __init__(self, max_entries: int = 3):
        self.max_entries = max_entries
        self.loads = 0                                       # how many times a loader ran
        self._entries: OrderedDict[tuple, object] = OrderedDict()
        self._lock = threading.Lock()
        self._key_locks: dict[tuple, threading.Lock] = {}

    def get(self, key: tuple, loader: Callable[[], object]):
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
                return self._entries[key]
            key_lock = self._key_locks.setdefault(key, threading.Lock())
        with key_lock:                                       # one loader per key; others wait for it
            with self._lock:
                if key in self._entries:
                    return self._entries[key]
            value = loader()
            with self._lock:
                self._entries[key] = value
                self.loads += 1
                while len(self._entries) > self.max_entries:
                    self._entries.popitem(last=False)
            return value

    def __contains__(self, key: tuple) -> bool:
        with self._lock:
            return key in self._entries


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


def _safe_stem(name: str) -> str:
    stem = re.sub(r"[^A-Za-z0-9_-]+", "_", Path(name or "image").stem).strip("_")
    return (stem or "image")[:40]


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
        """A Predictor for a loaded model on the configured backend (its runner is cached on the network)."""
        return Predictor(loaded.checkpoint, device=loaded.device, backend=self.settings.backend,
                         input_size=int(input_size or self.settings.input_size))

    def notice(self, key: str | None = None) -> str | None:
        """The banner text: missing weights of `key`, or of every model that fell back when None."""
        if key is not None:
            return self._notices.get(self.choice(key).key)
        return "\n\n".join(self._notices.values()) or None

    def infer(self, rgb: np.ndarray, key: str | None = None, input_size: int | None = None) -> Prediction:
        """The network step alone (what a GPU decorator wraps): uint8 (H, W, 3) -> Prediction."""
        return self.predictor(self.model(key), input_size).predict(rgb)

    # ---- one request ---------------------------------------------------------------------
    def decode(self, image) -> DecodedImage:
        if image is None:
            raise ImageError("no image given: upload, paste or take a picture first")
        decoded = decode_image(image, max_pixels=self.settings.max_pixels)
        h, w = decoded.rgb.shape[:2]
        if min(h, w) < self.settings.min_side:
            raise ImageError(f"{decoded.name or 'the image'} is {w}x{h} pixels; depth needs at least "
                             f"{self.settings.min_side} pixels a side. Use a larger image.")
        return decoded

    def run(self, image, model: str | None = None, input_size: int | None = None, cmap: str | None = None,
            focal_px: float | None = None, voxel_size: float | None = None, remove_outliers: bool = False,
            *, infer: Callable[..., Prediction] | None = None, progress: Progress | None = None) -> DepthResult:
        """Decode, predict and write every output of one request. `infer` replaces `self.infer` (GPU wrap)."""
        progress = progress or (lambda f, msg: None)
        cmap = cmap or self.settings.cmap
        if cmap not in COLORMAPS:
            raise ConfigError(f"unknown colour map {cmap!r}; choose one of {', '.join(COLORMAPS)}")
        t = {}
        t0 = time.perf_counter()
        decoded = self.decode(image)
        progress(0.1, "loading model")
        loaded = self.model(model)                 # outside the GPU call: loads once, then cached
        t["decode"] = time.perf_counter() - t0
        progress(0.2, "predicting depth")
        t1 = time.perf_counter()
        prediction = (infer or self.infer)(decoded.rgb, loaded.choice.key, input_size)
        t["inference"] = time.perf_counter() - t1
        progress(0.7, "writing outputs")
        result = self._render(decoded, prediction, cmap, focal_px, voxel_size, remove_outliers, t)
        result.summary.update(self._describe(loaded, prediction, input_size))
        result.summary["timings_ms"]["total"] = round(1000 * (time.perf_counter() - t0), 1)
        progress(1.0, "done")
        return result

    def _render(self, decoded: DecodedImage, prediction: Prediction, cmap: str, focal_px, voxel_size,
                remove_outliers: bool, t: dict) -> DepthResult:
        """Colour maps, then the files in parallel threads (PNG/zlib and numpy release the GIL).

        timings_ms holds each stage's own time; the file stages overlap, so they add up to more
        than the wall time they took together.
        """
        folder = self._request_folder()
        stem = _safe_stem(decoded.name)
        files = {k: folder / f"{stem}_{suffix}" for k, suffix in (
            ("input", "input.jpg"), ("color", "depth_color.png"), ("gray", "depth_gray.png"),
            ("depth16", "depth16.png"), ("npy", "depth.npy"), ("ply", "points.ply"))}
        array = prediction.array                                         # (H, W) float32
        h, w = array.shape
        focal, focal_source = pointcloud.resolve_focal(w, h, focal_px or None, decoded.focal_px)
        s = time.perf_counter()
        near_high = prediction.kind == "metric_depth"                     # keep near red/bright for metres too
        color = render.colorize(array, cmap, invert=near_high)            # (H, W, 3) uint8
        gray = render.grayscale(array, invert=near_high)                  # (H, W) uint8
        t["color_map"] = time.perf_counter() - s
        jobs = {
            "encode_16bit": (partial(depth_png.write_depth_png, kind=prediction.kind), files["depth16"], array),
            "point_cloud": (self._write_cloud, files["ply"], decoded.rgb, prediction, focal, voxel_size,
                            remove_outliers),
            "other_files": (self._write_views, files, decoded.rgb, array, color, gray),
        }
        futures = {k: self._pool.submit(_timed, *job) for k, job in jobs.items()}
        out = {}
        for k, f in futures.items():
            out[k], t[k] = f.result()
        png_meta, (points, step, cloud_note) = out["encode_16bit"], out["point_cloud"]
        if not points:
            files.pop("ply")
        summary = {
            "image": decoded.name, "width": w, "height": h,
            "min": float(np.min(array)), "max": float(np.max(array)),
            "focal_px": round(float(focal), 2), "focal_source": focal_source,
            "points": int(points), "point_stride": step, "cloud_axes": pointcloud.VIEWER_AXES, "cloud_note": cloud_note,
            "depth16": _jsonable({k: v for k, v in png_meta.items() if k != "path"}),
            "timings_ms": {k: round(1000 * v, 1) for k, v in t.items()},
        }
        return DepthResult(array, prediction.kind, prediction.unit, color, gray, folder, files, summary)

    def _write_cloud(self, path: Path, rgb: np.ndarray, prediction: Prediction, focal: float, voxel_size,
                     remove_outliers: bool) -> tuple[int, int, str]:
        """The .ply -> (points, pixel stride, note); 0 points and no file when no cloud can be made."""
        array = prediction.array                                                      # (H, W)
        h, w = array.shape
        step = max(1, math.ceil(math.sqrt(h * w / self.settings.max_cloud_points)))   # pixel stride
        try:
            pcd = pointcloud.make_point_cloud(rgb[::step, ::step], array[::step, ::step], prediction.kind,
                                              focal_px=focal / step, voxel_size=voxel_size or None,
                                              remove_outliers=bool(remove_outliers), axes=pointcloud.VIEWER_AXES)
            if len(pcd.points) == 0:
                raise ConfigError("every point was removed; use a smaller voxel size or keep outliers")
            pointcloud.write_ply(path, pcd)
        except ConfigError as e:         # e.g. no positive disparity (untrained weights): the rest still shows
            if voxel_size and "voxel" in str(e):
                raise
            return 0, step, f"No point cloud: {e}"
        return len(pcd.points), step, pointcloud.point_cloud_note(prediction.kind)

    @staticmethod
    def _write_views(files: dict, rgb: np.ndarray, array: np.ndarray, color: np.ndarray, gray: np.ndarray) -> None:
        np.save(files["npy"], array.astype(np.float32, copy=False))
        Image.fromarray(rgb).save(files["input"], quality=90)
        Image.fromarray(color).save(files["color"], compress_level=1)
        Image.fromarray(gray).save(files["gray"], compress_level=1)

    def _describe(self, loaded: LoadedModel, prediction: Prediction, input_size) -> dict:
        return {"model": loaded.choice.key, "model_title": loaded.choice.title, "licence": loaded.choice.licence,
                "model_id": prediction.model_id, "untrained": loaded.untrained, "notice": loaded.notice,
                "kind": prediction.kind, "unit": prediction.unit, "device": prediction.device,
                "backend": prediction.backend,
                "input_size": int(input_size or self.settings.input_size)}

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
                    for f in d.iterdir():
                        f.unlink()
                    d.rmdir()
            except OSError:
                pass                   # another request is using or removing it
