"""`Store(path)`: the label store's one entry point, cheap to make and safe to share by threads.

It combines the per-table mixins (images, predictions, revisions and their provenance, point
pairs, jobs, checkpoints, audit, tags) over one SQLite file and its content-addressed files folder:
    studio.db              the database (WAL: studio.db-wal / -shm beside it)
    studio-files/ab/cd...  image bytes and .npy arrays, named by sha256
Each thread gets its own connection on first use; writes are serialised by SQLite.
"""
from __future__ import annotations

import contextlib
import heapq
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

import sqlite_utils

from .audit import AuditMixin
from .blobs import BlobStore
from .checkpoints import CheckpointsMixin
from .db import Connections, write
from .errors import CorruptRecordError
from .gallery import GalleryMixin
from .images import ImagesMixin, check_statuses
from .jobs import JobsMixin
from .points import PointPairsMixin
from .predictions import PredictionsMixin
from .provenance import ProvenanceMixin
from .records import PointPair, TrainingItem
from .revisions import RevisionsMixin
from .schema import user_version
from .tags import TagsMixin


def files_dir_for(db_path: Path) -> Path:
    return db_path.parent / f"{db_path.stem}-files"


class Store(ImagesMixin, GalleryMixin, PredictionsMixin, RevisionsMixin, ProvenanceMixin, PointPairsMixin, JobsMixin,
            CheckpointsMixin, AuditMixin, TagsMixin):
    """The label store at `path` (created and migrated on first open)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path).expanduser().resolve()
        self.files_dir = files_dir_for(self.path)
        self.blobs = BlobStore(self.files_dir)
        self._conns = Connections(self.path)
        self._conns.get()            # create + migrate now, so errors surface at open

    def __repr__(self) -> str:
        return f"Store({str(self.path)!r})"

    @property
    def db(self) -> sqlite_utils.Database:
        """This thread's connection (sqlite-utils Database). Read freely; write via `write()`."""
        return self._conns.get()

    @contextlib.contextmanager
    def write(self) -> Iterator[sqlite_utils.Database]:
        """One write transaction on this thread's connection (BEGIN IMMEDIATE; nests)."""
        with write(self.db) as db:
            yield db

    def close(self) -> None:
        """Close the calling thread's connection (other threads' close when they end)."""
        self._conns.close()

    @property
    def schema_version(self) -> int:
        return user_version(self.db.conn)

    # ------------------------------------------------------------------ training
    def training_items(self, statuses: str | Iterable[str] = ("accepted", "corrected"), *,
                       after_id: int | None = None, limit: int | None = None) -> list[TrainingItem]:
        """The head label of every image with one of `statuses`, in image-id order.

        Arrays are loaded (and hash-checked) by `item.depth()` / `item.masks()`, so the list is
        cheap and picklable for DataLoader workers. Point pairs exclude deleted ones. With
        `limit` (and `after_id`, the last image id of the previous chunk) one keyset chunk:
        each status is an index range, so a chunk costs the same at any store size
        (`iter_training_items` walks them all).
        """
        st = check_statuses(statuses)
        if limit is None and after_id is None:
            where, params = f"i.status IN ({', '.join('?' * len(st))})", list(st)
        else:
            ids = self._training_ids(st, after_id, limit)
            where, params = f"i.id IN ({', '.join('?' * len(ids))})", ids
        rows = list(self.db.query(
            f"SELECT i.id AS image_id, i.sha256, i.ext, i.status, r.* FROM images i JOIN revisions r "
            f"ON r.id = i.head_revision_id WHERE {where} ORDER BY i.id", params))
        masks = self._masks_of([r["id"] for r in rows])
        pairs: dict[int, list[PointPair]] = {}
        for p in self.db.query(
                f"SELECT p.* FROM point_pairs p JOIN images i ON i.id = p.image_id WHERE p.deleted_at "
                f"IS NULL AND {where} ORDER BY p.id", params):
            pairs.setdefault(p["image_id"], []).append(PointPair.from_row(p))
        return self._training_records(rows, masks, pairs)

    def _training_records(self, rows, masks, pairs) -> list[TrainingItem]:
        return [TrainingItem(r["image_id"], self.blobs.path(r["sha256"], r["ext"]), r["status"], r["id"],
                             r["kind"], r["model_id"], r["depth_sha256"], masks[r["id"]],
                             pairs.get(r["image_id"], []), self.blobs, r.get("source") or "human",
                             r.get("valid_sha256")) for r in rows]

    def _training_ids(self, st: tuple[str, ...], after_id: int | None, limit: int | None) -> list[int]:
        """The next `limit` labelled image ids after `after_id` with one of the statuses (merged runs)."""
        n = -1 if limit is None else int(limit)
        runs = [[r[0] for r in self.db.execute(
            "SELECT id FROM images WHERE status = ? AND id > ? AND head_revision_id IS NOT NULL "
            "ORDER BY id LIMIT ?", [s, int(after_id or 0), n])] for s in st]
        ids = list(heapq.merge(*runs))
        return ids if limit is None else ids[:n]

    def iter_training_items(self, statuses: str | Iterable[str] = ("accepted", "corrected"), *,
                            chunk: int = 1000) -> Iterator[TrainingItem]:
        """`training_items` one keyset chunk at a time (a store of millions never becomes one list)."""
        after = 0
        while True:
            items = self.training_items(statuses, after_id=after, limit=chunk)
            yield from items
            if len(items) < chunk:
                return
            after = items[-1].image_id

    # ------------------------------------------------------------------ integrity
    def sweep_temp_files(self, older_than_s: float = 3600.0) -> int:
        """Delete temporary blob files older than `older_than_s` (left by killed writers); count."""
        import time
        cutoff, n = time.time() - older_than_s, 0
        for p in self.blobs.temp_files():
            with contextlib.suppress(FileNotFoundError):
                if p.stat().st_mtime <= cutoff:
                    p.unlink()
                    n += 1
        return n

    def collect_garbage(self, *, grace_s: float = 3600.0, dry_run: bool = False):
        """Remove files and `arrays` rows nothing refers to, older than `grace_s` (pipeline/store/gc.py)."""
        from .gc import collect_garbage
        return collect_garbage(self, grace_s=grace_s, dry_run=dry_run)

    def verify(self) -> list[str]:
        """Check every stored file against its hash; return one line per problem ([] = healthy)."""
        problems = []
        for r in self.db.query("SELECT id, name, sha256, ext FROM images ORDER BY id"):
            try:
                self.blobs.read_bytes(r["sha256"], r["ext"], what=f"image {r['id']} ({r['name']})")
            except CorruptRecordError as e:
                problems.append(str(e))
        for r in self.db.query("SELECT sha256 FROM arrays ORDER BY sha256"):
            try:
                self.blobs.read_array(r["sha256"])
            except CorruptRecordError as e:
                problems.append(str(e))
        return problems
