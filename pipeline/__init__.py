"""Depth Anything Studio's library: models, prediction, label store, training, evaluation.

Stable public API: `build_model`, `Predictor`, `ModelConfig`. No gradio here (DESIGN.md).
"""
from .config import ModelConfig
from .model import build_model


def __getattr__(name):  # lazy: importing the package should not pull in image I/O and open3d
    if name in ("Predictor", "Prediction"):
        from . import predictor
        return getattr(predictor, name)
    raise AttributeError(name)


__all__ = ["ModelConfig", "Prediction", "Predictor", "build_model"]
