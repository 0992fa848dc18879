"""Writing label revisions: every change appends one; undo/redo move the image's head pointer.

The revisions of an image form a tree (parent_id); reading them is revisions.py. Saving makes a
child of the head and moves the head to it; undo moves the head to its parent; redo moves it to
the newest child of the head. A save after an undo therefore starts a new branch; nothing is
deleted and `history()` lists every revision.

Optimistic concurrency: save/undo/redo take `expected_head` (the revision id the caller opened,
None for "no label yet"); if the head has moved, StaleRevisionError says who moved it when
(`revisions.check_head`). Pass ANY_HEAD to skip the check (batch tools that own the image).

Status follows the head: a save sets the status it is given ('corrected' by default); moving the
head to another label (undo, redo, restore) re-opens the review, because an accept / reject was a
decision about the label that is no longer current: the image becomes 'pending' when the new head
is a model's label (source 'model:<id>') and 'corrected' otherwise (a person's change, restored
measurements) (`head_status`). Undoing the only correction therefore gives back a pending pseudo-label.
Every write that moves a head refreshes the image's point-pair flags in its transaction
(`points.refresh_flags`).
"""
from __future__ import annotations

import json
from collections.abc import Mapping

import numpy as np

from . import audit
from .arrays import add_array_row, check_depth, check_mask, stored_array
from .blobs import BlobStore, StoredArray
from .db import utc_now, write
from .errors import HistoryError, InvalidValueError
from .images import ANY_HEAD, check_statuses, image_row, image_shape
from .points import refresh_flags
from .provenance import check_source, derived_human, human_pixels
from .records import Revision
from .revisions import check_head, get_revision
from .schema import DEPTH_KINDS

INHERIT = object()               # save_revision(model_id=...): the parent's
FOLLOW_HEAD = "follow-head"      # restore_revision(status=...): the status `head_status` gives the new head


def head_status(rev: Revision) -> str:
    """An image's status once its head is `rev` by undo / redo / restore: 'pending' for a model's label
    (not reviewed), 'corrected' for a person's change or restored measurements (a review decision
    belonged to the label it replaced)."""
    return "pending" if rev.is_model else "corrected"


def _store_arrays(db, blobs: BlobStore, image_id: int, depth, masks) -> tuple[StoredArray | None, dict]:
    """Validate and write the files before the transaction (keeps the write lock short)."""
    shape = image_shape(db, image_id)
    stored_depth = None
    if depth is not None:
        stored_depth = blobs.put_array(check_depth(depth, shape, f"label of image {image_id}"))
    stored_masks = {n: None if m is None else blobs.put_array(check_mask(m, n, shape))
                    for n, m in (masks or {}).items()}
    return stored_depth, stored_masks


def save_revision(db, blobs: BlobStore, image_id: int, depth: np.ndarray | None = None, *, expected_head,
                  tool: str, author: str, masks: Mapping[str, np.ndarray | None] | None = None,
                  kind: str | None = None, note: str | None = None,
                  status: str | None = "corrected", model_id=INHERIT,
                  prediction_id: int | None = None, source: str = "human",
                  human: np.ndarray | None = None, meta: dict | None = None) -> Revision:
    """Append a revision as a child of the head and make it the head. Returns it.

    depth: (H, W) float32, or None to keep the parent's. masks: {'ignore'|'sky': bool/uint8
    (H, W) array, or None to drop it}; names left out keep the parent's. kind/model_id
    default to the parent's. status: the image's new status ('corrected' by default;
    None keeps it). expected_head: the revision id the caller opened (None = no label yet),
    or ANY_HEAD. Raises StaleRevisionError when the head moved (nothing is saved).
    source: where the values came from: 'human' (default: a person's change), 'model:<id>'
    or 'ground_truth:<name>' (pipeline/store/provenance.py). human: for 'human', the bool
    (H, W) pixels a person set; None derives it from the tool and the pixels that changed.
    meta: JSON-ready facts about how the values were made (e.g. a calibration's references and fit).
    """
    if status is not None:
        check_statuses([status])
    check_source(source)
    stored_depth, stored_masks = _store_arrays(db, blobs, image_id, depth, masks)
    stored_human = None if human is None else blobs.put_array(
        check_mask(human, "human", image_shape(db, image_id), ("human",)))
    with write(db):
        row = image_row(db, image_id)
        check_head(db, row, expected_head)
        if source == "human" and stored_human is None:
            stored_human = derived_human(db, blobs, row, depth, tool)
        rev_id = insert_revision(db, row, stored_depth, stored_masks, tool=tool, author=author, kind=kind,
                                 note=note, model_id=model_id, prediction_id=prediction_id, source=source,
                                 human=stored_human if source == "human" else None, meta=meta)
        move_head(db, row, rev_id, row["status"] if status is None else status)
        refresh_flags(db, blobs, row["id"], depth)
    return get_revision(db, rev_id)


def insert_revision(db, row: dict, stored_depth, stored_masks, *, tool, author, kind, note, model_id,
                    prediction_id, source: str, human=None, valid=None, meta: dict | None = None) -> int:
    """Insert a child of the image's head (inside a write transaction); returns its id."""
    image_id = row["id"]
    parent = get_revision(db, row["head_revision_id"]) if row["head_revision_id"] else None
    if stored_depth is None and parent is None:
        raise InvalidValueError(f"image {image_id} has no label yet; give a depth array")
    kind = kind or (parent.kind if parent else None)
    if kind not in DEPTH_KINDS:
        raise InvalidValueError(f"label kind must be one of {DEPTH_KINDS}; got {kind!r}")
    depth_sha = add_array_row(db, stored_depth) if stored_depth else parent.depth_sha256
    mask_shas = dict(parent.masks) if parent else {}
    for name, stored in stored_masks.items():
        if stored is None:
            mask_shas.pop(name, None)
        else:
            mask_shas[name] = add_array_row(db, stored)
    if model_id is INHERIT:
        model_id = parent.model_id if parent else None
    number = db.execute("SELECT coalesce(max(number), 0) + 1 FROM revisions WHERE image_id = ?",
                        [image_id]).fetchone()[0]
    human_sha = add_array_row(db, human) if human is not None else None
    valid_sha = add_array_row(db, valid) if valid is not None else None
    cur = db.conn.execute(
        "INSERT INTO revisions (image_id, parent_id, number, tool, kind, depth_sha256, model_id, "
        "prediction_id, author, note, created_at, source, human_sha256, valid_sha256, meta) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (image_id, parent.id if parent else None, number, tool, kind, depth_sha,
         model_id, prediction_id, author, note, utc_now(), source, human_sha, valid_sha,
         json.dumps(meta, sort_keys=True) if meta else None))
    rev_id = cur.lastrowid
    db.conn.executemany("INSERT INTO masks (revision_id, name, array_sha256) VALUES (?, ?, ?)",
                        [(rev_id, n, s) for n, s in sorted(mask_shas.items())])
    audit.record(db, author, "revision.save", "image", image_id,
                 {"revision_id": rev_id, "number": number, "tool": tool, "source": source,
                  "parent_id": parent.id if parent else None})
    return rev_id


def move_head(db, row: dict, rev_id: int, status: str) -> None:
    """Point the image at revision `rev_id` with `status` (inside the caller's transaction)."""
    db.conn.execute("UPDATE images SET head_revision_id = ?, status = ?, updated_at = ? WHERE id = ?",
                    (rev_id, status, utc_now(), row["id"]))


def restore_revision(db, blobs: BlobStore, image_id: int, revision_id: int, *, expected_head, author: str,
                     status: str | None = FOLLOW_HEAD) -> Revision:
    """Make an older revision's depth and masks current again, as a NEW revision (tool
    'restore'); the history keeps everything in between. Returns the new head. The status
    follows the restored values' origin (`head_status`) unless given (None keeps it)."""
    old = get_revision(db, revision_id)
    if old.image_id != int(image_id):
        raise InvalidValueError(f"revision {revision_id} belongs to image {old.image_id}, not {image_id}")
    human = human_pixels(db, blobs, old) if old.source == "human" else None     # the values keep their origin
    stored_human = None if human is None else blobs.put_array(human)
    stored = {sha: stored_array(db, sha) for sha in [old.depth_sha256, *old.masks.values(),
                                                     *([old.valid_sha256] if old.valid_sha256 else [])]}
    with write(db):
        row = image_row(db, image_id)
        check_head(db, row, expected_head)
        if row["head_revision_id"] is None:
            raise HistoryError(f"image {image_id} ({row['name']}) has no label to replace; pseudo-label it first")
        head = get_revision(db, row["head_revision_id"])
        masks = {**{n: None for n in head.masks}, **{n: stored[s] for n, s in old.masks.items()}}
        rev_id = insert_revision(db, row, stored[old.depth_sha256], masks, tool="restore", author=author,
                                 kind=old.kind, model_id=old.model_id, note=f"restored revision {old.number}",
                                 prediction_id=None, source=old.source, human=stored_human,
                                 valid=stored[old.valid_sha256] if old.valid_sha256 else None, meta=old.meta)
        if status == FOLLOW_HEAD:
            status = head_status(old)
        move_head(db, row, rev_id, row["status"] if status is None else status)
        refresh_flags(db, blobs, row["id"])
    return get_revision(db, rev_id)


def undo(db, blobs: BlobStore, image_id: int, *, author: str, expected_head=ANY_HEAD) -> Revision:
    """Move the head to its parent; returns the new head (the status follows it: `head_status`).
    HistoryError at the first revision, saying so."""
    return _step(db, blobs, image_id, author, expected_head, "undo")


def redo(db, blobs: BlobStore, image_id: int, *, author: str, expected_head=ANY_HEAD) -> Revision:
    """Move the head to its newest child (the branch last undone); HistoryError if none."""
    return _step(db, blobs, image_id, author, expected_head, "redo")


def _step(db, blobs: BlobStore, image_id: int, author: str, expected_head, direction: str) -> Revision:
    with write(db):
        row = image_row(db, image_id)
        check_head(db, row, expected_head)
        head_id = row["head_revision_id"]
        if head_id is None:
            raise HistoryError(f"image {image_id} ({row['name']}) has no label; nothing to {direction}")
        if direction == "undo":
            target = get_revision(db, head_id).parent_id
        else:
            target = db.execute("SELECT max(id) FROM revisions WHERE parent_id = ?", [head_id]).fetchone()[0]
        if target is None:
            where = "it is at its first revision" if direction == "undo" else "no revision was undone from this one"
            raise HistoryError(f"nothing to {direction} for image {image_id} ({row['name']}): {where}")
        move_head(db, row, target, head_status(get_revision(db, target)))
        refresh_flags(db, blobs, row["id"])
        audit.record(db, author, f"head.{direction}", "image", int(image_id), {"from": head_id, "to": target})
    return get_revision(db, target)
