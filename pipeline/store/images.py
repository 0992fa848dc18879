"""Images: adding (content-hash dedupe), looking up, the gallery query, counts, status."""
from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from . import audit
from .db import utc_now
from .errors import InvalidValueError, NotFoundError, StaleRevisionError
from .records import ImageRecord, Location, Page
from .schema import STATUSES

# gallery sort key -> ORDER BY column (ties broken by id, so paging is stable)
SORTS = {"confidence": "confidence", "name": "name", "date": "created_at", "id": "id", "time": "frame_time"}
MAX_PAGE = 1000


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

    def _order(self, status, sort: str, descending: bool, clip: str | None = None) -> tuple[str, str, tuple]:
        """(WHERE clause, ORDER BY clause, params) shared by the gallery queries; `clip` keeps one video's frames."""
        if sort not in SORTS:
            raise InvalidValueError(f"unknown sort {sort!r}; use one of {', '.join(SORTS)}")
        st = check_statuses(status)
        conditions = [f"status IN ({', '.join('?' * len(st))})"] if st else []
        params = tuple(st)
        if clip:
            conditions.append("clip = ?")
            params += (str(clip),)
        where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
        col, direction = SORTS[sort], "DESC" if descending else "ASC"
        nulls = " NULLS LAST" if col == "confidence" else ""
        return where, f" ORDER BY {col} {direction}{nulls}, id {direction}", params

    def list_images(self, *, status: str | Iterable[str] | None = None, sort: str = "confidence",
                    descending: bool = False, offset: int = 0, limit: int = 50, clip: str | None = None) -> Page:
        """A gallery page. `status`: one, several ('accepted,corrected' or a list) or None = all.

        sort: 'confidence' (ascending = least confident first; unscored images last),
        'name', 'date' (import time), 'id' or 'time' (frame time in a clip). `clip`: only that clip's frames.
        """
        if not 0 < int(limit) <= MAX_PAGE or int(offset) < 0:
            raise InvalidValueError(f"page limit must be 1..{MAX_PAGE} and offset >= 0; "
                                    f"got limit={limit}, offset={offset}")
        where, order, st = self._order(status, sort, descending, clip)
        sql = f"SELECT * FROM images{where}{order} LIMIT ? OFFSET ?"
        items = [self._image_record(r) for r in self.db.query(sql, [*st, int(limit), int(offset)])]
        total = self.db.execute(f"SELECT count(*) FROM images{where}", list(st)).fetchone()[0]
        return Page(items, int(total), int(offset), int(limit))

    def locate(self, image_id: int, *, status: str | Iterable[str] | None = None,
               sort: str = "confidence", descending: bool = False, clip: str | None = None) -> Location:
        """Where an image sits in a gallery order, and its neighbours (keyboard next/previous).

        An image outside the filter gets index None and the filter's first image as `next_id`.
        """
        where, order, st = self._order(status, sort, descending, clip)
        ids = [r[0] for r in self.db.execute(f"SELECT id FROM images{where}{order}", list(st)).fetchall()]
        try:
            i = ids.index(int(image_id))
        except ValueError:
            return Location(None, len(ids), None, ids[0] if ids else None)
        return Location(i, len(ids), ids[i - 1] if i > 0 else None, ids[i + 1] if i + 1 < len(ids) else None)

    def clips(self) -> list[tuple[str, int]]:
        """(clip, number of its frames in the store) for every video imported, in import order."""
        rows = self.db.execute("SELECT clip, count(*), min(id) AS first FROM images WHERE clip IS NOT NULL "
                               "GROUP BY clip ORDER BY first").fetchall()
        return [(r[0], int(r[1])) for r in rows]

    def count_by_status(self) -> dict[str, int]:
        """{'pending': n, 'accepted': n, 'rejected': n, 'corrected': n} (zeros included)."""
        counts = dict.fromkeys(STATUSES, 0)
        for r in self.db.query("SELECT status, count(*) AS n FROM images GROUP BY status"):
            counts[r["status"]] = r["n"]
        return counts

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

    def _check_head(self, row: dict, expected_head) -> None:
        """Raise StaleRevisionError when the image's head is not `expected_head`."""
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
        opened = f"revision id {expected_head}" if expected_head is not None else "no label"
        now = (f"revision {head.number} (id {head.id}) by {head.author} at {head.created_at}"
               if head else "no label")
        raise StaleRevisionError(
            f"image {row['id']} ({row['name']}) changed since you opened it ({opened}): it is now "
            f"{now}; reload it and redo your change",
            image_id=row["id"], expected=expected_head, current=head)
