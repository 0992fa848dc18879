"""Registering a finished run in the label store: one record type, one writer.

    register_run(db_or_store, run_dir, job_id=None) -> the store's Checkpoint

The record is read from the run's final checkpoint itself (its project metadata: the ModelConfig
with `metric` / `max_depth`, and the training meta the recipe wrote), so whoever registers a run
writes the same row:
- the run, when it finishes (the recipe's cleanup on rank 0, when it trains from a store);
- the studio at start, for runs that finished while it was down (TrainingService.startup).
Registering the same file again updates its row. Nothing registers while reading (a status poll).

    config  = ModelConfig.to_dict() + {"train_config": the TrainConfig as saved}
    metrics = {"step", "last_loss", "images", "data_sha256"}
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .run_folder import RunFolder

METRIC_KEYS = ("step", "last_loss", "images", "data_sha256")


@dataclass(frozen=True)
class RunRecord:
    """What the store records of a finished run."""

    path: Path                  # the final weights
    model_id: str               # the run's name
    config: dict                # ModelConfig.to_dict() + {"train_config": {...}}
    metrics: dict               # METRIC_KEYS
    note: str                   # where the student's weights came from

    @classmethod
    def of(cls, run_dir: str | os.PathLike) -> RunRecord:
        from ..weights.loading import project_metadata
        run = RunFolder(run_dir)
        project = project_metadata(run.final)
        meta = project.get("meta") or {}
        data = meta.get("data") or {}
        metrics = {"step": meta.get("step"), "last_loss": meta.get("last_loss"), "images": data.get("count"),
                   "data_sha256": data.get("sha256")}
        config = {**project["config"], "train_config": meta.get("train_config") or {}}
        return cls(run.final.resolve(), run.name, config, metrics, str(meta.get("init") or ""))


def register_run(store, run_dir: str | os.PathLike, *, job_id: int | None = None, author: str = "system"):
    """Record the finished run in `run_dir` (its final weights) in `store` (a Store or a database path)."""
    from ..store import Store
    store = store if isinstance(store, Store) else Store(store)
    rec = RunRecord.of(run_dir)
    return store.register_checkpoint(rec.path, rec.model_id, rec.config, metrics=rec.metrics, job_id=job_id,
                                     note=rec.note, author=author)


def is_registered(store, run_dir: str | os.PathLike) -> bool:
    final = str(RunFolder(run_dir).final.resolve())
    return any(c.path == final for c in store.list_checkpoints())
