"""`Predictor`: an image in any form -> `Prediction` at the image's own resolution.

The network itself does no I/O; this module owns what surrounds it: device choice (CUDA >
MPS > CPU), the backend that runs the network (`pipeline.runtime`: "auto" is torch on CUDA/MPS
and OpenVINO, then ONNX Runtime, then torch on a CPU), the official preprocessing
(`pipeline.preprocess.prepare`), batching images that share a network size, and resizing the
output back to the original H x W with the version's own rule (`ModelConfig.align_corners_out`).

Thread safety and caching: the backend's runner is built once per (network, backend, device)
and kept on the network object, so constructing a `Predictor` is cheap (the studio makes one
per request). Building (exporting, compiling) holds only that entry's lock, never a global
one; forwards through one runner are serialised by its own lock. Runners that hold a copy of
the weights (the exported ones) are rebuilt when the network's weights change, so a live
student is always predicted with its current weights; the export itself is cached on disk
keyed by the weights' hash (`pipeline.runtime.cache`).
"""
from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from .config import DEFAULT_INPUT_SIZE, ModelConfig
from .device import pick_device  # the one device policy (depth_service imports it from here too)
from .errors import ConfigError
from .files.image_io import DecodedImage, decode_image
from .preprocess import network_size, prepare, resize_output, to_tensor
from .runtime import registry
from .runtime.base import Runner

UNITS = {"disparity": "relative disparity", "metric_depth": "m"}
_CACHE_ATTR = "_predictor_runners"      # on the network: {(backend, device): _Slot}
_CACHE_LOCK = threading.Lock()          # guards only the dict lookups, never a build


@dataclass
class Prediction:
    array: np.ndarray       # (H, W) float32 at the original resolution
    kind: str               # "disparity" | "metric_depth"
    model_id: str
    device: str
    seconds: float          # preprocessing + forward + resize; a batch's time is shared equally
    input_size: int = DEFAULT_INPUT_SIZE
    backend: str = "torch"  # the runtime that ran the network (pipeline.runtime.registry)

    @property
    def unit(self) -> str:
        return UNITS[self.kind]


def _weights_token(model: nn.Module) -> tuple:
    """Changes whenever a parameter or buffer is replaced or modified in place (load_state_dict, optimiser step)."""
    return tuple((t.data_ptr(), -1 if t.is_inference() else t._version)
                 for t in (*model.parameters(), *model.buffers()))


@dataclass
class _Slot:
    """One (network, backend, device) entry: its runner and the weights it was built from."""
    runner: Runner | None = None
    token: tuple | None = None
    build_lock: threading.Lock = field(default_factory=threading.Lock)


def _slot(model: nn.Module, key: tuple) -> _Slot:
    with _CACHE_LOCK:
        slots = model.__dict__.setdefault(_CACHE_ATTR, {})      # a plain dict: not a submodule
        return slots.setdefault(key, _Slot())


class Predictor:
    def __init__(self, model, *, device=None, input_size: int = DEFAULT_INPUT_SIZE,
                 model_id: str | None = None, backend: str = "auto", cache_dir=None):
        """`model`: a DepthAnything network or a `LoadedCheckpoint` (its model_id is used).

        backend: "auto", "torch", "torch-compile", "openvino" or "onnxruntime" (see
        pipeline.runtime.registry); cache_dir: where exported models are kept (default
        $DA_STUDIO_CACHE_DIR or ~/.cache/depth-anything-studio/runtimes).
        """
        network = getattr(model, "model", model)                 # LoadedCheckpoint -> its network
        config: ModelConfig | None = getattr(model, "config", None) or getattr(network, "config", None)
        if not isinstance(network, nn.Module) or not isinstance(config, ModelConfig):
            raise ConfigError(f"Predictor needs a DepthAnything network or a LoadedCheckpoint, got "
                              f"{type(model).__name__}")
        network_size(DEFAULT_INPUT_SIZE, DEFAULT_INPUT_SIZE, input_size)   # validates input_size
        self.config = config
        self.requested_backend = registry.check_choice(backend)
        self.device = pick_device(device)
        if device in (None, "auto") and backend != "auto" and self.device.type not in registry.BACKENDS[backend].devices:
            self.device = torch.device("cpu")                             # e.g. backend="openvino" on a GPU machine
        registry.candidates(backend, self.device)                         # a backend/device mismatch fails now
        self.input_size = int(input_size)
        self.cache_dir = cache_dir
        self.model_id = model_id or getattr(model, "model_id", None) or _default_id(config)
        self._network = network.to(self.device)
        self._key = (self.requested_backend, str(self.device))
        self.runner()                                                      # build (or reuse) now

    @classmethod
    def from_checkpoint(cls, source, *, device=None, input_size: int = DEFAULT_INPUT_SIZE,
                        model_id: str | None = None, backend: str = "auto", **load_kwargs) -> Predictor:
        """Load `source` (file or registry name) with `pipeline.weights.loading.load_model`."""
        from .weights.loading import load_model
        loaded = load_model(source, **load_kwargs)
        return cls(loaded, device=device, input_size=input_size, model_id=model_id, backend=backend)

    @property
    def kind(self) -> str:
        return self.config.output_kind

    @property
    def backend(self) -> str:
        """The backend that runs the network now (what "auto" or a fallback became)."""
        return self.runner().name

    def runner(self) -> Runner:
        """The runner for the network's current weights, built on first use or after the weights changed."""
        slot = _slot(self._network, self._key)
        runner = slot.runner
        if runner is not None and (not runner.snapshot or slot.token == _weights_token(self._network)):
            return runner
        with slot.build_lock:                                 # only this entry waits; others run on
            token = _weights_token(self._network)
            if slot.runner is None or (slot.runner.snapshot and slot.token != token):
                slot.runner = registry.build_runner(self.requested_backend, self._network, self.config,
                                                    self.device, self.cache_dir)
                slot.token = token
            return slot.runner

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
            key = network_size(decoded.height, decoded.width, self.input_size, name=decoded.name)
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
        with torch.inference_mode():
            x = torch.cat([prepare(to_tensor(d.rgb).to(self.device), self.input_size) for d in decoded])  # (B,3,h,w)
            runner, out = self._forward(x)                                       # (B, h, w)
            out = out.to(self.device, torch.float32)
            arrays = [resize_output(out[i:i + 1], (d.height, d.width), self.config.align_corners_out)[0]
                      .cpu().numpy() for i, d in enumerate(decoded)]             # (H, W) float32
        seconds = (time.perf_counter() - t0) / len(decoded)
        return [Prediction(a, self.kind, self.model_id, str(self.device), seconds, self.input_size, runner.name)
                for a in arrays]

    def _forward(self, x: torch.Tensor) -> tuple[Runner, torch.Tensor]:
        """Run the backend; if an exported runtime fails on this input, warn once and use torch from now on."""
        runner = self.runner()
        try:
            return runner, runner(x)
        except Exception as e:  # noqa: BLE001 - a runtime failure must not kill the request
            if runner.name == "torch":
                raise
            slot = _slot(self._network, self._key)
            with slot.build_lock:
                if slot.runner is runner:
                    registry.warn_fallback([(runner.name, e)], "torch")
                    slot.runner, slot.token = registry.BACKENDS["torch"].build(self._network, self.device), None
            return self._forward(x)


def _default_id(config: ModelConfig) -> str:
    return f"depth-anything-{config.version}-{config.encoder}{'-metric' if config.metric else ''}"
