"""`Predictor`: an image in any form -> `Prediction` at the image's own resolution.

The network itself does no I/O; this module owns what surrounds it: device choice (CUDA >
MPS > CPU), the official preprocessing (`pipeline.preprocess.prepare`), batching images that
share a network size, autocast on CUDA, and resizing the output back to the original H x W
with the version's own rule (`ModelConfig.align_corners_out`: True for V2, False for V1).

Thread safety: one lock per network serialises the forward passes, so the studio may call
`predict` from a thread pool. Constructing a `Predictor` is cheap: the inference-optimised
module is built once per (network, weights, fast) and cached on the network object; each
predict checks the weights are unchanged (a live student network is always predicted with its
current weights).
"""
from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .config import DEFAULT_INPUT_SIZE, ModelConfig
from .errors import ConfigError
from .image_io import DecodedImage, decode_image
from .preprocess import network_size, prepare, resize_output, to_tensor

UNITS = {"disparity": "relative disparity", "metric_depth": "m"}
_CACHE_ATTR = "_predictor_inference_cache"      # on the network: {fast: (weights token, module, lock)}
_CACHE_LOCK = threading.Lock()


@dataclass
class Prediction:
    array: np.ndarray       # (H, W) float32 at the original resolution
    kind: str               # "disparity" | "metric_depth"
    model_id: str
    device: str
    seconds: float          # preprocessing + forward + resize; a batch's time is shared equally
    input_size: int = DEFAULT_INPUT_SIZE

    @property
    def unit(self) -> str:
        return UNITS[self.kind]


def pick_device(device: str | torch.device | None = None) -> torch.device:
    """The requested device, checked; None -> CUDA if available, else MPS, else CPU."""
    if device is None or str(device) == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        return torch.device("mps" if mps is not None and mps.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ConfigError(f"unknown device {device!r}; use cpu, cuda, cuda:N or mps") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} asked for but CUDA is not available here; use --device cpu")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"device {device!r} asked for but MPS is not available here; use --device cpu")
    return dev


def _weights_token(model: nn.Module) -> tuple:
    """Changes whenever a parameter or buffer is replaced or modified in place (load_state_dict, optimiser step)."""
    return tuple((t.data_ptr(), t._version) for t in (*model.parameters(), *model.buffers()))


def _inference_module(model: nn.Module, fast: bool) -> tuple[nn.Module, threading.Lock]:
    """The optimised module for `model` and its forward lock, built once per (model, weights, fast).

    `optimize_for_inference` returns a snapshot of the weights, so the cache entry is rebuilt
    when the network's weights change (e.g. a student evaluated between training steps).
    """
    with _CACHE_LOCK:
        cache = model.__dict__.setdefault(_CACHE_ATTR, {})      # a plain dict: not a submodule
        token = _weights_token(model)
        entry = cache.get(fast)
        if entry is None or entry[0] != token:
            from .model.inference import optimize_for_inference
            module = optimize_for_inference(model, fast=fast)
            lock = entry[2] if entry is not None else threading.Lock()
            entry = cache[fast] = (token, module, lock)
        return entry[1], entry[2]


class Predictor:
    def __init__(self, model, *, device=None, input_size: int = DEFAULT_INPUT_SIZE,
                 model_id: str | None = None, fast: bool = False):
        """`model`: a DepthAnything network or a `LoadedCheckpoint` (its model_id is used)."""
        network = getattr(model, "model", model)                 # LoadedCheckpoint -> its network
        config: ModelConfig | None = getattr(model, "config", None) or getattr(network, "config", None)
        if not isinstance(network, nn.Module) or not isinstance(config, ModelConfig):
            raise ConfigError(f"Predictor needs a DepthAnything network or a LoadedCheckpoint, got "
                              f"{type(model).__name__}")
        network_size(DEFAULT_INPUT_SIZE, DEFAULT_INPUT_SIZE, input_size)   # validates input_size
        self.config = config
        self.device = pick_device(device)
        self.input_size = int(input_size)
        self.fast = bool(fast)
        self.model_id = model_id or getattr(model, "model_id", None) or _default_id(config)
        self._network = network.to(self.device)
        _inference_module(self._network, self.fast)                           # build (or reuse) now

    @classmethod
    def from_checkpoint(cls, source, *, device=None, input_size: int = DEFAULT_INPUT_SIZE,
                        model_id: str | None = None, fast: bool = False, **load_kwargs) -> Predictor:
        """Load `source` (file or registry name) with `pipeline.checkpoints.load_model`."""
        from .checkpoints import load_model
        loaded = load_model(source, **load_kwargs)
        return cls(loaded, device=device, input_size=input_size, model_id=model_id, fast=fast)

    @property
    def kind(self) -> str:
        return self.config.output_kind

    def predict(self, image) -> Prediction:
        """Anything `decode_image` accepts (or a DecodedImage) -> Prediction at its H x W."""
        return self._run_batch([decode_image(image)])[0]

    def predict_many(self, images: Iterable, batch_size: int = 4) -> list[Prediction]:
        """Predictions in input order; images sharing a network size run together in batches.

        The first undecodable image raises ImageError; to skip bad files instead, decode them
        yourself and pass DecodedImages (as `python -m pipeline predict` does).
        """
        results = dict(self.iter_predict(images, batch_size))
        return [results[i] for i in range(len(results))]

    def iter_predict(self, images: Iterable, batch_size: int = 4) -> Iterator[tuple[int, Prediction]]:
        """Yield (index in `images`, Prediction) as batches finish (not necessarily in order).

        Images are decoded one at a time and queued by network size; a queue runs when it holds
        `batch_size` images, or (the oldest one) when 4 x batch_size images are waiting, so
        memory stays bounded for long lists of differently sized images.
        """
        if batch_size < 1:
            raise ConfigError(f"batch size must be at least 1, got {batch_size}")
        queues: dict[tuple[int, int], list[tuple[int, DecodedImage]]] = {}
        waiting = 0
        for index, image in enumerate(images):
            decoded = decode_image(image)
            key = network_size(decoded.height, decoded.width, self.input_size)
            queues.setdefault(key, []).append((index, decoded))
            waiting += 1
            if len(queues[key]) >= batch_size or waiting >= 4 * batch_size:
                full = key if len(queues[key]) >= batch_size else next(iter(queues))
                batch = queues.pop(full)
                waiting -= len(batch)
                yield from zip((i for i, _ in batch), self._run_batch([d for _, d in batch]), strict=True)
        for batch in queues.values():
            yield from zip((i for i, _ in batch), self._run_batch([d for _, d in batch]), strict=True)

    def _run_batch(self, decoded: list[DecodedImage]) -> list[Prediction]:
        """Decoded images with one network size -> predictions (one forward pass)."""
        t0 = time.perf_counter()
        x = torch.cat([prepare(to_tensor(d.rgb).to(self.device), self.input_size) for d in decoded])  # (B,3,h,w)
        module, lock = _inference_module(self._network, self.fast)
        with lock, torch.inference_mode(), self._autocast():
            out = module(x)                                                        # (B, h, w)
        out = out.float()
        arrays = [resize_output(out[i:i + 1], (d.height, d.width), self.config.align_corners_out)[0]
                  .cpu().numpy().astype(np.float32, copy=False) for i, d in enumerate(decoded)]  # (H, W)
        seconds = (time.perf_counter() - t0) / len(decoded)
        return [Prediction(a, self.kind, self.model_id, str(self.device), seconds, self.input_size) for a in arrays]

    def _autocast(self):
        if self.device.type == "cuda":
            dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
            return torch.autocast("cuda", dtype=dtype)
        return contextlib.nullcontext()


def _default_id(config: ModelConfig) -> str:
    return f"depth-anything-{config.version}-{config.encoder}{'-metric' if config.metric else ''}"
