"""Garbage collection of the store's files: arrays and images no row refers to any more.

Nothing is overwritten in the store, but files still become unreferenced: a correction refused
as stale after its arrays were written, two jobs writing the same prediction, a writer killed
between its file and its row, rows removed by a later feature (images deleted, predictions
dropped). `collect_garbage(db, blobs)` (the connection and the files; `Store.collect_garbage`):

1. puts back files a killed collector left under a trash name (`BlobStore.restore_trash`);
2. in one write transaction, deletes `arrays` rows older than the grace period that no column
   refers to. The referring columns are read from the schema itself: every foreign key to
   `arrays(sha256)` and every column whose name ends in `sha256`, so a table added later is
   counted without a change here (even one that forgot to declare its foreign key);
3. deletes every blob file whose sha256 no such column holds (images' and arrays' own included),
   last modified before the grace period (`BlobStore.remove_if_stale`: moved to a trash name,
   looked at again, then deleted), and temporary files killed writers left
   (`sweep_temp_files`).

Concurrent writers: a writer puts its file, then commits the row that refers to it. A file
younger than the grace period is never removed, and `BlobStore.put_bytes` refreshes the time of
a file it finds already there, so a writer has `grace_s` (default one hour) between writing its
file and committing its row; the store's own writers take milliseconds. The move-then-recheck in
`remove_if_stale` closes the gap between the collector's look at a file and its removal.

Kill -9: step 2 is one transaction (all or nothing); a collector killed in step 3 leaves at most
a trash file, restored by the next collection or by the first read that misses it. Only one
collection runs at a time per store (a lock file); a second one returns at once.
"""
from __future__ import annotations

import contextlib
import fcntl
import time
from dataclasses import dataclass
from datetime import datetime, timezone

from .blobs import BlobStore
from .db import write
from .errors import CorruptRecordError

DEFAULT_GRACE_S = 3600.0


@dataclass
class GcReport:
    removed_files: int = 0
    removed_bytes: int = 0
    removed_rows: int = 0          # unreferenced `arrays` rows
    kept_young: int = 0            # unreferenced files younger than the grace period (a writer may own them)
    restored: int = 0              # trash files a killed collection left, put back
    temp_files: int = 0            # half-written files of killed writers, removed
    skipped: str | None = None     # why nothing was done (another collection running)

    def summary(self) -> str:
        if self.skipped:
            return self.skipped
        return (f"removed {self.removed_files} unreferenced file(s) ({self.removed_bytes / 1024 ** 2:.1f} MB), "
                f"{self.removed_rows} array row(s) and {self.temp_files} temporary file(s); kept "
                f"{self.kept_young} unreferenced file(s) younger than the grace period")


def sha_columns(conn) -> list[tuple[str, str]]:
    """(table, column) of every column that may hold a blob's sha256, read from the schema: the
    foreign keys to arrays(sha256) and every column named `...sha256` (arrays.sha256 included)."""
    tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' "
                                         "AND name NOT LIKE 'sqlite_%'")]
    refs = []
    for table in tables:
        for fk in conn.execute(f"PRAGMA foreign_key_list('{table}')"):   # id, seq, table, from, to, ...
            if fk[2] == "arrays":
                refs.append((table, fk[3]))
        for col in conn.execute(f"PRAGMA table_info('{table}')"):       # cid, name, type, ...
            if col[1].lower().endswith("sha256"):
                refs.append((table, col[1]))
    return list(dict.fromkeys(refs))


def array_references(conn) -> list[tuple[str, str]]:
    """The columns that keep an `arrays` row alive (all sha columns but the row's own)."""
    return [(t, c) for t, c in sha_columns(conn) if (t, c) != ("arrays", "sha256")]


def _iso(posix: float) -> str:
    return datetime.fromtimestamp(posix, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _delete_unreferenced_rows(db, cutoff: float) -> int:
    with write(db):
        refs = array_references(db.conn)
        unused = " AND ".join(f'NOT EXISTS (SELECT 1 FROM "{t}" WHERE "{t}"."{c}" = arrays.sha256)' for t, c in refs)
        sql = "DELETE FROM arrays WHERE created_at < ?" + (f" AND {unused}" if unused else "")
        return db.conn.execute(sql, [_iso(cutoff)]).rowcount


def _referenced_shas(db) -> set[str]:
    conn = db.conn
    shas: set[str] = set()
    for table, column in sha_columns(conn):
        shas.update(r[0] for r in conn.execute(f'SELECT "{column}" FROM "{table}" WHERE "{column}" IS NOT NULL'))
    return shas


@contextlib.contextmanager
def _exclusive(blobs: BlobStore):
    blobs.root.mkdir(parents=True, exist_ok=True)
    with open(blobs.root / ".gc.lock", "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def collect_garbage(db, blobs: BlobStore, *, grace_s: float = DEFAULT_GRACE_S, dry_run: bool = False) -> GcReport:
    """Remove files (and `arrays` rows) nothing refers to, older than `grace_s` seconds. See above."""
    report = GcReport()
    with _exclusive(blobs) as mine:
        if not mine:
            report.skipped = "another garbage collection of this store is running; nothing done"
            return report
        cutoff = time.time() - float(grace_s)
        report.restored = blobs.restore_trash()
        if not dry_run:
            report.removed_rows = _delete_unreferenced_rows(db, cutoff)
        referenced = _referenced_shas(db)              # after the rows went: their files go too
        for sha, _ext, path in blobs.blob_files():
            if sha in referenced:
                continue
            try:
                young = path.stat().st_mtime >= cutoff
            except FileNotFoundError:
                continue
            if young:
                report.kept_young += 1
            elif dry_run:
                report.removed_files += 1
                report.removed_bytes += path.stat().st_size
            else:
                removed = blobs.remove_if_stale(path, cutoff)
                report.removed_files += bool(removed)
                report.removed_bytes += removed
        if not dry_run:
            report.temp_files = sweep_temp_files(blobs, older_than_s=grace_s)
    return report


def sweep_temp_files(blobs: BlobStore, older_than_s: float = 3600.0) -> int:
    """Delete temporary blob files older than `older_than_s` (left by killed writers); count."""
    cutoff, n = time.time() - older_than_s, 0
    for p in blobs.temp_files():
        with contextlib.suppress(FileNotFoundError):
            if p.stat().st_mtime <= cutoff:
                p.unlink()
                n += 1
    return n


def verify(db, blobs: BlobStore) -> list[str]:
    """Check every stored file against its hash; return one line per problem ([] = healthy)."""
    problems = []
    for r in db.query("SELECT id, name, sha256, ext FROM images ORDER BY id"):
        try:
            blobs.read_bytes(r["sha256"], r["ext"], what=f"image {r['id']} ({r['name']})")
        except CorruptRecordError as e:
            problems.append(str(e))
    for r in db.query("SELECT sha256 FROM arrays ORDER BY sha256"):
        try:
            blobs.read_array(r["sha256"])
        except CorruptRecordError as e:
            problems.append(str(e))
    return problems


class PeriodicCollector:
    """`collect_garbage` every `every_s` seconds in a daemon thread: the studio's periodic pass.

        collector = PeriodicCollector(store).start()    # first pass after `first_after_s`
        ...; collector.stop()
    A failed pass is logged and retried at the next period; `last` holds the latest report.
    """

    def __init__(self, store, *, every_s: float = 6 * 3600.0, grace_s: float = DEFAULT_GRACE_S,
                 first_after_s: float = 60.0):
        import threading
        self.store, self.every_s, self.grace_s, self.first_after_s = store, float(every_s), float(grace_s), \
            float(first_after_s)
        self.last: GcReport | None = None
        self.passes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="store-gc", daemon=True)

    def start(self) -> PeriodicCollector:
        self._thread.start()
        return self

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def _run(self) -> None:
        import logging
        delay = self.first_after_s
        while not self._stop.wait(delay):
            try:
                self.last = self.store.collect_garbage(grace_s=self.grace_s)
                logging.getLogger(__name__).info("store gc: %s", self.last.summary())
            except Exception:                      # a full disk or a locked file must not end the pass for good
                logging.getLogger(__name__).exception("store gc failed; retrying in %.0f s", self.every_s)
            self.passes += 1
            delay = self.every_s
