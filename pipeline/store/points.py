"""Point pairs (the DA-2K annotation form): two pixels [h, w] and which one is closer.

Pairs belong to the image (they are facts about the scene, not about one label). Points are
[h, w] = (row, column) everywhere: here, in the curation service, the studio's tables and clicks
(converted once from the page's (x, y)), exports and `pipeline.labels.corrections.check_point_pairs`.
`flagged` says whether the image's head label disagrees with a pair, by the one rule in
`check_point_pairs`. The store is the one owner of the flags: it refreshes them in the same
transaction whenever the head changes (save, undo, redo, restore) or a pair is added, so they
always describe the current label and nobody recomputes them. Deleting is soft.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

from . import audit
from .blobs import BlobStore
from .db import utc_now, write
from .errors import InvalidValueError, NotFoundError
from .images import image_row
from .records import PointPair
from .revisions import get_revision


def _point(p: Sequence[int], height: int, width: int, what: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in p)
    except (TypeError, ValueError):
        raise InvalidValueError(f"{what} must be [h, w] (row, column); got {p!r}") from None
    if not (0 <= h < height and 0 <= w < width):
        raise InvalidValueError(f"{what} [h={h}, w={w}] is outside the {width}x{height} image")
    return h, w


def add_point_pair(db, blobs: BlobStore, image_id: int, point1: Sequence[int], point2: Sequence[int],
                   closer: int, *, author: str, flagged: bool = False) -> PointPair:
    """point1/point2 as [h, w] (row, column); closer 1 or 2. `flagged` is only kept while the
    image has no label; with a label it is computed from the head."""
    row = image_row(db, image_id)
    p1 = _point(point1, row["height"], row["width"], "point 1")
    p2 = _point(point2, row["height"], row["width"], "point 2")
    if p1 == p2:
        raise InvalidValueError(f"the two points of a pair must differ; both are {list(p1)}")
    if closer not in (1, 2):
        raise InvalidValueError(f"closer must be 1 or 2 (which point is closer); got {closer!r}")
    with write(db):
        head = image_row(db, image_id)["head_revision_id"]
        cur = db.conn.execute(
            "INSERT INTO point_pairs (image_id, y1, x1, y2, x2, closer, author, flagged, revision_id, "
            "created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (int(image_id), *p1, *p2, int(closer), author, int(bool(flagged)), head, utc_now()))
        pair_id = cur.lastrowid
        audit.record(db, author, "point_pair.add", "image", int(image_id), {"pair_id": pair_id})
        refresh_flags(db, blobs, int(image_id))
    return point_pair(db, pair_id)


def refresh_flags(db, blobs: BlobStore, image_id: int, depth=None) -> None:
    """Re-check the image's live pairs against its head (inside the caller's transaction): every write
    that moves a head calls this, so the flags always describe the current label.

    depth: the head's (H, W) array when the caller has it in memory (else it is loaded)."""
    pairs = [PointPair.from_row(r) for r in db.query(
        "SELECT * FROM point_pairs WHERE image_id = ? AND deleted_at IS NULL ORDER BY id", [image_id])]
    head_id = image_row(db, image_id)["head_revision_id"]
    if not pairs or head_id is None:
        return
    head = get_revision(db, head_id)
    if depth is None:
        depth = blobs.read_array(head.depth_sha256, what=f"depth of label revision {head.id}")
    from ..labels.corrections import check_point_pairs  # lazy: scipy is not needed to open a store
    flags = check_point_pairs(depth, pairs, head.kind)
    changed = [(int(f), p.id) for p, f in zip(pairs, flags, strict=True) if bool(f) != p.flagged]
    db.conn.executemany("UPDATE point_pairs SET flagged = ? WHERE id = ?", changed)


def point_pair(db, pair_id: int) -> PointPair:
    rows = list(db.query("SELECT * FROM point_pairs WHERE id = ?", [int(pair_id)]))
    if not rows:
        raise NotFoundError(f"point pair {pair_id} is not in the store; reload the image")
    return PointPair.from_row(rows[0])


def point_pairs(db, image_id: int, *, include_deleted: bool = False) -> list[PointPair]:
    sql = "SELECT * FROM point_pairs WHERE image_id = ?"
    if not include_deleted:
        sql += " AND deleted_at IS NULL"
    return [PointPair.from_row(r) for r in db.query(sql + " ORDER BY id", [int(image_id)])]


def set_point_pair_flags(db, flags: Mapping[int, bool], *, author: str = "system") -> None:
    """{pair id: flagged} in one transaction: a manual override, until the head next changes."""
    with write(db):
        for pair_id, flagged in flags.items():
            point_pair(db, pair_id)
            db.conn.execute("UPDATE point_pairs SET flagged = ? WHERE id = ?", (int(bool(flagged)), int(pair_id)))
        if flags:
            audit.record(db, author, "point_pair.flags", "point_pair", None,
                         {str(k): bool(v) for k, v in flags.items()})


def delete_point_pair(db, pair_id: int, *, author: str) -> None:
    pair = point_pair(db, pair_id)
    with write(db):
        db.conn.execute("UPDATE point_pairs SET deleted_at = ? WHERE id = ? AND deleted_at IS NULL",
                        (utc_now(), int(pair_id)))
        audit.record(db, author, "point_pair.delete", "image", pair.image_id, {"pair_id": pair.id})
