"""Reading label revisions (rows of `revisions` with their `masks`) and the optimistic-concurrency
check every label write makes. Writing them (save, restore, undo / redo) is edits.py.

The revisions of an image form a tree (parent_id); the image's `head_revision_id` is the current
label. `check_head(db, row, expected_head)` raises StaleRevisionError when the head is not the
revision the caller opened (None: "no label yet"; ANY_HEAD skips the check): the one stale check,
read-only, used by every write and by a caller that wants to refuse before any work.
"""
from __future__ import annotations

from dataclasses import dataclass

from .blobs import BlobStore
from .errors import InvalidValueError, NotFoundError, StaleRevisionError
from .images import ANY_HEAD, image_row
from .records import Label, Revision


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


def masks_of(db, revision_ids: list[int]) -> dict[int, dict[str, str]]:
    """{revision id: {mask name: array sha256}} in one query."""
    out: dict[int, dict[str, str]] = {i: {} for i in revision_ids}
    if revision_ids:
        marks = ", ".join("?" * len(revision_ids))
        for r in db.query(f"SELECT * FROM masks WHERE revision_id IN ({marks})", revision_ids):
            out[r["revision_id"]][r["name"]] = r["array_sha256"]
    return out


def get_revision(db, revision_id: int) -> Revision:
    rows = list(db.query("SELECT * FROM revisions WHERE id = ?", [int(revision_id)]))
    if not rows:
        raise NotFoundError(f"label revision {revision_id} is not in the store; reload the image")
    return Revision.from_row(rows[0], masks_of(db, [rows[0]["id"]])[rows[0]["id"]])


def head(db, image_id: int) -> Revision | None:
    """The image's current label revision (None before it is pseudo-labelled)."""
    head_id = image_row(db, image_id)["head_revision_id"]
    return get_revision(db, head_id) if head_id is not None else None


def history(db, image_id: int) -> History:
    head_id = image_row(db, image_id)["head_revision_id"]
    rows = list(db.query("SELECT * FROM revisions WHERE image_id = ? ORDER BY number", [int(image_id)]))
    masks = masks_of(db, [r["id"] for r in rows])
    return History([Revision.from_row(r, masks[r["id"]]) for r in rows], head_id)


def load_label(db, blobs: BlobStore, revision: int | Revision) -> Label:
    """A revision's depth and masks, hash-checked (CorruptRecordError names the damage)."""
    rev = revision if isinstance(revision, Revision) else get_revision(db, revision)
    depth = blobs.read_array(rev.depth_sha256, what=f"depth of label revision {rev.id}")
    masks = {n: blobs.read_array(s, what=f"{n} mask of label revision {rev.id}") for n, s in rev.masks.items()}
    return Label(rev, depth, masks)


def check_head(db, row: dict, expected_head) -> None:
    """Raise StaleRevisionError when the image (its `row`) has a head other than `expected_head`. The
    message names revisions by their per-image number (what the studio shows everywhere), not their row id."""
    if expected_head is ANY_HEAD:
        return
    if expected_head is not None:   # a Revision, or an id as int / numpy int / str from a UI
        try:
            expected_head = int(getattr(expected_head, "id", expected_head))
        except (TypeError, ValueError):
            raise InvalidValueError(f"expected_head must be a revision id, None or ANY_HEAD; "
                                    f"got {expected_head!r}") from None
    if row["head_revision_id"] == expected_head:
        return
    current = get_revision(db, row["head_revision_id"]) if row["head_revision_id"] else None
    if expected_head is None:
        opened = "no label"
    else:
        found = db.execute("SELECT number FROM revisions WHERE id = ? AND image_id = ?",
                           [expected_head, row["id"]]).fetchone()
        opened = f"revision {found[0]}" if found else f"a revision (id {expected_head}) it does not have"
    now = f"revision {current.number} by {current.author} at {current.created_at}" if current else "no label"
    raise StaleRevisionError(
        f"image {row['id']} ({row['name']}) changed since you opened it ({opened}): it is now "
        f"{now}; reload it and redo your change",
        image_id=row["id"], expected=expected_head, current=current)
