"""Images: adding (content-hash dedupe), looking up, status. The gallery's pages, neighbours and
counts are in gallery.py."""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from . import audit
from .db import utc_now
from .errors import InvalidValueError, NotFoundError, StaleRevisionError
from .records import ImageRecord
from .schema import STATUSES


class _AnyHead:
    def __repr__(self) -> str:
        return "ANY_HEAD"


ANY_HEAD = _AnyHead()   # pass as expected_head to skip the optimistic-concurrency check


def image_ext(name: str) -> str:
    suffix = Path(name).suffix.lower()
    return suffix if suffix and len(suffix) <= 6 and suffix[1:].isalnum() else ".img"


def check_statuses(statuses: str | Iterable[str] | None) -> tuple[str, ...]:
    if statuses is None:
        return ()
    if isinstance(statuses, str):
        statuses = [s for s in statuses.split(",") if s.strip()]
    out = tuple(s.strip() for s in statuses)
    for s in out:
        if s not in STATUSES:
            raise InvalidValueError(f"unknown status {s!r}; use one of {', '.join(STATUSES)}")
    return out


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


class ImagesMixin:
    def _image_record(self, row: dict) -> ImageRecord:
        return ImageRecord.from_row(row, self.blobs.path(row["sha256"], row["ext"]))

    def _image_row(self, image_id: int) -> dict:
        rows = list(self.db.query("SELECT * FROM images WHERE id = ?", [int(image_id)]))
        if not rows:
            raise NotFoundError(f"image {image_id} is not in the store {self.path.name}; "
                                "reload the gallery")
        return rows[0]

    def add_image(self, data: bytes, name: str, *, width: int, height: int,
                  source: str | None = None, author: str = "system", clip: str | None = None,
                  frame_time: float | None = None, frame_index: int | None = None) -> tuple[ImageRecord, bool]:
        """Store an image's bytes under their sha256. Returns (record, created).

        `width`/`height` are the decoded size after EXIF orientation (the caller decoded it:
        pipeline.ingest validates images before adding them). Same bytes again -> the
        existing record and created=False (nothing written). A frame of a video names its
        `clip` and its `frame_time` (seconds) / `frame_index` in it.
        """
        if width < 1 or height < 1:
            raise InvalidValueError(f"image {name!r}: width and height must be positive")
        ext = image_ext(name)
        sha, _ = self.blobs.put_bytes(bytes(data), ext)   # file first: a row never lacks its file
        with self.write() as db:
            found = list(db.query("SELECT * FROM images WHERE sha256 = ?", [sha]))
            if found:
                return self._image_record(found[0]), False
            now = utc_now()
            cur = db.conn.execute(
                "INSERT INTO images (sha256, name, ext, nbytes, width, height, source, status, "
                "created_at, updated_at, clip, frame_time, frame_index) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, 'pending', ?, ?, ?, ?, ?)",
                (sha, name, ext, len(data), int(width), int(height), source, now, now, clip,
                 None if frame_time is None else float(frame_time),
                 None if frame_index is None else int(frame_index)))
            image_id = cur.lastrowid
            detail = {"name": name, "sha256": sha, **({"clip": clip, "frame_time": frame_time} if clip else {})}
            audit.record(db, author, "image.add", "image", image_id, detail)
        return self.get_image(image_id), True

    def get_image(self, image_id: int) -> ImageRecord:
        return self._image_record(self._image_row(image_id))

    def find_image(self, sha256: str) -> ImageRecord | None:
        rows = list(self.db.query("SELECT * FROM images WHERE sha256 = ?", [sha256]))
        return self._image_record(rows[0]) if rows else None

    def image_bytes(self, image_id: int) -> bytes:
        """The original file's bytes, hash-checked (CorruptRecordError when damaged)."""
        row = self._image_row(image_id)
        return self.blobs.read_bytes(row["sha256"], row["ext"], what=f"image {image_id} ({row['name']})")

    def image_ids(self, statuses: str | Iterable[str] | None = None) -> list[int]:
        """All image ids (optionally with these statuses), in import order."""
        st = check_statuses(statuses)
        sql = "SELECT id FROM images"
        if st:
            sql += f" WHERE status IN ({', '.join('?' * len(st))})"
        return [r["id"] for r in self.db.query(sql + " ORDER BY id", list(st))]

    def set_status(self, image_id: int, status: str, *, author: str,
                   expected_head=ANY_HEAD) -> ImageRecord:
        """Accept / reject / mark an image. With expected_head, refuses when the label moved."""
        (status,) = check_statuses([status])
        with self.write() as db:
            row = self._image_row(image_id)
            self._check_head(row, expected_head)
            db.conn.execute("UPDATE images SET status = ?, updated_at = ? WHERE id = ?",
                            (status, utc_now(), int(image_id)))
            audit.record(db, author, "image.status", "image", int(image_id),
                         {"from": row["status"], "to": status, "revision_id": row["head_revision_id"]})
        return self.get_image(image_id)

    def set_statuses(self, image_ids: Iterable[int], status: str, *, author: str,
                     dry_run: bool = False) -> StatusChanges:
        """A batch decision in one transaction: `status` on every image that has a label (an image
        without one is skipped: nothing to accept). With dry_run, the same answer and no write."""
        (status,) = check_statuses([status])
        ids = [int(i) for i in image_ids]
        out = StatusChanges(status)
        with self.write() as db:
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

    def set_statuses_where(self, to: str, /, *, author: str, dry_run: bool = False, chunk: int = 500,
                           **flt) -> StatusChanges:
        """`set_statuses(..., to)` on every image of a gallery filter (status, clip, name, tag,
        min/max_confidence: see `list_images`), one keyset chunk per transaction (a filter of a million
        images never holds the write lock for long)."""
        out, ids = StatusChanges(to), []
        for image_id in self.filtered_ids(**flt):
            ids.append(image_id)
            if len(ids) == chunk:
                out.merge(self.set_statuses(ids, to, author=author, dry_run=dry_run))
                ids = []
        if ids:
            out.merge(self.set_statuses(ids, to, author=author, dry_run=dry_run))
        return out

    def check_head(self, image_id: int, expected_head) -> None:
        """Read-only: raise StaleRevisionError when the image's head is not `expected_head` (the same
        check and message every write makes), so a caller can refuse before any work."""
        self._check_head(self._image_row(image_id), expected_head)

    def _check_head(self, row: dict, expected_head) -> None:
        """Raise StaleRevisionError when the image's head is not `expected_head`. The message names
        revisions by their per-image number (what the studio shows everywhere), not their row id."""
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
        head = self.get_revision(row["head_revision_id"]) if row["head_revision_id"] else None
        if expected_head is None:
            opened = "no label"
        else:
            found = self.db.execute("SELECT number FROM revisions WHERE id = ? AND image_id = ?",
                                    [expected_head, row["id"]]).fetchone()
            opened = f"revision {found[0]}" if found else f"a revision (id {expected_head}) it does not have"
        now = f"revision {head.number} by {head.author} at {head.created_at}" if head else "no label"
        raise StaleRevisionError(
            f"image {row['id']} ({row['name']}) changed since you opened it ({opened}): it is now "
            f"{now}; reload it and redo your change",
            image_id=row["id"], expected=expected_head, current=head)
