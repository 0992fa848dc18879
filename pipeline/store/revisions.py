"""Label revisions: every change appends one; undo/redo move the image's head pointer.

The revisions of an image form a tree (parent_id). The image's `head_revision_id` is the
current label. Saving makes a child of the head and moves the head to it; undo moves the head
to its parent; redo moves it to the newest child of the head. A save after an undo therefore
starts a new branch; nothing is deleted and `history()` lists every revision.

Optimistic concurrency: save/undo/redo take `expected_head` (the revision id the caller opened,
None for "no label yet"); if the head has moved, StaleRevisionError says who moved it when.
Pass ANY_HEAD to skip the check (batch tools that own the image, e.g. a dataset import).

Status follows the head: a save sets the status it is given ('corrected' by default); moving the
head to another label (undo, redo, restore) re-opens the review, because an accept / reject was a
decision about the label that is no longer current: the image becomes 'pending' when the new head
is a model's label (source 'model:<id>') and 'corrected' otherwise (a person's change, restored
measurements) (`head_status`). Undoing the only correction therefore gives back a pending pseudo-label.
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from . import audit
from .blobs import StoredArray
from .db import utc_now
from .errors import HistoryError, InvalidValueError, NotFoundError
from .images import ANY_HEAD, check_statuses
from .provenance import check_source
from .records import Label, Revision
from .schema import DEPTH_KINDS, MASK_NAMES

_INHERIT = object()
FOLLOW_HEAD = "follow-head"      # restore_revision(status=...): the status `head_status` gives the new head


def head_status(rev: Revision) -> str:
    """An image's status once its head is `rev` by undo / redo / restore: 'pending' for a model's label
    (not reviewed), 'corrected' for a person's change or restored measurements (a review decision
    belonged to the label it replaced)."""
    return "pending" if rev.is_model else "corrected"


@dataclass(frozen=True)
class History:
    revisions: list[Revision]   # number order (oldest first), all branches
    head_id: int | None

    @property
    def head(self) -> Revision | None:
        return next((r for r in self.revisions if r.id == self.head_id), None)

    @property
    def can_undo(self) -> bool:
        return self.head is not None and self.head.parent_id is not None

    @property
    def can_redo(self) -> bool:
        return any(r.parent_id == self.head_id for r in self.revisions) and self.head_id is not None


def check_depth(depth, shape: tuple[int, int], what: str) -> np.ndarray:
    arr = np.asarray(depth)
    if arr.dtype != np.float32:
        raise InvalidValueError(f"{what} must be float32 (stored losslessly); got {arr.dtype} - "
                                "convert it with .astype(np.float32) first")
    if arr.shape != shape:
        raise InvalidValueError(f"{what} has shape {arr.shape}, the image is {shape} (H, W)")
    return arr


def check_mask(mask, name: str, shape: tuple[int, int], names: tuple[str, ...] = MASK_NAMES) -> np.ndarray:
    """A label mask (`names`: 'ignore', 'sky') or a provenance mask ('human', 'valid'): bool/uint8 (H, W)."""
    if name not in names:
        raise InvalidValueError(f"unknown mask {name!r}; use one of {', '.join(MASK_NAMES)}")
    arr = np.asarray(mask)
    if arr.dtype not in (np.bool_, np.uint8) or arr.shape != shape:
        raise InvalidValueError(f"the {name} mask must be a bool or uint8 array of shape {shape}; "
                                f"got {arr.dtype} {arr.shape}")
    return arr


class RevisionsMixin:
    # ------------------------------------------------------------------ reading
    def _masks_of(self, revision_ids: list[int]) -> dict[int, dict[str, str]]:
        out: dict[int, dict[str, str]] = {i: {} for i in revision_ids}
        if revision_ids:
            marks = ", ".join("?" * len(revision_ids))
            for r in self.db.query(f"SELECT * FROM masks WHERE revision_id IN ({marks})", revision_ids):
                out[r["revision_id"]][r["name"]] = r["array_sha256"]
        return out

    def get_revision(self, revision_id: int) -> Revision:
        rows = list(self.db.query("SELECT * FROM revisions WHERE id = ?", [int(revision_id)]))
        if not rows:
            raise NotFoundError(f"label revision {revision_id} is not in the store; reload the image")
        return Revision.from_row(rows[0], self._masks_of([rows[0]["id"]])[rows[0]["id"]])

    def head(self, image_id: int) -> Revision | None:
        """The image's current label revision (None before it is pseudo-labelled)."""
        head_id = self._image_row(image_id)["head_revision_id"]
        return self.get_revision(head_id) if head_id is not None else None

    def history(self, image_id: int) -> History:
        head_id = self._image_row(image_id)["head_revision_id"]
        rows = list(self.db.query("SELECT * FROM revisions WHERE image_id = ? ORDER BY number",
                                  [int(image_id)]))
        masks = self._masks_of([r["id"] for r in rows])
        return History([Revision.from_row(r, masks[r["id"]]) for r in rows], head_id)

    def load_label(self, revision: int | Revision) -> Label:
        """A revision's depth and masks, hash-checked (CorruptRecordError names the damage)."""
        rev = revision if isinstance(revision, Revision) else self.get_revision(revision)
        depth = self.blobs.read_array(rev.depth_sha256, what=f"depth of label revision {rev.id}")
        masks = {n: self.blobs.read_array(s, what=f"{n} mask of label revision {rev.id}")
                 for n, s in rev.masks.items()}
        return Label(rev, depth, masks)

    def read_array(self, sha256: str) -> np.ndarray:
        return self.blobs.read_array(sha256)

    # ------------------------------------------------------------------ writing
    def _array_row(self, db, stored: StoredArray) -> str:
        db.conn.execute("INSERT OR IGNORE INTO arrays (sha256, dtype, shape, nbytes, created_at) "
                        "VALUES (?, ?, ?, ?, ?)", (stored.sha256, stored.dtype,
                                                   json.dumps(list(stored.shape)), stored.nbytes, utc_now()))
        return stored.sha256

    def _shape(self, image_id: int) -> tuple[int, int]:
        row = self._image_row(image_id)
        return row["height"], row["width"]

    def _store_arrays(self, image_id: int, depth, masks) -> tuple[StoredArray | None, dict]:
        """Validate and write the files before the transaction (keeps the write lock short)."""
        row = self._image_row(image_id)
        shape = (row["height"], row["width"])
        stored_depth = None
        if depth is not None:
            stored_depth = self.blobs.put_array(check_depth(depth, shape, f"label of image {image_id}"))
        stored_masks = {n: None if m is None else self.blobs.put_array(check_mask(m, n, shape))
                        for n, m in (masks or {}).items()}
        return stored_depth, stored_masks

    def save_revision(self, image_id: int, depth: np.ndarray | None = None, *, expected_head,
                      tool: str, author: str, masks: Mapping[str, np.ndarray | None] | None = None,
                      kind: str | None = None, note: str | None = None,
                      status: str | None = "corrected", model_id=_INHERIT,
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
        stored_depth, stored_masks = self._store_arrays(image_id, depth, masks)
        stored_human = None if human is None else self.blobs.put_array(
            check_mask(human, "human", self._shape(image_id), ("human",)))
        with self.write() as db:
            row = self._image_row(image_id)
            self._check_head(row, expected_head)
            if source == "human" and stored_human is None:
                stored_human = self._derived_human(row, depth, tool)
            rev_id = self._insert_revision(db, row, stored_depth, stored_masks, tool=tool,
                                           author=author, kind=kind, note=note, model_id=model_id,
                                           prediction_id=prediction_id, source=source,
                                           human=stored_human if source == "human" else None, meta=meta)
            self._move_head(db, row, rev_id, row["status"] if status is None else status)
            self._refresh_flags(db, row["id"], depth)
        return self.get_revision(rev_id)

    def _insert_revision(self, db, row: dict, stored_depth, stored_masks, *, tool, author, kind,
                         note, model_id, prediction_id, source: str, human=None, valid=None,
                         meta: dict | None = None) -> int:
        """Insert a child of the image's head (inside a write transaction); returns its id."""
        image_id = row["id"]
        parent = self.get_revision(row["head_revision_id"]) if row["head_revision_id"] else None
        if stored_depth is None and parent is None:
            raise InvalidValueError(f"image {image_id} has no label yet; give a depth array")
        kind = kind or (parent.kind if parent else None)
        if kind not in DEPTH_KINDS:
            raise InvalidValueError(f"label kind must be one of {DEPTH_KINDS}; got {kind!r}")
        depth_sha = self._array_row(db, stored_depth) if stored_depth else parent.depth_sha256
        mask_shas = dict(parent.masks) if parent else {}
        for name, stored in stored_masks.items():
            if stored is None:
                mask_shas.pop(name, None)
            else:
                mask_shas[name] = self._array_row(db, stored)
        if model_id is _INHERIT:
            model_id = parent.model_id if parent else None
        number = db.execute("SELECT coalesce(max(number), 0) + 1 FROM revisions WHERE image_id = ?",
                            [image_id]).fetchone()[0]
        human_sha = self._array_row(db, human) if human is not None else None
        valid_sha = self._array_row(db, valid) if valid is not None else None
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

    def restore_revision(self, image_id: int, revision_id: int, *, expected_head, author: str,
                         status: str | None = FOLLOW_HEAD) -> Revision:
        """Make an older revision's depth and masks current again, as a NEW revision (tool
        'restore'); the history keeps everything in between. Returns the new head. The status
        follows the restored values' origin (`head_status`) unless given (None keeps it)."""
        old = self.get_revision(revision_id)
        if old.image_id != int(image_id):
            raise InvalidValueError(f"revision {revision_id} belongs to image {old.image_id}, not {image_id}")
        human = self.human_pixels(old) if old.source == "human" else None     # the values keep their origin
        stored_human = None if human is None else self.blobs.put_array(human)
        stored = {sha: self._stored(sha) for sha in [old.depth_sha256, *old.masks.values(),
                                                     *([old.valid_sha256] if old.valid_sha256 else [])]}
        with self.write() as db:
            row = self._image_row(image_id)
            self._check_head(row, expected_head)
            if row["head_revision_id"] is None:
                raise HistoryError(f"image {image_id} ({row['name']}) has no label to replace; pseudo-label it first")
            head = self.get_revision(row["head_revision_id"])
            masks = {**{n: None for n in head.masks}, **{n: stored[s] for n, s in old.masks.items()}}
            rev_id = self._insert_revision(db, row, stored[old.depth_sha256], masks, tool="restore",
                                           author=author, kind=old.kind, model_id=old.model_id,
                                           note=f"restored revision {old.number}", prediction_id=None,
                                           source=old.source, human=stored_human,
                                           valid=stored[old.valid_sha256] if old.valid_sha256 else None,
                                           meta=old.meta)
            if status == FOLLOW_HEAD:
                status = head_status(old)
            self._move_head(db, row, rev_id, row["status"] if status is None else status)
            self._refresh_flags(db, row["id"])
        return self.get_revision(rev_id)

    def _stored(self, sha256: str) -> StoredArray:
        r = self.db.execute("SELECT dtype, shape, nbytes FROM arrays WHERE sha256 = ?", [sha256]).fetchone()
        return StoredArray(sha256, r[0], tuple(json.loads(r[1])), r[2])

    def _move_head(self, db, row: dict, rev_id: int, status: str) -> None:
        db.conn.execute("UPDATE images SET head_revision_id = ?, status = ?, updated_at = ? WHERE id = ?",
                        (rev_id, status, utc_now(), row["id"]))

    def undo(self, image_id: int, *, author: str, expected_head=ANY_HEAD) -> Revision:
        """Move the head to its parent; returns the new head (the status follows it: `head_status`).
        HistoryError at the first revision, saying so."""
        return self._step(image_id, author, expected_head, "undo")

    def redo(self, image_id: int, *, author: str, expected_head=ANY_HEAD) -> Revision:
        """Move the head to its newest child (the branch last undone); HistoryError if none."""
        return self._step(image_id, author, expected_head, "redo")

    def _step(self, image_id: int, author: str, expected_head, direction: str) -> Revision:
        with self.write() as db:
            row = self._image_row(image_id)
            self._check_head(row, expected_head)
            head_id = row["head_revision_id"]
            if head_id is None:
                raise HistoryError(f"image {image_id} ({row['name']}) has no label; nothing to {direction}")
            if direction == "undo":
                target = self.get_revision(head_id).parent_id
            else:
                r = db.execute("SELECT max(id) FROM revisions WHERE parent_id = ?", [head_id]).fetchone()
                target = r[0]
            if target is None:
                where = ("it is at its first revision" if direction == "undo"
                         else "no revision was undone from this one")
                raise HistoryError(f"nothing to {direction} for image {image_id} ({row['name']}): {where}")
            self._move_head(db, row, target, head_status(self.get_revision(target)))
            self._refresh_flags(db, row["id"])
            audit.record(db, author, f"head.{direction}", "image", int(image_id),
                         {"from": head_id, "to": target})
        return self.get_revision(target)
