"""Fixtures for the sharded-labelling tests: a tiny random teacher (vitt)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from shard_helpers import INPUT_SIZE, MODEL_ID

from pipeline.config import ModelConfig
from pipeline.model import DepthAnything
from pipeline.predictor import Predictor
from pipeline.weights.loading import save_checkpoint


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    return save_checkpoint(DepthAnything(ModelConfig(encoder="vitt")).eval(),
                           tmp_path_factory.mktemp("teacher") / "teacher.safetensors", model_id=MODEL_ID)


@pytest.fixture(scope="session")
def predictor(checkpoint) -> Predictor:
    return Predictor.from_checkpoint(checkpoint, device="cpu", input_size=INPUT_SIZE)
