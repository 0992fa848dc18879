"""The layout of a training run's folder: the one place its file names are spelled.

    <run>/train_config.json                  the validated TrainConfig (written by whoever starts the
                                             run: CLI, studio or torchrun; read by `train --config`)
    <run>/metrics.jsonl                      one JSON line per logged step
    <run>/train_state.pt                     optimiser, scheduler, step, sampler, RNG states and the
                                             name of the checkpoint they belong with (state.py)
    <run>/checkpoints/step-000500.safetensors  weights + config + meta every `save_every` steps
    <run>/final.safetensors                  the finished model (its presence = the run finished)

Everything else (pipeline.train.state, the recipe, the training service, the CLI) asks a
`RunFolder` for these paths instead of spelling them.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from ..atomic import atomic_write

CONFIG_FILE = "train_config.json"
METRICS_FILE = "metrics.jsonl"
STATE_FILE = "train_state.pt"
FINAL_FILE = "final.safetensors"
CKPT_DIR = "checkpoints"
STEP_PATTERN = "step-*.safetensors"


def step_checkpoint_name(step: int) -> str:
    """The relative name of the checkpoint written at `step` (what the training state records)."""
    return f"{CKPT_DIR}/step-{step:06d}.safetensors"


@dataclass(frozen=True)
class RunFolder:
    path: Path

    def __init__(self, path: str | os.PathLike):
        object.__setattr__(self, "path", Path(path))

    @property
    def name(self) -> str:
        """The run's name: also the trained model's id."""
        return self.path.name

    @property
    def config(self) -> Path:
        return self.path / CONFIG_FILE

    @property
    def metrics(self) -> Path:
        return self.path / METRICS_FILE

    @property
    def state(self) -> Path:
        return self.path / STATE_FILE

    @property
    def final(self) -> Path:
        return self.path / FINAL_FILE

    @property
    def checkpoints(self) -> Path:
        return self.path / CKPT_DIR

    def file(self, relative: str) -> Path:
        """A file named relative to the run (as the training state names its checkpoint)."""
        return self.path / relative

    def step_checkpoints(self) -> list[Path]:
        return sorted(self.checkpoints.glob(STEP_PATTERN))

    def latest_checkpoint(self) -> Path | None:
        """The final weights when the run finished, else its newest step checkpoint (None: nothing saved)."""
        if self.finished:
            return self.final
        steps = self.step_checkpoints()
        return steps[-1] if steps else None

    @property
    def resumable(self) -> bool:
        """A saved state and its settings: `train --resume` can continue this run."""
        return self.state.is_file() and self.config.is_file()

    @property
    def finished(self) -> bool:
        return self.final.is_file()

    def write_config(self, settings: dict) -> Path:
        """The run's settings as JSON, atomically (pipeline.atomic)."""
        self.path.mkdir(parents=True, exist_ok=True)
        return atomic_write(self.config, json.dumps(settings, indent=2))

    def read_config(self) -> dict:
        """The saved settings as written (TrainConfig.saved_settings reads older ones)."""
        return json.loads(self.config.read_text())
