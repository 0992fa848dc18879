"""`Store(path)`: the label store's one entry point, cheap to make and safe to share by threads.

One SQLite file and its content-addressed files folder:
    studio.db              the database (WAL: studio.db-wal / -shm beside it)
    studio-files/ab/cd...  image bytes and .npy arrays, named by sha256
Each thread gets its own connection on first use; writes are serialised by SQLite.

The work is done by table modules of plain functions that take this thread's connection (`db`)
and, where files are read or written, the blob store (`blobs`): every method below is one call
into one of them, so `store.save_revision(...)` reads as `edits.save_revision(db, blobs, ...)`.
The modules, lowest first (each imports only the ones above it):
    db, schema, errors, records, audit, blobs   connections, migrations, records, the audit row, files
    arrays      the `arrays` table, checks of depth / mask arrays
    images      the `images` table: add, look up, bytes
    revisions   reading revisions; the stale-head check
    points      point pairs and their flags (refreshed whenever a head moves)
    provenance  ground truth, human pixels, independent evidence
    edits       writing revisions: save, restore, undo / redo
    predictions model predictions and the pseudo-label they start
    tags, gallery, pages, review   tags; filters + counts; keyset pages; status decisions
    holdout, training              the held-out split; what training reads
    jobs, checkpoints, gc          job records; trained checkpoints; garbage collection + verify
"""
from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np
import sqlite_utils

from . import (
    audit,
    edits,
    gallery,
    gc,
    images,
    jobs,
    pages,
    points,
    predictions,
    provenance,
    review,
    revisions,
    training,
)
from . import (
    checkpoint_table as checkpoints,
)
from . import tags as image_tags  # the `image_tags` table (a method's `tags` argument keeps its name)
from .blobs import BlobStore
from .db import Connections, write
from .records import (
    AuditEntry,
    Checkpoint,
    ImageRecord,
    Job,
    Label,
    Location,
    Page,
    PointPair,
    PredictionRecord,
    Revision,
    TrainingItem,
)
from .schema import user_version


def files_dir_for(db_path: Path) -> Path:
    return db_path.parent / f"{db_path.stem}-files"


class Store:
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

    # ------------------------------------------------------------------ images (images.py)
    def add_image(self, data: bytes, name: str, **kw) -> tuple[ImageRecord, bool]:
        return images.add_image(self.db, self.blobs, data, name, **kw)

    def get_image(self, image_id: int) -> ImageRecord:
        return images.get_image(self.db, self.blobs, image_id)

    def find_image(self, sha256: str) -> ImageRecord | None:
        return images.find_image(self.db, self.blobs, sha256)

    def image_bytes(self, image_id: int) -> bytes:
        return images.image_bytes(self.db, self.blobs, image_id)

    def image_ids(self, statuses: str | Iterable[str] | None = None) -> list[int]:
        return images.image_ids(self.db, statuses)

    def image_hashes(self) -> list[tuple[int, str]]:
        return images.image_hashes(self.db)

    # ------------------------------------------------------------------ review (review.py)
    def set_status(self, image_id: int, status: str, **kw) -> ImageRecord:
        return review.set_status(self.db, self.blobs, image_id, status, **kw)

    def set_statuses(self, image_ids: Iterable[int], status: str, **kw) -> review.StatusChanges:
        return review.set_statuses(self.db, image_ids, status, **kw)

    def set_statuses_where(self, to: str, /, **kw) -> review.StatusChanges:
        return review.set_statuses_where(self.db, to, **kw)

    def check_head(self, image_id: int, expected_head) -> None:
        """Read-only: StaleRevisionError when the image's head is not `expected_head` (revisions.check_head)."""
        revisions.check_head(self.db, images.image_row(self.db, image_id), expected_head)

    # ------------------------------------------------------------------ gallery (gallery.py, pages.py)
    def count_by_status(self) -> dict[str, int]:
        return gallery.count_by_status(self.db)

    def count_images(self, status: str | Iterable[str] | None = None, clip: str | None = None, **narrow) -> int:
        return gallery.count_images(self.db, status, clip, **narrow)

    def confidence_histogram(self, status: str | Iterable[str] | None = None) -> gallery.Histogram:
        return gallery.confidence_histogram(self.db, status)

    def clips(self) -> list[tuple[str, int]]:
        return gallery.clips(self.db)

    def list_images(self, **kw) -> Page:
        return pages.list_images(self.db, self.blobs, **kw)

    def filtered_ids(self, **kw) -> Iterable[int]:
        return pages.filtered_ids(self.db, **kw)

    def locate(self, image_id: int, **kw) -> Location:
        return pages.locate(self.db, image_id, **kw)

    def neighbours(self, image_id: int, **kw) -> tuple[int | None, int | None]:
        return pages.neighbours(self.db, image_id, **kw)

    # ------------------------------------------------------------------ predictions (predictions.py)
    def get_prediction(self, image_id: int, model_id: str) -> PredictionRecord | None:
        return predictions.get_prediction(self.db, image_id, model_id)

    def predictions(self, image_id: int) -> list[PredictionRecord]:
        return predictions.predictions(self.db, image_id)

    def prediction_array(self, prediction: PredictionRecord) -> np.ndarray:
        return predictions.prediction_array(self.blobs, prediction)

    def pseudo_label_done(self, image_id: int, model_id: str) -> bool:
        return predictions.pseudo_label_done(self.db, image_id, model_id)

    def images_without_prediction(self, model_id: str) -> list[int]:
        return predictions.images_without_prediction(self.db, model_id)

    def add_prediction(self, image_id: int, model_id: str, kind: str, array: np.ndarray,
                       **kw) -> tuple[PredictionRecord, bool]:
        return predictions.add_prediction(self.db, self.blobs, image_id, model_id, kind, array, **kw)

    # ------------------------------------------------------------------ revisions (revisions.py, edits.py)
    def get_revision(self, revision_id: int) -> Revision:
        return revisions.get_revision(self.db, revision_id)

    def head(self, image_id: int) -> Revision | None:
        return revisions.head(self.db, image_id)

    def history(self, image_id: int) -> revisions.History:
        return revisions.history(self.db, image_id)

    def load_label(self, revision: int | Revision) -> Label:
        return revisions.load_label(self.db, self.blobs, revision)

    def read_array(self, sha256: str) -> np.ndarray:
        return self.blobs.read_array(sha256)

    def save_revision(self, image_id: int, depth: np.ndarray | None = None, **kw) -> Revision:
        return edits.save_revision(self.db, self.blobs, image_id, depth, **kw)

    def restore_revision(self, image_id: int, revision_id: int, **kw) -> Revision:
        return edits.restore_revision(self.db, self.blobs, image_id, revision_id, **kw)

    def undo(self, image_id: int, **kw) -> Revision:
        return edits.undo(self.db, self.blobs, image_id, **kw)

    def redo(self, image_id: int, **kw) -> Revision:
        return edits.redo(self.db, self.blobs, image_id, **kw)

    # ------------------------------------------------------------------ provenance (provenance.py)
    def add_ground_truth(self, image_id: int, values: np.ndarray, **kw) -> tuple[Revision, bool]:
        return provenance.add_ground_truth(self.db, self.blobs, image_id, values, **kw)

    def ground_truth(self, image_id: int) -> Revision | None:
        return provenance.ground_truth(self.db, image_id)

    def require_ground_truth(self, image_id: int) -> Revision:
        return provenance.require_ground_truth(self.db, image_id)

    def valid_pixels(self, revision: Revision) -> np.ndarray | None:
        return provenance.valid_pixels(self.blobs, revision)

    def human_pixels(self, revision: Revision) -> np.ndarray | None:
        return provenance.human_pixels(self.db, self.blobs, revision)

    def evidence(self, image_id: int) -> provenance.Evidence:
        return provenance.evidence(self.db, self.blobs, image_id)

    def evidence_image_ids(self) -> list[int]:
        return provenance.evidence_image_ids(self.db)

    # ------------------------------------------------------------------ point pairs (points.py)
    def add_point_pair(self, image_id: int, point1: Sequence[int], point2: Sequence[int], closer: int,
                       **kw) -> PointPair:
        return points.add_point_pair(self.db, self.blobs, image_id, point1, point2, closer, **kw)

    def point_pairs(self, image_id: int, **kw) -> list[PointPair]:
        return points.point_pairs(self.db, image_id, **kw)

    def set_point_pair_flags(self, flags: Mapping[int, bool], **kw) -> None:
        points.set_point_pair_flags(self.db, flags, **kw)

    def delete_point_pair(self, pair_id: int, **kw) -> None:
        points.delete_point_pair(self.db, pair_id, **kw)

    # ------------------------------------------------------------------ training (training.py, holdout.py)
    def training_items(self, statuses: str | Iterable[str] = training.LABELLED, **kw) -> list[TrainingItem]:
        return training.training_items(self.db, self.blobs, statuses, **kw)

    def iter_training_items(self, statuses: str | Iterable[str] = training.LABELLED,
                            **kw) -> Iterator[TrainingItem]:
        return training.iter_training_items(self.db, self.blobs, statuses, **kw)

    def ground_truth_training_items(self, **kw) -> list[TrainingItem]:
        return training.ground_truth_training_items(self.db, self.blobs, **kw)

    def held_out_ids(self, fraction: float) -> list[int]:
        return training.held_out_ids(self.db, fraction)

    # ------------------------------------------------------------------ jobs (jobs.py)
    def create_job(self, kind: str, argv: list[str], **kw) -> Job:
        return jobs.create_job(self.db, kind, argv, **kw)

    def get_job(self, job_id: int) -> Job:
        return jobs.get_job(self.db, job_id)

    def list_jobs(self, **kw) -> list[Job]:
        return jobs.list_jobs(self.db, **kw)

    def claim_job(self, job_id: int, pid: int, **kw) -> Job:
        return jobs.claim_job(self.db, job_id, pid, **kw)

    def update_progress(self, job_id: int, done: int, **kw) -> Job:
        return jobs.update_progress(self.db, job_id, done, **kw)

    def heartbeat(self, job_id: int) -> Job:
        return jobs.heartbeat(self.db, job_id)

    def append_log(self, job_id: int, lines: str | Iterable[str]) -> None:
        jobs.append_log(self.db, job_id, lines)

    def job_log(self, job_id: int, **kw) -> list[tuple[int, str, str]]:
        return jobs.job_log(self.db, job_id, **kw)

    def append_metrics(self, job_id: int, step: int, values: Mapping[str, float]) -> None:
        jobs.append_metrics(self.db, job_id, step, values)

    def job_metrics(self, job_id: int, name: str | None = None) -> list[tuple[int, str, float]]:
        return jobs.job_metrics(self.db, job_id, name)

    def request_cancel(self, job_id: int, **kw) -> Job:
        return jobs.request_cancel(self.db, job_id, **kw)

    def finish_job(self, job_id: int, status: str, **kw) -> Job:
        return jobs.finish_job(self.db, job_id, status, **kw)

    # ------------------------------------------------------------------ checkpoints (checkpoints.py)
    def register_checkpoint(self, path: str | Path, model_id: str, config: Mapping, **kw) -> Checkpoint:
        return checkpoints.register_checkpoint(self.db, path, model_id, config, **kw)

    def get_checkpoint(self, checkpoint_id: int) -> Checkpoint:
        return checkpoints.get_checkpoint(self.db, checkpoint_id)

    def find_checkpoint(self, model_id: str) -> Checkpoint | None:
        return checkpoints.find_checkpoint(self.db, model_id)

    def list_checkpoints(self) -> list[Checkpoint]:
        return checkpoints.list_checkpoints(self.db)

    def update_checkpoint_metrics(self, checkpoint_id: int, metrics: Mapping, **kw) -> Checkpoint:
        return checkpoints.update_checkpoint_metrics(self.db, checkpoint_id, metrics, **kw)

    # ------------------------------------------------------------------ audit and tags (audit.py, tags.py)
    def audit_log(self, **kw) -> list[AuditEntry]:
        return audit.audit_log(self.db, **kw)

    def add_tags(self, image_ids: Iterable[int], tags: str | Iterable[str], **kw) -> int:
        return image_tags.add_tags(self.db, image_ids, tags, **kw)

    def remove_tags(self, image_ids: Iterable[int], tags: str | Iterable[str], **kw) -> int:
        return image_tags.remove_tags(self.db, image_ids, tags, **kw)

    def tags_of(self, image_id: int) -> list[str]:
        return image_tags.tags_of(self.db, image_id)

    def tag_counts(self, limit: int = 200) -> list[tuple[str, int]]:
        return image_tags.tag_counts(self.db, limit)

    # ------------------------------------------------------------------ integrity (gc.py)
    def sweep_temp_files(self, older_than_s: float = 3600.0) -> int:
        return gc.sweep_temp_files(self.blobs, older_than_s)

    def collect_garbage(self, *, grace_s: float = gc.DEFAULT_GRACE_S, dry_run: bool = False) -> gc.GcReport:
        return gc.collect_garbage(self.db, self.blobs, grace_s=grace_s, dry_run=dry_run)

    def verify(self) -> list[str]:
        return gc.verify(self.db, self.blobs)
