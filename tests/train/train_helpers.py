"""Helpers and fixtures for the training tests (import them: `from train_helpers import ...`): tiny synthetic data sets and tiny (vitt) run configurations."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pipeline.train.synthetic import write_scenes
from pipeline.train.train_config import TrainConfig

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session", name="scenes_dir")
def scenes_dir_fixture(tmp_path_factory) -> Path:
    """8 synthetic 48x48 scenes with exact depth (scene_XXX.png + scene_XXX.npy)."""
    return write_scenes(tmp_path_factory.mktemp("scenes") / "data", 8, seed=0, height=48, width=48)


@pytest.fixture
def one_thread():
    """Training tests run single-threaded: on a shared 2-core machine a second OpenMP thread
    makes tiny steps 10-50x slower, not faster. The previous setting is restored."""
    import torch
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny_config(out_dir, data_dir, **kw) -> TrainConfig:
    base = dict(out_dir=str(out_dir), data_dir=str(data_dir), encoder="vitt", steps=6, batch_size=2,
                input_size=28, save_every=3, lr_encoder=1e-4, device="cpu", seed=0,
                student_init="random", feature_target="init")          # vitt has no released DINOv2
    base.update(kw)
    if "student_init" not in kw and (kw.get("init") or kw.get("encoder_init")):   # what the weights given imply
        base["student_init"] = "checkpoint" if kw.get("init") else "dinov2"
    if "feature_target" not in kw and kw.get("dinov2"):
        base["feature_target"] = "dinov2"
    return TrainConfig(**base)


def quiet(*_a, **_k):
    pass


def run_cli(args: list[str], *, timeout: float = 300, env_extra: dict | None = None,
            preexec_fn=None) -> subprocess.CompletedProcess:
    """`python -m pipeline train ARGS` in a subprocess (the real dispatcher)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "pipeline", "train", *args],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, preexec_fn=preexec_fn)


def state_dict_of(path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file
    return load_file(str(path))
