"""The backend registry: which runtime runs `DepthAnything.forward` for a Predictor.

    name          runs on         what it is
    torch         cpu cuda mps    the network itself (CUDA: bf16 autocast)
    torch-compile cuda cpu        the same under torch.compile
    openvino      cpu             the network converted to OpenVINO IR (f32)
    onnxruntime   cpu cuda        the exported ONNX graph in ONNX Runtime (CUDA/TensorRT EP when built in)

"auto": torch on CUDA and MPS; on a CPU the first installed of openvino, onnxruntime, torch
(fastest first, all exact: measured in benchmarks/README.md). A backend that fails to build
(not installed, export error, no provider) falls back to torch with one warning, never an error.
"""
from __future__ import annotations

import importlib
import importlib.util
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import ConfigError

if TYPE_CHECKING:                      # importing the registry must stay cheap (settings use it)
    import torch

    from ..config import ModelConfig
    from .base import Runner

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BackendSpec:
    name: str
    builder: str                      # "module:function" under pipeline.runtime
    devices: tuple[str, ...]          # device types it runs on
    package: str | None = None        # what must be importable
    exported: bool = False            # runs an exported graph (built into the on-disk cache)

    def installed(self) -> bool:
        return self.package is None or importlib.util.find_spec(self.package) is not None

    def build(self, network: torch.nn.Module, device: torch.device, **kwargs) -> Runner:
        module, _, fn = self.builder.partition(":")
        return getattr(importlib.import_module(f"{__package__}.{module}"), fn)(network, device, **kwargs)


BACKENDS: dict[str, BackendSpec] = {s.name: s for s in (
    BackendSpec("torch", "torch_rt:build", ("cpu", "cuda", "mps")),
    BackendSpec("torch-compile", "torch_rt:build_compiled", ("cpu", "cuda")),
    BackendSpec("openvino", "openvino_rt:build", ("cpu",), "openvino", exported=True),
    BackendSpec("onnxruntime", "onnxruntime_rt:build", ("cpu", "cuda"), "onnxruntime", exported=True),
)}
CHOICES = ("auto", *BACKENDS)
CPU_ORDER = ("openvino", "onnxruntime", "torch")


def check_choice(name: str) -> str:
    if name not in CHOICES:
        raise ConfigError(f"unknown backend {name!r}; choose one of {', '.join(CHOICES)}")
    return name


def candidates(name: str, device: torch.device) -> list[str]:
    """Backends to try in order for `name` on `device` (the last one is always torch)."""
    check_choice(name)
    if name == "auto":
        if device.type != "cpu":
            return ["torch"]
        return [n for n in CPU_ORDER if BACKENDS[n].installed()]
    spec = BACKENDS[name]
    if device.type not in spec.devices:
        raise ConfigError(f"backend {name} does not run on {device.type}; it runs on "
                          f"{', '.join(spec.devices)} (use --backend torch or another --device)")
    return [name] if name == "torch" else [name, "torch"]


def resolve_auto(device: torch.device) -> str:
    """What "auto" means here, without building anything (for logs and docs)."""
    return candidates("auto", device)[0]


def build_runner(name: str, network: torch.nn.Module, config: ModelConfig, device: torch.device,
                 cache_dir: Path | None = None) -> Runner:
    """The runner for backend `name` (or "auto"); failing backends are skipped (torch comes last),
    with one warning naming each failure and what runs instead."""
    names = candidates(name, device)
    failures: list[tuple[str, BaseException]] = []
    for i, backend in enumerate(names):
        spec = BACKENDS[backend]
        try:
            if not spec.installed():
                raise RuntimeError(f"the {spec.package} package is not installed")
            kwargs = {}
            if spec.exported:
                entry, metadata = cache_entry(network, config, cache_dir)
                kwargs = {"entry": entry, "metadata": metadata}
            runner = spec.build(network, device, **kwargs)
        except Exception as e:  # noqa: BLE001 - any runtime failure means: use the next backend
            if i == len(names) - 1:
                raise
            failures.append((backend, e))
            continue
        if failures:
            warn_fallback(failures, backend)
        return runner
    raise AssertionError("unreachable")


def warn_fallback(failures: list[tuple[str, BaseException]], fallback: str) -> None:
    """One warning (and log line) for backends that could not run and the one that runs instead."""
    reasons = []
    for backend, error in failures:
        reason = (str(error).strip().splitlines() or [""])[0][:300]
        reasons.append(f"the {backend} backend is unavailable ({type(error).__name__}: {reason})")
    message = f"{'; '.join(reasons)}; running the network with {fallback} instead" + (
        " (slower on a CPU, same numbers)" if fallback == "torch" else " (same numbers)")
    log.warning(message)
    warnings.warn(message, RuntimeWarning, stacklevel=3)


def cache_entry(network: torch.nn.Module, config: ModelConfig, cache_dir: Path | None = None) -> tuple[Path, dict]:
    """The cache folder for this network's current weights (made if missing; each runtime builds its
    own files inside it) and the metadata its files carry."""
    from . import cache
    from .onnx_export import model_metadata
    sha = cache.weights_sha256(network)
    folder = cache.entry_dir(config, sha, cache_dir)
    meta = model_metadata(config, source="pipeline.runtime cache", weights_sha256=sha)
    if folder.is_dir():
        cache.touch(folder)
    else:
        folder.mkdir(parents=True, exist_ok=True)
        cache.prune(folder.parent)
    return folder, meta
