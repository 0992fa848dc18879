"""Review decisions: an image's status (pending | accepted | rejected | corrected) set by a person or
a tool. One image with the stale-head check (`set_status`), a batch in one transaction
(`set_statuses`), or every image of a gallery filter in keyset chunks (`set_statuses_where`).
Moving the head (edits.py) sets the status too; this module is the decision about the current head.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from . import audit
from .blobs import BlobStore
from .db import utc_now, write
from .images import ANY_HEAD, check_statuses, get_image, image_row
from .pages import filtered_ids
from .records import ImageRecord
from .revisions import check_head


@dataclass
class StatusChanges:
    """What a batch status change did (or, dry, would do)."""
    status: str
    changed: list[tuple[int, str, str]] = field(default_factory=list)     # (image id, name, previous status)
    unchanged: list[int] = field(default_factory=list)                     # already had the status
    skipped: list[tuple[int, str, str]] = field(default_factory=list)     # (image id, name, why)

    def summary(self) -> str:
        return (f"{len(self.changed)} set to {self.status}, {len(self.unchanged)} already {self.status}, "
                f"{len(self.skipped)} skipped")

    def merge(self, part: StatusChanges) -> None:
        self.changed += part.changed
        self.unchanged += part.unchanged
        self.skipped += part.skipped


def set_status(db, blobs: BlobStore, image_id: int, status: str, *, author: str,
               expected_head=ANY_HEAD) -> ImageRecord:
    """Accept / reject / mark an image. With expected_head, refuses when the label moved."""
    (status,) = check_statuses([status])
    with write(db):
        row = image_row(db, image_id)
        check_head(db, row, expected_head)
        db.conn.execute("UPDATE images SET status = ?, updated_at = ? WHERE id = ?",
                        (status, utc_now(), int(image_id)))
        audit.record(db, author, "image.status", "image", int(image_id),
                     {"from": row["status"], "to": status, "revision_id": row["head_revision_id"]})
    return get_image(db, blobs, image_id)


def set_statuses(db, image_ids: Iterable[int], status: str, *, author: str,
                 dry_run: bool = False) -> StatusChanges:
    """A batch decision in one transaction: `status` on every image that has a label (an image
    without one is skipped: nothing to accept). With dry_run, the same answer and no write."""
    (status,) = check_statuses([status])
    ids = [int(i) for i in image_ids]
    out = StatusChanges(status)
    with write(db):
        marks = ", ".join("?" * len(ids))
        rows = {r["id"]: r for r in db.query(f"SELECT id, name, status, head_revision_id FROM images "
                                              f"WHERE id IN ({marks})", ids)} if ids else {}
        for i in ids:
            row = rows.get(i)
            if row is None:
                out.skipped.append((i, "", "not in the store"))
            elif row["head_revision_id"] is None:
                out.skipped.append((i, row["name"], "no label yet"))
            elif row["status"] == status:
                out.unchanged.append(i)
            else:
                out.changed.append((i, row["name"], row["status"]))
        if out.changed and not dry_run:
            now = utc_now()
            db.conn.executemany("UPDATE images SET status = ?, updated_at = ? WHERE id = ?",
                                [(status, now, i) for i, _, _ in out.changed])
            for i, _, old in out.changed:
                audit.record(db, author, "image.status", "image", i,
                             {"from": old, "to": status, "revision_id": rows[i]["head_revision_id"], "bulk": True})
    return out


def set_statuses_where(db, to: str, /, *, author: str, dry_run: bool = False, chunk: int = 500,
                       **flt) -> StatusChanges:
    """`set_statuses(..., to)` on every image of a gallery filter (status, clip, name, tag,
    min/max_confidence: see `pages.list_images`), one keyset chunk per transaction (a filter of a
    million images never holds the write lock for long)."""
    out, ids = StatusChanges(to), []
    for image_id in filtered_ids(db, **flt):
        ids.append(image_id)
        if len(ids) == chunk:
            out.merge(set_statuses(db, ids, to, author=author, dry_run=dry_run))
            ids = []
    if ids:
        out.merge(set_statuses(db, ids, to, author=author, dry_run=dry_run))
    return out
