"""The PyTorch backend: `DepthAnything.forward` run as it is (no export, no copy of the weights).

On CUDA it runs under bf16 autocast (fp16 where the GPU has no bf16); `compile=True` (backend
name "torch-compile") wraps the network in `torch.compile` first. Elsewhere it is plain float32.
"""
from __future__ import annotations

import contextlib

import torch

from .base import Runner


class TorchRunner(Runner):
    snapshot = False                      # always runs the live network: nothing to rebuild

    def __init__(self, network: torch.nn.Module, device: torch.device, compile: bool = False):
        self.network = network
        self.device = device
        self.name = "torch-compile" if compile else "torch"
        self.forward = torch.compile(network, dynamic=None) if compile else network
        dtype = self.autocast_dtype()
        self.detail = f"PyTorch {torch.__version__} on {device.type}" + (f", {dtype} autocast" if dtype else "") + \
            (", torch.compile" if compile else "")

    def autocast_dtype(self) -> torch.dtype | None:
        if self.device.type != "cuda":
            return None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        dtype = self.autocast_dtype()
        autocast = torch.autocast("cuda", dtype=dtype) if dtype else contextlib.nullcontext()
        with torch.inference_mode(), autocast:
            return self.forward(x.to(self.device)).float()                 # (B, H, W)


def build(network: torch.nn.Module, device: torch.device, **_) -> TorchRunner:
    return TorchRunner(network, device)


def build_compiled(network: torch.nn.Module, device: torch.device, **_) -> TorchRunner:
    return TorchRunner(network, device, compile=True)
