"""Who did what when: one row per store write, written inside that write's transaction."""
from __future__ import annotations

import json

import sqlite_utils

from .db import utc_now
from .records import AuditEntry


def record(db: sqlite_utils.Database, actor: str, action: str, entity: str,
           entity_id: int | None, detail: dict | None = None) -> None:
    """Append an audit row (call inside the write transaction it describes)."""
    db.conn.execute(
        "INSERT INTO audit (at, actor, action, entity, entity_id, detail) VALUES (?, ?, ?, ?, ?, ?)",
        (utc_now(), actor or "unknown", action, entity, entity_id,
         json.dumps(detail, sort_keys=True) if detail else None))


def audit_log(db, *, entity: str | None = None, entity_id: int | None = None,
              limit: int = 100) -> list[AuditEntry]:
    """Newest first; optionally only one entity ('image', 'job', ...) or one of its ids."""
    where, params = [], []
    if entity is not None:
        where.append("entity = ?")
        params.append(entity)
    if entity_id is not None:
        where.append("entity_id = ?")
        params.append(entity_id)
    sql = "SELECT * FROM audit" + (" WHERE " + " AND ".join(where) if where else "")
    rows = db.query(sql + " ORDER BY id DESC LIMIT ?", [*params, int(limit)])
    return [AuditEntry.from_row(r) for r in rows]
