"""The student of a metric run (V2's metric fine-tuning): a metric DepthAnything (sigmoid x max_depth).

Where its weights come from (`student_init`):
- "checkpoint" with a metric checkpoint: all of it (the run's `max_depth` scales the sigmoid; a
  checkpoint trained for another max_depth is noted);
- "checkpoint" with a relative checkpoint: its encoder only, a new metric decoder, as the official
  metric fine-tuning loads `pretrained.*` from the relative model;
- "dinov2": DINOv2 encoder weights of its size (pipeline.train.student), a new decoder;
- "random": experiments.
"""
from __future__ import annotations

from pathlib import Path

from ..config import ModelConfig
from ..model import DepthAnything
from ..weights.loading import load_model
from .student import dinov2_weights, load_encoder_weights
from .train_config import TrainConfig


def build_metric_student(cfg: TrainConfig) -> tuple[DepthAnything, str]:
    """(metric student in train mode on CPU, where its weights came from)."""
    model = DepthAnything(ModelConfig(encoder=cfg.encoder, version="v2", metric=True, max_depth=cfg.max_depth))
    if cfg.student_init == "checkpoint":
        loaded = load_model(cfg.init, encoder=cfg.encoder)
        if loaded.config.metric:
            model.load_state_dict(loaded.model.state_dict())
            scale = "" if loaded.config.max_depth == cfg.max_depth else \
                f"; it was trained for {loaded.config.max_depth:g} m, this run predicts up to {cfg.max_depth:g} m"
            return model.train(), f"fine-tuned from the metric model {loaded.model_id}{scale}"
        model.encoder.load_state_dict(loaded.model.encoder.state_dict())
        return model.train(), f"encoder of the relative model {loaded.model_id}, new metric decoder"
    if cfg.student_init == "dinov2":
        path = Path(cfg.encoder_init) if cfg.encoder_init else dinov2_weights(cfg.encoder)
        load_encoder_weights(model.encoder, path)
        return model.train(), f"DINOv2 encoder from {path.name}, new metric decoder"
    return model.train(), "random initialisation, new metric decoder"
