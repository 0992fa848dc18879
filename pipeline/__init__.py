"""Depth Anything Studio's library: models, prediction, label store, training, evaluation.

Stable public API: `build_model`, `Predictor`, `Prediction`, `ModelConfig`. No gradio here
(DESIGN.md). Importing the package is cheap: torch-heavy names load on first use, so tools
that only need the label store (import, export, job bookkeeping) start quickly.
"""
from .config import ModelConfig

_LAZY = {"build_model": "model", "Predictor": "predictor", "Prediction": "predictor"}


def __getattr__(name):
    if name in _LAZY:
        import importlib
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["ModelConfig", "Prediction", "Predictor", "build_model"]
