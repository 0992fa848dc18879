"""One record of a finished run: read from its final checkpoint, written by register_run; rows of the two
earlier writers are migrated to the same schema (migration 9)."""
from __future__ import annotations

import json
import sqlite3

from pipeline.store import Store
from pipeline.store.schema import migrate


def test_old_checkpoint_rows_get_the_one_metrics_schema(tmp_path):
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    assert migrate(conn, target=6) == 6
    rows = [("/r/a.safetensors", {"steps": 40, "last_loss": 0.5, "images": 3}),        # the recipe's
            ("/r/b.safetensors", {"step": 7, "loss": 0.25, "eta_s": 1.0}),             # the studio's
            ("/r/c.safetensors", {"step": 9, "last_loss": 0.1}),                       # already the schema
            ("/r/d.safetensors", None)]
    for i, (p, metrics) in enumerate(rows, 1):
        conn.execute("INSERT INTO checkpoints (id, path, model_id, config, metrics, created_at) "
                     "VALUES (?, ?, ?, '{}', ?, 't')", (i, p, f"m{i}", None if metrics is None else json.dumps(metrics)))
    conn.commit()
    conn.close()
    got = {c.path: c.metrics for c in Store(path).list_checkpoints()}
    assert got["/r/a.safetensors"] == {"step": 40, "last_loss": 0.5, "images": 3}
    assert got["/r/b.safetensors"] == {"step": 7, "last_loss": 0.25, "eta_s": 1.0}
    assert got["/r/c.safetensors"] == {"step": 9, "last_loss": 0.1}
    assert got["/r/d.safetensors"] == {}
