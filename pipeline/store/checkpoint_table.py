"""Trained checkpoints and their metrics (the registry the predictor cache and evaluation read)."""
from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from . import audit
from .db import utc_now, write
from .errors import NotFoundError
from .records import Checkpoint


def register_checkpoint(db, path: str | Path, model_id: str, config: Mapping, *,
                        metrics: Mapping | None = None, job_id: int | None = None,
                        note: str | None = None, author: str = "system") -> Checkpoint:
    """Record a saved checkpoint (absolute path). Registering the same path again updates it."""
    path = str(Path(path).resolve())
    with write(db):
        db.conn.execute(
            "INSERT INTO checkpoints (path, model_id, config, metrics, job_id, note, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(path) DO UPDATE SET model_id = excluded.model_id, "
            "config = excluded.config, metrics = coalesce(excluded.metrics, metrics), "
            "job_id = coalesce(excluded.job_id, job_id), note = coalesce(excluded.note, note)",
            (path, model_id, json.dumps(dict(config), sort_keys=True),
             json.dumps(dict(metrics), sort_keys=True) if metrics is not None else None,
             job_id, note, utc_now()))
        ckpt_id = db.execute("SELECT id FROM checkpoints WHERE path = ?", [path]).fetchone()[0]
        audit.record(db, author, "checkpoint.register", "checkpoint", ckpt_id,
                     {"path": path, "model_id": model_id, "job_id": job_id})
    return get_checkpoint(db, ckpt_id)


def get_checkpoint(db, checkpoint_id: int) -> Checkpoint:
    rows = list(db.query("SELECT * FROM checkpoints WHERE id = ?", [int(checkpoint_id)]))
    if not rows:
        raise NotFoundError(f"checkpoint {checkpoint_id} is not registered in the store")
    return Checkpoint.from_row(rows[0])


def find_checkpoint(db, model_id: str) -> Checkpoint | None:
    """The newest checkpoint registered under `model_id`."""
    rows = list(db.query("SELECT * FROM checkpoints WHERE model_id = ? ORDER BY id DESC LIMIT 1",
                              [model_id]))
    return Checkpoint.from_row(rows[0]) if rows else None


def list_checkpoints(db) -> list[Checkpoint]:
    """Newest first."""
    return [Checkpoint.from_row(r) for r in db.query("SELECT * FROM checkpoints ORDER BY id DESC")]


def update_checkpoint_metrics(db, checkpoint_id: int, metrics: Mapping, *,
                              author: str = "system") -> Checkpoint:
    """Merge `metrics` into the checkpoint's metrics (e.g. after an evaluation run)."""
    with write(db):
        merged = {**get_checkpoint(db, checkpoint_id).metrics, **dict(metrics)}
        db.conn.execute("UPDATE checkpoints SET metrics = ? WHERE id = ?",
                        (json.dumps(merged, sort_keys=True), int(checkpoint_id)))
        audit.record(db, author, "checkpoint.metrics", "checkpoint", int(checkpoint_id),
                     {"keys": sorted(metrics)})
    return get_checkpoint(db, checkpoint_id)
