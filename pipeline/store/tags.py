"""Tags on images (schema migration 8): free-form words a person puts on images to find them again
("indoor", "glass", "night", "batch-3"), used by the gallery's and the CLI's tag filter.

One row per (tag, image) in `image_tags` (primary key (tag, image_id): "the images with this tag"
is one index range; index (image_id, tag): "this image's tags"). A tag is 1-40 characters of
letters, digits and `_ - . : / @ +` (no spaces or commas, so a command line can list several).
"""
from __future__ import annotations

import re
from collections.abc import Iterable

from . import audit
from .db import write
from .errors import InvalidValueError
from .images import image_row

TAG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:/@+-]{0,39}$")


def check_tag(tag) -> str:
    """A tag as stored (stripped); InvalidValueError naming the rule otherwise."""
    text = str(tag).strip()
    if not TAG.match(text):
        raise InvalidValueError(f"tag {str(tag)[:60]!r}: use 1-40 letters, digits or _ - . : / @ + "
                                "(no spaces or commas), starting with a letter or digit")
    return text


def check_tags(tags: str | Iterable[str]) -> list[str]:
    """'a, b' or ['a', 'b'] -> ['a', 'b'] (each checked, duplicates dropped, order kept)."""
    items = tags.split(",") if isinstance(tags, str) else list(tags)
    out = list(dict.fromkeys(check_tag(t) for t in items if str(t).strip()))
    if not out:
        raise InvalidValueError("give at least one tag")
    return out


def add_tags(db, image_ids: Iterable[int], tags: str | Iterable[str], *, author: str) -> int:
    """Put `tags` on every image (one transaction); returns the number of (image, tag) rows added."""
    tags, ids = check_tags(tags), [int(i) for i in image_ids]
    with write(db):
        for i in ids:
            image_row(db, i)
        before = db.conn.total_changes
        db.conn.executemany("INSERT OR IGNORE INTO image_tags (tag, image_id) VALUES (?, ?)",
                            [(t, i) for i in ids for t in tags])
        added = db.conn.total_changes - before
        if added:
            audit.record(db, author, "image.tags.add", "image", ids[0] if len(ids) == 1 else None,
                         {"tags": tags, "images": ids[:1000], "added": added})
    return added


def remove_tags(db, image_ids: Iterable[int], tags: str | Iterable[str], *, author: str) -> int:
    """Take `tags` off every image (one transaction); returns the number of rows removed."""
    tags, ids = check_tags(tags), [int(i) for i in image_ids]
    with write(db):
        before = db.conn.total_changes
        db.conn.executemany("DELETE FROM image_tags WHERE tag = ? AND image_id = ?",
                            [(t, i) for i in ids for t in tags])
        removed = db.conn.total_changes - before
        if removed:
            audit.record(db, author, "image.tags.remove", "image", ids[0] if len(ids) == 1 else None,
                         {"tags": tags, "images": ids[:1000], "removed": removed})
    return removed


def tags_of(db, image_id: int) -> list[str]:
    """An image's tags, sorted."""
    return [r[0] for r in db.execute("SELECT tag FROM image_tags WHERE image_id = ? ORDER BY tag",
                                          [int(image_id)]).fetchall()]


def tag_counts(db, limit: int = 200) -> list[tuple[str, int]]:
    """(tag, images) of the most used tags, most used first (the tag filter's choices)."""
    rows = db.execute("SELECT tag, count(*) AS n FROM image_tags GROUP BY tag ORDER BY n DESC, tag LIMIT ?",
                           [int(limit)]).fetchall()
    return [(r[0], int(r[1])) for r in rows]
