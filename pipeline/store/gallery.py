"""The gallery's queries at any size: keyset pages, neighbours, counts per status.

Pages are found by keyset ("the 50 rows after this one in this order"), never by skipping
rows: each status in the filter is read along its own index ((status, confidence, id),
(status, name, id), (status, created_at, id) or (status, id)) from the cursor on, at most
`limit` + 1 rows, and the few runs are merged in Python, so a page costs the same at row 10
and at row 900,000, with one status or several. Counts come from `image_counts` (kept by
triggers, schema migration 7); a filter's total is the sum of its statuses' counts.

`clip` (one video's frames, schema migration 5) narrows every query to that clip, read along
its index (clip, frame_time, id); its totals are counted in that index (one clip's frames).

Order: by the sort column, ties by id, in the chosen direction; for confidence (and frame time),
images without one (not pseudo-labelled yet; photos) come last in both directions ("section" 1
below), in id order. A cursor is a short text naming the sort, the direction and the row it stands on; it
stays valid while rows change (a page after it starts at the next row in order that exists).

`offset` pages (a jump to page N) still work, for one status or all through the same
indexes (an index walk of `offset` entries); several statuses with an offset sort the whole
filter, so they are the one slow query left here, and only for the jump itself.
"""
from __future__ import annotations

import heapq
import json
from collections.abc import Iterable
from dataclasses import dataclass

from .errors import InvalidValueError
from .images import check_statuses
from .records import Location, Page
from .schema import STATUSES

# gallery sort key -> column (ties broken by id, so paging is stable)
SORTS = {"confidence": "confidence", "name": "name", "date": "created_at", "id": "id", "time": "frame_time"}
NULLABLE = {"confidence", "frame_time"}          # sort columns some images leave empty: those come last
MAX_PAGE = 1000
LAST_PAGE = "end"          # list_images(before=LAST_PAGE): the last page of the order


@dataclass(frozen=True)
class _Order:
    col: str                    # images column
    desc: bool

    @property
    def sections(self) -> tuple[int, ...]:
        return (0, 1) if self.col in NULLABLE else (0,)          # 1: the column IS NULL, last

    def key(self, row: dict) -> tuple:
        """(section, value, id) of a row; the order is section ascending, then (value, id)."""
        if self.col == "id":
            return 0, None, row["id"]
        value = row[self.col]
        return (1, None, row["id"]) if value is None else (0, value, row["id"])

    def token(self, key: tuple) -> str:
        return json.dumps([self.col, self.desc, *key], separators=(",", ":"))

    def parse(self, token: str) -> tuple:
        try:
            col, desc, sec, value, image_id = json.loads(token)
            key = int(sec), value, int(image_id)
        except (ValueError, TypeError):
            raise InvalidValueError(f"gallery cursor {token!r} is not one the store made; reload the "
                                    "gallery from its first page") from None
        if (col, bool(desc)) != (self.col, self.desc) or key[0] not in self.sections:
            raise InvalidValueError(f"gallery cursor {token!r} belongs to another sort order; reload the "
                                    "gallery from its first page")
        return key


def _order(sort: str, descending: bool) -> _Order:
    if sort not in SORTS:
        raise InvalidValueError(f"unknown sort {sort!r}; use one of {', '.join(SORTS)}")
    return _Order(SORTS[sort], bool(descending))


def _base_filter(statuses: tuple[str, ...], clip: str | None) -> tuple[list[str], list]:
    """(WHERE conditions, params) of a status filter and an optional clip."""
    where, params = [], []
    if statuses:
        where.append(f"status IN ({', '.join('?' * len(statuses))})")
        params += list(statuses)
    if clip is not None:
        where.append("clip = ?")
        params.append(str(clip))
    return where, params


def _in_filter(row: dict, statuses: tuple[str, ...], clip: str | None) -> bool:
    return (not statuses or row["status"] in statuses) and (clip is None or row.get("clip") == clip)


class GalleryMixin:
    # ------------------------------------------------------------------ counts
    def count_by_status(self) -> dict[str, int]:
        """{'pending': n, 'accepted': n, 'rejected': n, 'corrected': n} (zeros included); four rows read."""
        counts = dict.fromkeys(STATUSES, 0)
        for status, n in self.db.execute("SELECT status, n FROM image_counts").fetchall():
            counts[status] = n
        return counts

    def count_images(self, status: str | Iterable[str] | None = None, clip: str | None = None) -> int:
        """How many images match a status filter (None = all), from the maintained counts; with a
        `clip`, counted in that clip's index range."""
        st = check_statuses(status)
        if clip is not None:
            where, params = _base_filter(st, clip)
            return self.db.execute("SELECT count(*) FROM images WHERE " + " AND ".join(where), params).fetchone()[0]
        counts = self.count_by_status()
        return sum(counts[s] for s in (st or STATUSES))

    def clips(self) -> list[tuple[str, int]]:
        """(clip, number of its frames in the store) for every video imported, in import order."""
        rows = self.db.execute("SELECT clip, count(*), min(id) AS first FROM images WHERE clip IS NOT NULL "
                               "GROUP BY clip ORDER BY first").fetchall()
        return [(r[0], int(r[1])) for r in rows]

    # ------------------------------------------------------------------ keyset walk
    def _run(self, status: str | None, order: _Order, sec: int, desc: bool, bound: tuple | None,
             n: int, offset: int = 0, clip: str | None = None) -> list[dict]:
        """Up to n rows of one status (None: all) and section, in order, strictly after `bound`
        (and after skipping `offset` rows: page jumps only)."""
        where, params = _base_filter((status,) if status is not None else (), clip)
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
        sql = "SELECT * FROM images" + (" WHERE " + " AND ".join(where) if where else "")
        sql += f" ORDER BY id {direction}" if by_id else f" ORDER BY {order.col} {direction}, id {direction}"
        return list(self.db.query(sql + " LIMIT ? OFFSET ?", [*params, int(n), int(offset)]))

    def _walk(self, statuses: tuple[str, ...], order: _Order, start: tuple | None, n: int,
              reverse: bool = False, clip: str | None = None) -> list[dict]:
        """The n rows after `start` (None: from the beginning) in `order`; reverse: the n rows
        before it, nearest first. Each status is one index range; the runs are merged."""
        desc = order.desc != reverse
        out: list[dict] = []
        for sec in order.sections[::-1] if reverse else order.sections:
            if start is not None and (sec < start[0] if not reverse else sec > start[0]):
                continue                                          # sections the walk has passed
            bound = start if start is not None and start[0] == sec else None
            runs = [self._run(s, order, sec, desc, bound, n - len(out), clip=clip) for s in (statuses or (None,))]
            merged = heapq.merge(*runs, key=lambda r: order.key(r)[1:], reverse=desc) if len(runs) > 1 else runs[0]
            for row in merged:
                out.append(row)
                if len(out) == n:
                    return out
        return out

    # ------------------------------------------------------------------ pages
    def list_images(self, *, status: str | Iterable[str] | None = None, sort: str = "confidence",
                    descending: bool = False, offset: int = 0, limit: int = 50,
                    after: str | None = None, before: str | None = None, clip: str | None = None) -> Page:
        """A gallery page. `status`: one, several ('accepted,corrected' or a list) or None = all;
        `clip`: only that video's frames.

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
        order, st, limit = _order(sort, descending), check_statuses(status), int(limit)
        total = self.count_images(st, clip)
        if after is None and before is None and offset > 0:
            rows = self._offset_rows(st, order, int(offset), limit, clip)
            return self._page(rows, order, total, int(offset), limit, more_before=True,
                              more_after=int(offset) + len(rows) < total)
        reverse = before is not None
        cursor = after if after is not None else before
        start = None if cursor in (None, LAST_PAGE) else order.parse(cursor)
        rows = self._walk(st, order, start, limit + 1, reverse=reverse, clip=clip)
        more = len(rows) > limit                       # rows beyond the page in the walk's direction
        rows = rows[:limit]
        if reverse:
            rows.reverse()
        behind = start is not None                     # rows on the other side of the cursor?
        if behind and rows:
            edge = order.key(rows[-1] if reverse else rows[0])
            behind = bool(self._walk(st, order, edge, 1, reverse=not reverse, clip=clip))
        return self._page(rows, order, total, 0 if cursor is None else None, limit,
                          more_before=more if reverse else behind, more_after=behind if reverse else more)

    def _page(self, rows: list[dict], order: _Order, total: int, offset: int | None, limit: int, *,
              more_before: bool, more_after: bool) -> Page:
        items = [self._image_record(r) for r in rows]
        prev_cursor = order.token(order.key(rows[0])) if rows and more_before else None
        next_cursor = order.token(order.key(rows[-1])) if rows and more_after else None
        return Page(items, int(total), offset, limit, next_cursor=next_cursor, prev_cursor=prev_cursor)

    def _offset_rows(self, st: tuple[str, ...], order: _Order, offset: int, limit: int,
                     clip: str | None = None) -> list[dict]:
        """A page by position (jump to page N). One status or all: an index walk of `offset`
        entries; several statuses (or one clip's frames): SQLite sorts the filter (the one query
        here that scans; a clip is one video's frames)."""
        if len(st) > 1 or clip is not None:
            direction = "DESC" if order.desc else "ASC"
            nulls = " NULLS LAST" if order.col in NULLABLE else ""
            by = f"id {direction}" if order.col == "id" else f"{order.col} {direction}{nulls}, id {direction}"
            where, params = _base_filter(st, clip)
            return list(self.db.query("SELECT * FROM images" + (" WHERE " + " AND ".join(where) if where else "")
                                      + f" ORDER BY {by} LIMIT ? OFFSET ?", [*params, limit, offset]))
        rows: list[dict] = []
        skip = offset
        for sec in order.sections:
            got = self._run(st[0] if st else None, order, sec, order.desc, None, limit - len(rows), skip)
            rows += got
            if len(rows) == limit:
                break
            skip = 0 if got else skip - self._section_count(st, sec, order)     # past this section: skip less
        return rows

    def _section_count(self, st: tuple[str, ...], sec: int, order: _Order, clip: str | None = None) -> int:
        """Images of the filter with (sec 0) or without (sec 1) a value in the order's nullable column."""
        where, params = _base_filter(st, clip)
        nulls = self.db.execute("SELECT count(*) FROM images WHERE " + " AND ".join([*where, f"{order.col} IS NULL"]),
                                params).fetchone()[0]
        return nulls if sec else self.count_images(st, clip) - nulls

    # ------------------------------------------------------------------ neighbours
    def locate(self, image_id: int, *, status: str | Iterable[str] | None = None,
               sort: str = "confidence", descending: bool = False, clip: str | None = None) -> Location:
        """Where an image sits in a gallery order, and its neighbours (keyboard next/previous).

        An image outside the filter gets index None and the filter's first image as `next_id`.
        `index` counts the images before it: an index range count, so it grows with the
        position (a few ms per 100,000 rows); `neighbours` alone costs the same at any size.
        """
        order, st = _order(sort, descending), check_statuses(status)
        total = self.count_images(st, clip)
        row = self._image_row(image_id)
        if not _in_filter(row, st, clip):
            first = self._walk(st, order, None, 1, clip=clip)
            return Location(None, total, None, first[0]["id"] if first else None)
        previous_id, next_id = self._neighbours(row, st, order, clip)
        return Location(self._position(st, order, order.key(row), clip), total, previous_id, next_id)

    def neighbours(self, image_id: int, *, status: str | Iterable[str] | None = None,
                   sort: str = "confidence", descending: bool = False,
                   clip: str | None = None) -> tuple[int | None, int | None]:
        """(previous id, next id) of an image in a gallery order (two keyset lookups). Outside the
        filter: (None, the filter's first image)."""
        order, st = _order(sort, descending), check_statuses(status)
        row = self._image_row(image_id)
        if not _in_filter(row, st, clip):
            first = self._walk(st, order, None, 1, clip=clip)
            return None, first[0]["id"] if first else None
        return self._neighbours(row, st, order, clip)

    def _neighbours(self, row: dict, st: tuple[str, ...], order: _Order,
                    clip: str | None = None) -> tuple[int | None, int | None]:
        key = order.key(row)
        before = self._walk(st, order, key, 1, reverse=True, clip=clip)
        after = self._walk(st, order, key, 1, clip=clip)
        return (before[0]["id"] if before else None), (after[0]["id"] if after else None)

    def _position(self, st: tuple[str, ...], order: _Order, key: tuple, clip: str | None = None) -> int:
        """How many images of the filter come before the row with `key`."""
        sec, value, image_id = key
        op = ">" if order.desc else "<"
        n = self._section_count(st, 0, order, clip) if sec == 1 else 0
        for s in st or (None,):
            where, params = _base_filter((s,) if s is not None else (), clip)
            if order.col in NULLABLE:
                where.append(f"{order.col} IS NULL" if sec else f"{order.col} IS NOT NULL")
            if order.col == "id" or sec == 1:
                where.append(f"id {op} ?")
                params.append(image_id)
            else:
                where.append(f"({order.col}, id) {op} (?, ?)")
                params += [value, image_id]
            n += self.db.execute("SELECT count(*) FROM images WHERE " + " AND ".join(where), params).fetchone()[0]
        return n
