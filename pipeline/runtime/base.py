"""What every backend returns: a `Runner`, the network as a callable on normalised batches."""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


class Runner:
    """(B, 3, H, W) float32 normalised batch, H and W multiples of 14 -> (B, H, W) float32.

    name: the registry name ("torch", "openvino", ...); detail: a human line (runtime, version,
    device, precision) for logs and the studio summary. snapshot: True when the runner holds its
    own copy of the weights (an exported model), so it must be rebuilt when the network's
    weights change; False when it runs the live network.
    """

    name: str = "?"
    detail: str = ""
    snapshot: bool = True

    def __call__(self, x: torch.Tensor) -> torch.Tensor:       # pragma: no cover - interface
        raise NotImplementedError
