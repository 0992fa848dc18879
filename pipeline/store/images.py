"""The `images` table: adding (content-hash dedupe), looking up, reading the bytes. Functions of the
connection (`db`) and, where a record names its file, the blob store (`blobs`). Status decisions are
in review.py, the gallery's pages, neighbours and counts in gallery.py and pages.py."""
from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from . import audit
from .blobs import BlobStore
from .db import store_name, utc_now, write
from .errors import InvalidValueError, NotFoundError
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


def image_row(db, image_id: int) -> dict:
    """The image's row; NotFoundError naming the store when it is not there."""
    rows = list(db.query("SELECT * FROM images WHERE id = ?", [int(image_id)]))
    if not rows:
        raise NotFoundError(f"image {image_id} is not in the store {store_name(db)}; reload the gallery")
    return rows[0]


def image_record(blobs: BlobStore, row: dict) -> ImageRecord:
    return ImageRecord.from_row(row, blobs.path(row["sha256"], row["ext"]))


def image_shape(db, image_id: int) -> tuple[int, int]:
    """(H, W) of the image (its decoded size)."""
    row = image_row(db, image_id)
    return row["height"], row["width"]


def add_image(db, blobs: BlobStore, data: bytes, name: str, *, width: int, height: int,
              source: str | None = None, author: str = "system", clip: str | None = None,
              frame_time: float | None = None, frame_index: int | None = None) -> tuple[ImageRecord, bool]:
    """Store an image's bytes under their sha256. Returns (record, created).

    `width`/`height` are the decoded size after EXIF orientation (the caller decoded it:
    pipeline.intake.images validates images before adding them). Same bytes again -> the
    existing record and created=False (nothing written). A frame of a video names its
    `clip` and its `frame_time` (seconds) / `frame_index` in it.
    """
    if width < 1 or height < 1:
        raise InvalidValueError(f"image {name!r}: width and height must be positive")
    ext = image_ext(name)
    sha, _ = blobs.put_bytes(bytes(data), ext)   # file first: a row never lacks its file
    with write(db):
        found = list(db.query("SELECT * FROM images WHERE sha256 = ?", [sha]))
        if found:
            return image_record(blobs, found[0]), False
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
    return get_image(db, blobs, image_id), True


def get_image(db, blobs: BlobStore, image_id: int) -> ImageRecord:
    return image_record(blobs, image_row(db, image_id))


def find_image(db, blobs: BlobStore, sha256: str) -> ImageRecord | None:
    rows = list(db.query("SELECT * FROM images WHERE sha256 = ?", [sha256]))
    return image_record(blobs, rows[0]) if rows else None


def image_bytes(db, blobs: BlobStore, image_id: int) -> bytes:
    """The original file's bytes, hash-checked (CorruptRecordError when damaged)."""
    row = image_row(db, image_id)
    return blobs.read_bytes(row["sha256"], row["ext"], what=f"image {image_id} ({row['name']})")


def image_ids(db, statuses: str | Iterable[str] | None = None) -> list[int]:
    """All image ids (optionally with these statuses), in import order."""
    st = check_statuses(statuses)
    sql = "SELECT id FROM images"
    if st:
        sql += f" WHERE status IN ({', '.join('?' * len(st))})"
    return [r["id"] for r in db.query(sql + " ORDER BY id", list(st))]


def image_hashes(db) -> list[tuple[int, str]]:
    """(id, sha256) of every image, in id order."""
    return [(r[0], r[1]) for r in db.execute("SELECT id, sha256 FROM images ORDER BY id").fetchall()]
