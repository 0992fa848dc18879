"""Fixtures for the studio tests: settings in a temp data folder, a tiny vitt checkpoint, test images."""
from __future__ import annotations

import pytest

# pytest puts this folder on sys.path (rootdir-less test folders, default import mode)
from images import bad_inputs, odd_but_valid_inputs, small_rgb  # noqa: E402,F401


@pytest.fixture
def settings(tmp_path):
    from pipeline.settings import StudioSettings
    return StudioSettings(data_dir=tmp_path / "data", device="cpu")


@pytest.fixture(scope="session")
def vitt_checkpoint(tmp_path_factory):
    """A project safetensors checkpoint of a random (seeded) tiny vitt network."""
    import torch

    from pipeline.config import ModelConfig
    from pipeline.weights.loading import save_checkpoint, untrained_model
    torch.manual_seed(0)
    loaded = untrained_model(ModelConfig(encoder="vitt"))
    return save_checkpoint(loaded.model, tmp_path_factory.mktemp("vitt") / "tiny_vitt.safetensors",
                           model_id="tiny-vitt")


@pytest.fixture
def vitt_service(settings, vitt_checkpoint):
    from pipeline.services.depth_service import DepthService
    return DepthService(settings, sources=[], default=str(vitt_checkpoint))




@pytest.fixture(scope="session")
def metric_vitt_checkpoint(tmp_path_factory):
    """A random (seeded) tiny vitt metric network (max depth 20 m): predicts metres."""
    import torch

    from pipeline.config import ModelConfig
    from pipeline.weights.loading import save_checkpoint, untrained_model
    torch.manual_seed(0)
    loaded = untrained_model(ModelConfig(encoder="vitt", metric=True, max_depth=20.0))
    return save_checkpoint(loaded.model, tmp_path_factory.mktemp("metric_vitt") / "tiny_metric.safetensors",
                           model_id="tiny-metric")


@pytest.fixture
def metric_service(settings, metric_vitt_checkpoint):
    from pipeline.services.depth_service import DepthService
    return DepthService(settings, sources=[], default=str(metric_vitt_checkpoint))
