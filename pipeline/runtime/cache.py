"""Exported models on disk, under names that can never go stale.

An entry is a folder named after everything its files depend on:

    <cache root>/<encoder>-<version>[-metric<max_depth>]-<weights sha256>-<code>/
        onnx/model.onnx             the network exported to ONNX (dynamic N, H, W), for ONNX Runtime
        openvino-pt-<version>/      the network converted to OpenVINO IR by that release's PyTorch frontend

`<weights sha256>` hashes every tensor of the state dict (names, dtypes, shapes, bytes);
`<code>` hashes the source of `pipeline/model/` and the torch and timm versions that traced
it. Change the weights, the network code or the exporter and the name changes, so a stale
file is never found; runtime-specific files sit in a sub-folder named by the runtime's
version. Files are written into a temporary folder and renamed into place, so a reader never
sees half a file and two processes building the same entry do not corrupt each other.

The root is `$DA_STUDIO_CACHE_DIR`, else `$XDG_CACHE_HOME/depth-anything-studio/runtimes`
(default `~/.cache/...`). Deleting it is always safe. It holds at most KEEP_ENTRIES entries, the
least recently used go first (untrained stand-in weights are new on every start, for one).
"""
from __future__ import annotations

import functools
import hashlib
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from ..config import ModelConfig

CACHE_ENV = "DA_STUDIO_CACHE_DIR"
KEEP_ENTRIES = 8                  # exported networks kept (vits ~100 MB each, vitl ~1.3 GB)
STALE_TMP_S = 24 * 3600           # a build folder this old belongs to a crashed process
MODEL_SOURCE_DIR = Path(__file__).resolve().parents[1] / "model"


def cache_root() -> Path:
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser()
    return base / "depth-anything-studio" / "runtimes"


def weights_sha256(model: torch.nn.Module) -> str:
    """sha256 over the state dict: each tensor's name, dtype, shape and bytes, in key order."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        t = t.detach().to("cpu").contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}\n".encode())
        h.update(t.view(torch.uint8).numpy().data if t.numel() else b"")
    return h.hexdigest()


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    """A short hash of what decides the exported graph: the network's source, torch, timm."""
    import timm
    h = hashlib.sha256(f"torch {torch.__version__}|timm {timm.__version__}".encode())
    for path in sorted(MODEL_SOURCE_DIR.glob("*.py")):
        h.update(path.name.encode() + b"\0" + path.read_bytes())
    return h.hexdigest()[:12]


def config_tag(config: ModelConfig) -> str:
    tag = f"{config.encoder}-{config.version}"
    return tag + (f"-metric{config.max_depth:g}" if config.metric else "")


def entry_dir(config: ModelConfig, weights_sha: str, root: Path | None = None) -> Path:
    """The folder for the exported files of a network with these weights (not created)."""
    root = cache_root() if root is None else Path(root)
    return root / f"{config_tag(config)}-{weights_sha[:24]}-{code_version()}"


def build_once(folder: Path, build: Callable[[Path], None]) -> Path:
    """`folder`, made by `build(tmp_folder)` unless it exists already; the rename is atomic.

    A failed build leaves nothing behind. When another process finished the same folder
    first, its copy is kept and ours discarded (both hold the same files).
    """
    if folder.is_dir():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        build(tmp)
        try:
            os.rename(tmp, folder)
        except OSError:
            if not folder.is_dir():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return folder


def touch(folder: Path) -> None:
    """Mark an entry as used now (pruning keeps the most recently used)."""
    try:
        os.utime(folder)
    except OSError:
        pass


def prune(root: Path, keep: int = KEEP_ENTRIES) -> list[Path]:
    """Remove all but the `keep` most recently used entries, and build folders left by crashes."""
    folders = _subfolders(Path(root))
    entries = sorted((p for p in folders if not p.name.startswith(".")), key=_mtime, reverse=True)
    doomed = entries[keep:] + _crashed_builds(folders)
    for p in doomed:
        shutil.rmtree(p, ignore_errors=True)
    for entry in entries[:keep]:                          # a runtime's build inside an entry can crash too
        inner, used = _crashed_builds(_subfolders(entry)), _mtime(entry)
        for p in inner:
            shutil.rmtree(p, ignore_errors=True)
        if inner:                                         # removing them is not a use of the entry
            os.utime(entry, (used, used))
        doomed += inner
    return doomed


def _crashed_builds(folders: list[Path]) -> list[Path]:
    """build_once's temporary folders (".<name>.xxxx") old enough that their process is gone."""
    now = time.time()
    return [p for p in folders if p.name.startswith(".") and now - _mtime(p) > STALE_TMP_S]


def _subfolders(folder: Path) -> list[Path]:
    try:
        return [p for p in folder.iterdir() if p.is_dir()]
    except OSError:
        return []


def _mtime(p: Path) -> float:
    try:
        return p.stat().st_mtime
    except OSError:
        return 0.0
