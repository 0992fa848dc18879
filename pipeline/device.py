"""The one device policy (inference, training, the studio): which torch device a process runs on.

None, "" or "auto" -> CUDA when available, else Apple's MPS, else the CPU. A named device ("cpu",
"cuda", "cuda:1", "mps") is checked here, with a ConfigError that says what to use instead. Under
torchrun each process passes its `local_rank`, so a plain "cuda" (or auto) becomes that process's GPU.
"""
from __future__ import annotations

import torch

from .errors import ConfigError


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return mps is not None and mps.is_available()


def pick_device(preference: str | torch.device | None = None, *, local_rank: int | None = None) -> torch.device:
    """The checked device for `preference` (see the module docstring); `local_rank` indexes a bare cuda."""
    if preference is None or str(preference) in ("", "auto"):
        preference = "cuda" if torch.cuda.is_available() else "mps" if _mps_available() else "cpu"
    try:
        device = torch.device(preference)
    except (RuntimeError, TypeError):
        raise ConfigError(f"unknown device {preference!r}; use cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {preference!r} asked for but CUDA is not available here; use --device cpu")
    if device.type == "mps" and not _mps_available():
        raise ConfigError(f"device {preference!r} asked for but MPS is not available here; use --device cpu")
    if device.type == "cuda" and device.index is None and local_rank is not None:
        device = torch.device("cuda", local_rank)
    return device
