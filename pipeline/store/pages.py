"""The gallery's pages at any size: keyset walks, pages by cursor or position, neighbours, every id of
a filter. The filter, the orders and the counts are gallery.py (its docstring says how a page is read
along an index and what a cursor is)."""
from __future__ import annotations

import heapq
from collections.abc import Iterable

from .blobs import BlobStore
from .errors import InvalidValueError
from .gallery import LAST_PAGE, MAX_PAGE, NULLABLE, GalleryFilter, Order, count, order_of, sql_where
from .images import image_record, image_row
from .records import Location, Page


def _run(db, status: str | None, order: Order, sec: int, desc: bool, bound: tuple | None,
         n: int, flt: GalleryFilter, offset: int = 0) -> list[dict]:
    """Up to n rows of one status (None: all) and section, in order, strictly after `bound`
    (and after skipping `offset` rows: page jumps only)."""
    if sec == 1 and order.col == "confidence" and (flt.min_confidence, flt.max_confidence) != (None, None):
        return []                                  # a confidence range holds no image without one
    where, params = flt.where((status,) if status is not None else ())
    if order.col in NULLABLE:
        where.append(f"{order.col} IS NULL" if sec else f"{order.col} IS NOT NULL")
    op, direction = ("<", "DESC") if desc else (">", "ASC")
    by_id = order.col == "id" or sec == 1
    if bound is not None:
        if by_id:
            where.append(f"id {op} ?")
            params.append(bound[2])
        else:
            where.append(f"({order.col}, id) {op} (?, ?)")
            params += [bound[1], bound[2]]
    sql = "SELECT * FROM images" + sql_where(where)
    sql += f" ORDER BY id {direction}" if by_id else f" ORDER BY {order.col} {direction}, id {direction}"
    return list(db.query(sql + " LIMIT ? OFFSET ?", [*params, int(n), int(offset)]))


def walk(db, flt: GalleryFilter, order: Order, start: tuple | None, n: int,
          reverse: bool = False) -> list[dict]:
    """The n rows after `start` (None: from the beginning) in `order`; reverse: the n rows
    before it, nearest first. Each status is one index range; the runs are merged."""
    desc = order.desc != reverse
    out: list[dict] = []
    for sec in order.sections[::-1] if reverse else order.sections:
        if start is not None and (sec < start[0] if not reverse else sec > start[0]):
            continue                                          # sections the walk has passed
        bound = start if start is not None and start[0] == sec else None
        runs = [_run(db, s, order, sec, desc, bound, n - len(out), flt) for s in (flt.statuses or (None,))]
        merged = heapq.merge(*runs, key=lambda r: order.key(r)[1:], reverse=desc) if len(runs) > 1 else runs[0]
        for row in merged:
            out.append(row)
            if len(out) == n:
                return out
    return out

# ------------------------------------------------------------------ pages
def list_images(db, blobs: BlobStore, *, status: str | Iterable[str] | None = None, sort: str = "confidence",
                descending: bool = False, offset: int = 0, limit: int = 50,
                after: str | None = None, before: str | None = None, clip: str | None = None,
                **narrow) -> Page:
    """A gallery page. `status`: one, several ('accepted,corrected' or a list) or None = all;
    `clip`: only that video's frames; `narrow`: name (glob), tag, min_confidence, max_confidence.

    sort: 'confidence' (ascending = least confident first; unscored images last),
    'name', 'date' (import time), 'id' or 'time' (frame time in a clip). Paging: pass the page's `next_cursor` as `after`
    for the next page, its `prev_cursor` as `before` for the previous one, `before=LAST_PAGE`
    for the last page; `offset` (a jump to a page number) is only used without a cursor.
    """
    if not 0 < int(limit) <= MAX_PAGE or int(offset) < 0:
        raise InvalidValueError(f"page limit must be 1..{MAX_PAGE} and offset >= 0; "
                                f"got limit={limit}, offset={offset}")
    if after is not None and before is not None:
        raise InvalidValueError("give a page cursor as `after` or as `before`, not both")
    order, flt, limit = order_of(sort, descending), GalleryFilter.make(status, clip, **narrow), int(limit)
    total = count(db, flt)
    if after is None and before is None and offset > 0:
        rows = _offset_rows(db, flt, order, int(offset), limit)
        return _page(blobs, rows, order, total, int(offset), limit, more_before=True,
                          more_after=int(offset) + len(rows) < total)
    reverse = before is not None
    cursor = after if after is not None else before
    start = None if cursor in (None, LAST_PAGE) else order.parse(cursor)
    rows = walk(db, flt, order, start, limit + 1, reverse=reverse)
    more = len(rows) > limit                       # rows beyond the page in the walk's direction
    rows = rows[:limit]
    if reverse:
        rows.reverse()
    behind = start is not None                     # rows on the other side of the cursor?
    if behind and rows:
        edge = order.key(rows[-1] if reverse else rows[0])
        behind = bool(walk(db, flt, order, edge, 1, reverse=not reverse))
    return _page(blobs, rows, order, total, 0 if cursor is None else None, limit,
                      more_before=more if reverse else behind, more_after=behind if reverse else more)


def filtered_ids(db, *, status: str | Iterable[str] | None = None, clip: str | None = None,
                 chunk: int = 500, **narrow) -> Iterable[int]:
    """Every image id of a filter in id order, one keyset chunk at a time (bulk changes, the CLI)."""
    flt, order, start = GalleryFilter.make(status, clip, **narrow), order_of("id", False), None
    while True:
        rows = walk(db, flt, order, start, chunk)
        yield from (r["id"] for r in rows)
        if len(rows) < chunk:
            return
        start = order.key(rows[-1])


def _page(blobs: BlobStore, rows: list[dict], order: Order, total: int, offset: int | None, limit: int, *,
          more_before: bool, more_after: bool) -> Page:
    items = [image_record(blobs, r) for r in rows]
    prev_cursor = order.token(order.key(rows[0])) if rows and more_before else None
    next_cursor = order.token(order.key(rows[-1])) if rows and more_after else None
    return Page(items, int(total), offset, limit, next_cursor=next_cursor, prev_cursor=prev_cursor)


def _offset_rows(db, flt: GalleryFilter, order: Order, offset: int, limit: int) -> list[dict]:
    """A page by position (jump to page N). One status or all: an index walk of `offset`
    entries; several statuses (or one clip's frames): SQLite sorts the filter (the one query
    here that scans; a clip is one video's frames)."""
    if len(flt.statuses) > 1 or flt.clip is not None:
        direction = "DESC" if order.desc else "ASC"
        nulls = " NULLS LAST" if order.col in NULLABLE else ""
        by = f"id {direction}" if order.col == "id" else f"{order.col} {direction}{nulls}, id {direction}"
        where, params = flt.where()
        return list(db.query("SELECT * FROM images" + sql_where(where)
                                  + f" ORDER BY {by} LIMIT ? OFFSET ?", [*params, limit, offset]))
    rows: list[dict] = []
    skip = offset
    for sec in order.sections:
        got = _run(db, flt.statuses[0] if flt.statuses else None, order, sec, order.desc, None,
                        limit - len(rows), flt, skip)
        rows += got
        if len(rows) == limit:
            break
        skip = 0 if got else skip - _section_count(db, flt, sec, order)     # past this section: skip less
    return rows


def _section_count(db, flt: GalleryFilter, sec: int, order: Order) -> int:
    """Images of the filter with (sec 0) or without (sec 1) a value in the order's nullable column."""
    where, params = flt.where()
    nulls = db.execute("SELECT count(*) FROM images" + sql_where([*where, f"{order.col} IS NULL"]),
                            params).fetchone()[0]
    return nulls if sec else count(db, flt) - nulls

# ------------------------------------------------------------------ neighbours
def _in_filter(db, image_id: int, flt: GalleryFilter) -> bool:
    where, params = flt.where()
    return db.execute("SELECT 1 FROM images" + sql_where(["id = ?", *where]),
                           [int(image_id), *params]).fetchone() is not None


def locate(db, image_id: int, *, status: str | Iterable[str] | None = None,
           sort: str = "confidence", descending: bool = False, clip: str | None = None,
           **narrow) -> Location:
    """Where an image sits in a gallery order, and its neighbours (keyboard next/previous).

    An image outside the filter gets index None and the filter's first image as `next_id`.
    `index` counts the images before it: an index range count, so it grows with the
    position (a few ms per 100,000 rows); `neighbours` alone costs the same at any size.
    """
    order, flt = order_of(sort, descending), GalleryFilter.make(status, clip, **narrow)
    total = count(db, flt)
    row = image_row(db, image_id)
    if not _in_filter(db, row["id"], flt):
        first = walk(db, flt, order, None, 1)
        return Location(None, total, None, first[0]["id"] if first else None)
    previous_id, next_id = _neighbours(db, row, flt, order)
    return Location(_position(db, flt, order, order.key(row)), total, previous_id, next_id)


def neighbours(db, image_id: int, *, status: str | Iterable[str] | None = None,
               sort: str = "confidence", descending: bool = False,
               clip: str | None = None, **narrow) -> tuple[int | None, int | None]:
    """(previous id, next id) of an image in a gallery order (two keyset lookups). Outside the
    filter: (None, the filter's first image)."""
    order, flt = order_of(sort, descending), GalleryFilter.make(status, clip, **narrow)
    row = image_row(db, image_id)
    if not _in_filter(db, row["id"], flt):
        first = walk(db, flt, order, None, 1)
        return None, first[0]["id"] if first else None
    return _neighbours(db, row, flt, order)


def _neighbours(db, row: dict, flt: GalleryFilter, order: Order) -> tuple[int | None, int | None]:
    key = order.key(row)
    before = walk(db, flt, order, key, 1, reverse=True)
    after = walk(db, flt, order, key, 1)
    return (before[0]["id"] if before else None), (after[0]["id"] if after else None)


def _position(db, flt: GalleryFilter, order: Order, key: tuple) -> int:
    """How many images of the filter come before the row with `key`."""
    sec, value, image_id = key
    op = ">" if order.desc else "<"
    n = _section_count(db, flt, 0, order) if sec == 1 else 0
    for s in flt.statuses or (None,):
        where, params = flt.where((s,) if s is not None else ())
        if order.col in NULLABLE:
            where.append(f"{order.col} IS NULL" if sec else f"{order.col} IS NOT NULL")
        if order.col == "id" or sec == 1:
            where.append(f"id {op} ?")
            params.append(image_id)
        else:
            where.append(f"({order.col}, id) {op} (?, ?)")
            params += [value, image_id]
        n += db.execute("SELECT count(*) FROM images" + sql_where(where), params).fetchone()[0]
    return n
