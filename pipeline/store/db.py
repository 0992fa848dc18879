"""Connections: one sqlite-utils Database per thread (and per process), WAL, foreign keys on.

A sqlite3 connection made in one thread cannot be used in another (Gradio runs handlers on a
thread pool), so `Connections` keeps one per thread in a `threading.local` and makes a new one
after a fork. Writes go through `write(db)`: `BEGIN IMMEDIATE` takes the write lock before the
first read, so a read-check-write (the optimistic revision check) cannot interleave with
another writer, and a waiting writer waits (busy timeout) instead of failing.
"""
from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import sqlite_utils

from .errors import StoreError
from .schema import migrate

BUSY_TIMEOUT_S = 30.0


def utc_now() -> str:
    """ISO-8601 UTC with microseconds: sortable text, e.g. '2026-11-23T22:52:46.123456Z'."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def store_name(db: sqlite_utils.Database) -> str:
    """The database file's name (for messages: "image 42 is not in the store studio.db")."""
    row = db.conn.execute("PRAGMA database_list").fetchone()
    return Path(row[2]).name if row and row[2] else "(in memory)"


def connect(path: str | os.PathLike, *, migrate_schema: bool = True) -> sqlite_utils.Database:
    """Open (creating if needed) the store database at `path`, migrated to the current schema."""
    path = Path(path)
    if not path.parent.is_dir():
        raise StoreError(f"cannot create the label database {path}: folder {path.parent} does not exist")
    try:
        conn = sqlite3.connect(str(path), timeout=BUSY_TIMEOUT_S)
        _set_wal(conn)
    except sqlite3.DatabaseError as e:
        raise StoreError(f"{path} is not a usable SQLite database ({e}); pass another --db") from None
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute("PRAGMA synchronous=NORMAL")   # WAL + NORMAL: a killed process loses nothing committed
    if migrate_schema:
        migrate(conn, name=str(path))
    return sqlite_utils.Database(conn)


def _set_wal(conn: sqlite3.Connection) -> None:
    """Switch to WAL. SQLite answers "database is locked" at once, without its busy handler, when
    several connections switch a new file at the same moment, so retry up to the busy timeout."""
    deadline = time.monotonic() + BUSY_TIMEOUT_S
    delay = 0.005
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) or time.monotonic() > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.2)


@contextlib.contextmanager
def write(db: sqlite_utils.Database) -> Iterator[sqlite_utils.Database]:
    """One write transaction (BEGIN IMMEDIATE ... COMMIT); nested calls become savepoints."""
    if db.conn.in_transaction:
        with db.atomic():
            yield db
        return
    db.conn.execute("BEGIN IMMEDIATE")
    try:
        yield db
    except BaseException:
        if db.conn.in_transaction:
            db.conn.execute("ROLLBACK")
        raise
    else:
        db.conn.execute("COMMIT")


class Connections:
    """Per-thread, per-process Database objects for one file. Cheap to share across threads."""

    def __init__(self, path: Path):
        self.path = path
        self._local = threading.local()
        self._lock = threading.Lock()
        self._migrated = False

    def get(self) -> sqlite_utils.Database:
        local = self._local
        db = getattr(local, "db", None)
        if db is None or getattr(local, "pid", None) != os.getpid():
            with self._lock:                      # migrate once per Store, not per thread
                db = connect(self.path, migrate_schema=not self._migrated)
                self._migrated = True
            local.db, local.pid = db, os.getpid()
        return db

    def close(self) -> None:
        """Close this thread's connection (others close when their thread ends)."""
        db = getattr(self._local, "db", None)
        if db is not None:
            db.close()
            self._local.db = None
