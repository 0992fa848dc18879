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

    def __init__(self, network: torch.nn.Module, device: torch.device, compile: bool = False,
                 autocast_dtype: torch.dtype | None = None):
        """autocast_dtype: None = the default for the device (CUDA: bf16, or fp16 without bf16;
        elsewhere float32); torch.float32 = no autocast anywhere."""
        self.network = network
        self.device = torch.device(device)
        self.name = "torch-compile" if compile else "torch"
        self.forward = torch.compile(network, dynamic=None) if compile else network
        if autocast_dtype is None and self.device.type == "cuda":
            autocast_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        self.dtype = None if autocast_dtype in (None, torch.float32) else autocast_dtype
        self.detail = (f"PyTorch {torch.__version__} on {self.device.type}"
                       + (f", {self.dtype} autocast" if self.dtype else ", float32")
                       + (", torch.compile" if compile else ""))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        autocast = torch.autocast(self.device.type, dtype=self.dtype) if self.dtype else contextlib.nullcontext()
        with torch.inference_mode(), autocast:
            return self.forward(x.to(self.device)).float()                 # (B, H, W)


def build(network: torch.nn.Module, device: torch.device, **_) -> TorchRunner:
    return TorchRunner(network, device)


def build_compiled(network: torch.nn.Module, device: torch.device, **_) -> TorchRunner:
    return TorchRunner(network, device, compile=True)
