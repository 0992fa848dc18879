"""Where the studio keeps its data and the limits it serves under: one owner for these facts.

Everything persistent (the label database, request outputs) lives under one data folder:
- `DA_STUDIO_DATA` when set;
- `/data` on a Hugging Face Space with persistent storage (`SPACE_ID` set and `/data` writable);
- `./data` otherwise.
Other knobs read from the environment (all optional): `DA_STUDIO_CHECKPOINT`,
`DA_STUDIO_MAX_UPLOAD_MB`, `DA_STUDIO_MAX_PIXELS`, `DA_STUDIO_CONCURRENCY`, `DA_STUDIO_DEVICE`,
`DA_STUDIO_VIEWER_POINTS` (points in the depth tab's 3D view),
`DA_STUDIO_BACKEND` (auto, torch, openvino, onnxruntime: see pipeline/runtime/registry.py),
`DA_STUDIO_IMPORT_ROOT` (the one server folder whose contents the page may import or train
from; default `<data>/import`), `DA_STUDIO_SAM_MODEL` (the Segment Anything weights the Curate tab
may use when they are on this machine: a Hub id in the cache or a folder; never downloaded).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path

from .config import DEFAULT_INPUT_SIZE
from .errors import ConfigError
from .files.image_io import MAX_PIXELS
from .labels.sam_select import DEFAULT_SAM_MODEL
from .render import DEFAULT_CMAP
from .runtime.registry import check_choice as check_backend

DEFAULT_CHECKPOINT = "depth-anything-v2-small"
COLORMAPS = ("Spectral_r", "inferno", "magma", "viridis", "turbo", "gray")
INPUT_SIZES = (196, 266, 336, 392, 518, 644, 756)
SPACE_DATA_DIR = Path("/data")


def default_data_dir(env: dict | None = None) -> Path:
    """The data folder the environment asks for (see the module docstring)."""
    env = os.environ if env is None else env
    if env.get("DA_STUDIO_DATA"):
        return Path(env["DA_STUDIO_DATA"]).expanduser()
    if env.get("SPACE_ID") and SPACE_DATA_DIR.is_dir() and os.access(SPACE_DATA_DIR, os.W_OK):
        return SPACE_DATA_DIR / "depth-anything-studio"
    return Path("data")


def _env_number(env: dict, name: str, default: float, cast=float):
    raw = env.get(name)
    if raw in (None, ""):
        return default
    try:
        return cast(raw)
    except ValueError:
        raise ConfigError(f"environment variable {name}={raw!r} is not a number; unset it or give a number") from None


@dataclass(frozen=True)
class StudioSettings:
    data_dir: Path = field(default_factory=default_data_dir)
    db_path: Path | None = None              # None: <data_dir>/studio.db
    checkpoint: str = DEFAULT_CHECKPOINT     # registry name or checkpoint file
    device: str | None = None                # None: cuda when available, else cpu
    backend: str = "auto"                    # what runs the network (pipeline.runtime.registry)
    max_upload_mb: float = 25.0              # the browser/API upload cap
    max_pixels: int = MAX_PIXELS             # larger images are refused (decompression bombs)
    min_side: int = 8                        # smaller images are refused
    max_cloud_points: int = 400_000          # larger images are strided for the point cloud
    max_viewer_points: int = 160_000         # the depth tab's 3D view (every pixel: a .ply built when asked)
    max_batch_images: int = 32               # images per batch request in the depth tab
    max_video_frames: int = 600              # frames predicted per clip in the studio (longer clips are cut)
    input_size: int = DEFAULT_INPUT_SIZE
    cmap: str = DEFAULT_CMAP
    gpu_concurrency: int = 1                 # inference events running at once (shared limit)
    request_max_age_s: float = 6 * 3600      # per-request output folders older than this are removed
    import_root: Path | None = None          # None: <data_dir>/import (server folders the page may read)
    sam_model: str = DEFAULT_SAM_MODEL       # Segment Anything for the Curate tab, if on this machine

    def __post_init__(self):
        object.__setattr__(self, "data_dir", Path(self.data_dir))
        for name in ("db_path", "import_root"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, Path(getattr(self, name)).expanduser())
        if self.cmap not in COLORMAPS:
            raise ConfigError(f"unknown colour map {self.cmap!r}; choose one of {', '.join(COLORMAPS)}")
        check_backend(self.backend)
        if self.max_upload_mb <= 0 or self.max_pixels <= 0 or self.gpu_concurrency < 1 or self.max_video_frames < 1:
            raise ConfigError("upload cap, pixel cap, video frame cap and concurrency must be positive")
        if self.max_viewer_points < 1 or self.max_batch_images < 1:
            raise ConfigError("the 3D view's point budget and the batch size must be positive")

    @property
    def database(self) -> Path:
        return self.db_path if self.db_path is not None else self.data_dir / "studio.db"

    @property
    def temp_dir(self) -> Path:
        """Per-request outputs (depth PNGs, .npy, .ply) live in folders under here."""
        return self.data_dir / "tmp"

    @property
    def render_dir(self) -> Path:
        """Pictures and point clouds the curate tab renders for the page."""
        return self.data_dir / "curate"

    @property
    def exports_dir(self) -> Path:
        """Curated-set exports (and their zips) offered for download."""
        return self.data_dir / "exports"

    @property
    def runs_dir(self) -> Path:
        """Training runs (checkpoints, training state, metrics): never served."""
        return self.data_dir / "runs"

    @property
    def served_dirs(self) -> list[Path]:
        """The only folders the web server may send files from: outputs made for the page."""
        return [d.resolve() for d in (self.temp_dir, self.render_dir, self.exports_dir)]

    @property
    def private_paths(self) -> list[Path]:
        """Never served, whatever else allows it: the database, its files, runs, the import root."""
        db = self.database.resolve()
        return [db, db.parent / f"{db.stem}-files", db.parent / f"{db.stem}-jobs",
                self.runs_dir.resolve(), self.allowed_import_root]

    @property
    def allowed_import_root(self) -> Path:
        """The server folder (resolved) under which the page may import images or read training data."""
        return (self.import_root if self.import_root is not None else self.data_dir / "import").resolve()

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)

    def ensure_dirs(self) -> StudioSettings:
        for d in (self.data_dir, self.temp_dir, self.database.parent):
            d.mkdir(parents=True, exist_ok=True)
        return self

    def with_overrides(self, **changes) -> StudioSettings:
        """A copy with the non-None values of `changes` applied (command-line flags over env)."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    @classmethod
    def from_env(cls, env: dict | None = None) -> StudioSettings:
        env = os.environ if env is None else env
        return cls(
            data_dir=default_data_dir(env),
            checkpoint=env.get("DA_STUDIO_CHECKPOINT") or DEFAULT_CHECKPOINT,
            device=env.get("DA_STUDIO_DEVICE") or None,
            backend=env.get("DA_STUDIO_BACKEND") or "auto",
            import_root=env.get("DA_STUDIO_IMPORT_ROOT") or None,
            sam_model=env.get("DA_STUDIO_SAM_MODEL") or DEFAULT_SAM_MODEL,
            max_upload_mb=_env_number(env, "DA_STUDIO_MAX_UPLOAD_MB", 25.0),
            max_pixels=_env_number(env, "DA_STUDIO_MAX_PIXELS", MAX_PIXELS, int),
            gpu_concurrency=_env_number(env, "DA_STUDIO_CONCURRENCY", 1, int),
            max_viewer_points=_env_number(env, "DA_STUDIO_VIEWER_POINTS", 160_000, int),
        )
