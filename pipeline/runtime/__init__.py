"""Runtimes for the one network definition: export (ONNX, OpenVINO IR) and inference backends.

`registry.build_runner(name, network, config, device)` gives a `Runner` for a backend name
("auto", "torch", "torch-compile", "openvino", "onnxruntime"); `Predictor` uses it, and
`python -m pipeline export-model` writes the same exported graph to a file (`export.py`).
"""
from .base import Runner
from .registry import BACKENDS, CHOICES, build_runner, candidates, resolve_auto

__all__ = ["BACKENDS", "CHOICES", "Runner", "build_runner", "candidates", "resolve_auto"]
