"""Model predictions (one per image and model) and the pseudo-label they start.

`add_prediction` is the pseudo-labelling job's one write per image: the prediction, its
confidence, and (when the image has no label yet) revision 1 with tool 'pseudo_label', all in
one transaction. Killed mid-way, nothing of that image is kept; run again, it is redone once.
A second add for the same (image, model) returns the existing prediction and writes nothing,
so a resumed job never creates duplicates.
"""
from __future__ import annotations

import numpy as np

from . import audit
from .arrays import add_array_row, check_depth
from .blobs import BlobStore
from .db import utc_now, write
from .edits import insert_revision, move_head
from .errors import InvalidValueError
from .images import image_row
from .points import refresh_flags
from .records import PredictionRecord
from .schema import DEPTH_KINDS


def get_prediction(db, image_id: int, model_id: str) -> PredictionRecord | None:
    rows = list(db.query("SELECT * FROM predictions WHERE image_id = ? AND model_id = ?",
                              [int(image_id), model_id]))
    return PredictionRecord.from_row(rows[0]) if rows else None


def predictions(db, image_id: int) -> list[PredictionRecord]:
    """Every model's prediction for the image, oldest first."""
    rows = db.query("SELECT * FROM predictions WHERE image_id = ? ORDER BY id", [int(image_id)])
    return [PredictionRecord.from_row(r) for r in rows]


def prediction_array(blobs: BlobStore, prediction: PredictionRecord) -> np.ndarray:
    """(H, W) float32, hash-checked."""
    return blobs.read_array(prediction.array_sha256,
                                 what=f"prediction {prediction.id} ({prediction.model_id})")


def pseudo_label_done(db, image_id: int, model_id: str) -> bool:
    return db.execute("SELECT 1 FROM predictions WHERE image_id = ? AND model_id = ?",
                           [int(image_id), model_id]).fetchone() is not None


def images_without_prediction(db, model_id: str) -> list[int]:
    """Image ids that `model_id` has not predicted yet, in import order (what a job resumes)."""
    rows = db.execute(
        "SELECT id FROM images WHERE id NOT IN (SELECT image_id FROM predictions WHERE model_id = ?) "
        "ORDER BY id", [model_id]).fetchall()
    return [r[0] for r in rows]


def add_prediction(db, blobs: BlobStore, image_id: int, model_id: str, kind: str, array: np.ndarray, *,
                   confidence: float | None = None, job_id: int | None = None,
                   make_label: bool = True, author: str | None = None) -> tuple[PredictionRecord, bool]:
    """Record `model_id`'s (H, W) float32 prediction for an image. Returns (prediction, created).

    make_label: when the image has no label yet, also create revision 1 (tool
    'pseudo_label') from it, make it the head, and set the image's confidence (the image
    stays 'pending' for review). An existing (image, model) prediction is returned as is.
    """
    if kind not in DEPTH_KINDS:
        raise InvalidValueError(f"prediction kind must be one of {DEPTH_KINDS}; got {kind!r}")
    existing = get_prediction(db, image_id, model_id)
    if existing is not None:
        return existing, False
    row = image_row(db, image_id)
    stored = blobs.put_array(check_depth(array, (row["height"], row["width"]),
                                         f"{model_id}'s prediction for image {image_id}"))
    author = author or f"model:{model_id}"
    with write(db):
        existing = get_prediction(db, image_id, model_id)     # re-check under the lock
        if existing is not None:
            return existing, False
        sha = add_array_row(db, stored)
        cur = db.conn.execute(
            "INSERT INTO predictions (image_id, model_id, kind, array_sha256, confidence, job_id, "
            "created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (int(image_id), model_id, kind, sha, confidence, job_id, utc_now()))
        pred_id = cur.lastrowid
        audit.record(db, author, "prediction.add", "image", int(image_id),
                     {"prediction_id": pred_id, "model_id": model_id, "job_id": job_id})
        row = image_row(db, image_id)
        if make_label and row["head_revision_id"] is None:
            rev_id = insert_revision(db, row, stored, {}, tool="pseudo_label", author=author, kind=kind,
                                     note=None, model_id=model_id, prediction_id=pred_id,
                                     source=f"model:{model_id}")
            move_head(db, row, rev_id, row["status"])
            refresh_flags(db, blobs, int(image_id), array)
            db.conn.execute("UPDATE images SET confidence = ? WHERE id = ?", (confidence, int(image_id)))
    return get_prediction(db, image_id, model_id), True
