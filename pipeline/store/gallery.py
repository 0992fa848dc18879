"""The gallery's queries at any size: keyset pages, neighbours, counts per status.

Pages are found by keyset ("the 50 rows after this one in this order"), never by skipping
rows: each status in the filter is read along its own index ((status, confidence, id),
(status, name, id), (status, created_at, id) or (status, id)) from the cursor on, at most
`limit` + 1 rows, and the few runs are merged in Python, so a page costs the same at row 10
and at row 900,000, with one status or several. Counts come from `image_counts` (kept by
triggers, schema migration 7); a filter's total is the sum of its statuses' counts.

`clip` (one video's frames, schema migration 5) narrows every query to that clip, read along
its index (clip, frame_time, id); its totals are counted in that index (one clip's frames).

Narrower filters (`GalleryFilter`): a file-name glob (SQLite GLOB, case-sensitive: `*`, `?`,
`[a-z]`), a tag (image_tags, schema migration 8) and a confidence range. They are conditions on the
same keyset walks (still no OFFSET and no temporary sort: a page reads index entries until it has
`limit` + 1 matches; a confidence range used with the confidence sort is an index range, a name
prefix with the name sort too, a tag is one primary-key lookup per entry read; under another
sort SQLite may read a name prefix or a confidence range as an index range and order its matches:
the one sort left, as large as those matches); their totals are
counted by one query over those index ranges instead of read from the counts table. The confidence
histogram per status is a table kept by triggers (migration 8): `confidence_histogram`.

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
import math
from collections.abc import Iterable
from dataclasses import dataclass

from .errors import InvalidValueError
from .images import check_statuses
from .records import Location, Page
from .schema import CONFIDENCE_BINS, STATUSES
from .tags import check_tag

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


@dataclass(frozen=True)
class GalleryFilter:
    """Which images a gallery query covers; every field narrows it (empty = all images)."""
    statuses: tuple[str, ...] = ()
    clip: str | None = None
    name: str | None = None                 # SQLite GLOB pattern on the file name
    tag: str | None = None
    min_confidence: float | None = None     # images without a confidence are outside any range
    max_confidence: float | None = None

    @classmethod
    def make(cls, status=None, clip=None, name=None, tag=None, min_confidence=None,
             max_confidence=None) -> GalleryFilter:
        """Validated: statuses as in check_statuses, a tag as in check_tag, lo <= hi."""
        lo, hi = (None if v in (None, "") else _number(v, what) for v, what in
                  ((min_confidence, "lowest confidence"), (max_confidence, "highest confidence")))
        if lo is not None and hi is not None and lo > hi:
            raise InvalidValueError(f"the confidence range {lo:g}..{hi:g} is empty; give the lower bound first")
        name = None if name in (None, "") else str(name)
        if name is not None and (len(name) > 200 or any(ord(c) < 32 for c in name)):
            raise InvalidValueError("a name pattern is one line of at most 200 characters")
        return cls(check_statuses(status), None if clip is None else str(clip), name,
                   None if tag in (None, "") else check_tag(tag), lo, hi)

    @property
    def narrow(self) -> bool:
        """Beyond statuses (and a clip): the counts table cannot answer its total."""
        return any(v is not None for v in (self.name, self.tag, self.min_confidence, self.max_confidence))

    def where(self, statuses: tuple[str, ...] | None = None) -> tuple[list[str], list]:
        """(WHERE conditions, params); `statuses` replaces the filter's own (one run of a walk)."""
        st = self.statuses if statuses is None else statuses
        where, params = [], []
        if st:
            where.append(f"status IN ({', '.join('?' * len(st))})")
            params += list(st)
        if self.clip is not None:
            where.append("clip = ?")
            params.append(self.clip)
        if self.name is not None:
            where.append("name GLOB ?")
            params.append(self.name)
        if self.min_confidence is not None:
            where.append("confidence >= ?")
            params.append(self.min_confidence)
        if self.max_confidence is not None:
            where.append("confidence <= ?")
            params.append(self.max_confidence)
        if self.tag is not None:
            where.append("EXISTS (SELECT 1 FROM image_tags t WHERE t.tag = ? AND t.image_id = images.id)")
            params.append(self.tag)
        return where, params


def _number(value, what: str) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        v = math.nan
    if not math.isfinite(v):
        raise InvalidValueError(f"the {what} must be a number (confidence runs from 0 to 1); got {value!r}")
    return v


def _sql_where(where: list[str]) -> str:
    return " WHERE " + " AND ".join(where) if where else ""


@dataclass(frozen=True)
class Histogram:
    """Confidence histogram: counts[i] images with a confidence in [edges[i], edges[i + 1]) (the
    last bin includes 1.0; values outside [0, 1] are counted in the end bins); `unscored` have none."""
    edges: list[float]
    counts: list[int]
    unscored: int


class GalleryMixin:
    # ------------------------------------------------------------------ counts
    def count_by_status(self) -> dict[str, int]:
        """{'pending': n, 'accepted': n, 'rejected': n, 'corrected': n} (zeros included); four rows read."""
        counts = dict.fromkeys(STATUSES, 0)
        for status, n in self.db.execute("SELECT status, n FROM image_counts").fetchall():
            counts[status] = n
        return counts

    def count_images(self, status: str | Iterable[str] | None = None, clip: str | None = None, **narrow) -> int:
        """How many images match a filter (None = all): statuses alone from the maintained counts;
        with a `clip` or a narrower filter (name, tag, min/max_confidence), counted in their index ranges."""
        return self._count(GalleryFilter.make(status, clip, **narrow))

    def _count(self, flt: GalleryFilter) -> int:
        if flt.clip is not None or flt.narrow:
            where, params = flt.where()
            return self.db.execute("SELECT count(*) FROM images" + _sql_where(where), params).fetchone()[0]
        counts = self.count_by_status()
        return sum(counts[s] for s in (flt.statuses or STATUSES))

    def confidence_histogram(self, status: str | Iterable[str] | None = None) -> Histogram:
        """The confidence histogram of images with these statuses (None = all), from the table the
        triggers keep (schema migration 8): 20 bins over [0, 1]; reads 80 rows at any store size."""
        st = check_statuses(status) or STATUSES
        counts = [0] * CONFIDENCE_BINS
        marks = ", ".join("?" * len(st))
        for b, n in self.db.execute(f"SELECT bin, sum(n) FROM confidence_bins WHERE status IN ({marks}) "
                                    "GROUP BY bin", list(st)).fetchall():
            counts[int(b)] = int(n)
        unscored = self._count(GalleryFilter(st)) - sum(counts)
        return Histogram([i / CONFIDENCE_BINS for i in range(CONFIDENCE_BINS + 1)], counts, unscored)

    def clips(self) -> list[tuple[str, int]]:
        """(clip, number of its frames in the store) for every video imported, in import order."""
        rows = self.db.execute("SELECT clip, count(*), min(id) AS first FROM images WHERE clip IS NOT NULL "
                               "GROUP BY clip ORDER BY first").fetchall()
        return [(r[0], int(r[1])) for r in rows]

    # ------------------------------------------------------------------ keyset walk
    def _run(self, status: str | None, order: _Order, sec: int, desc: bool, bound: tuple | None,
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
        sql = "SELECT * FROM images" + _sql_where(where)
        sql += f" ORDER BY id {direction}" if by_id else f" ORDER BY {order.col} {direction}, id {direction}"
        return list(self.db.query(sql + " LIMIT ? OFFSET ?", [*params, int(n), int(offset)]))

    def _walk(self, flt: GalleryFilter, order: _Order, start: tuple | None, n: int,
              reverse: bool = False) -> list[dict]:
        """The n rows after `start` (None: from the beginning) in `order`; reverse: the n rows
        before it, nearest first. Each status is one index range; the runs are merged."""
        desc = order.desc != reverse
        out: list[dict] = []
        for sec in order.sections[::-1] if reverse else order.sections:
            if start is not None and (sec < start[0] if not reverse else sec > start[0]):
                continue                                          # sections the walk has passed
            bound = start if start is not None and start[0] == sec else None
            runs = [self._run(s, order, sec, desc, bound, n - len(out), flt) for s in (flt.statuses or (None,))]
            merged = heapq.merge(*runs, key=lambda r: order.key(r)[1:], reverse=desc) if len(runs) > 1 else runs[0]
            for row in merged:
                out.append(row)
                if len(out) == n:
                    return out
        return out

    # ------------------------------------------------------------------ pages
    def list_images(self, *, status: str | Iterable[str] | None = None, sort: str = "confidence",
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
        order, flt, limit = _order(sort, descending), GalleryFilter.make(status, clip, **narrow), int(limit)
        total = self._count(flt)
        if after is None and before is None and offset > 0:
            rows = self._offset_rows(flt, order, int(offset), limit)
            return self._page(rows, order, total, int(offset), limit, more_before=True,
                              more_after=int(offset) + len(rows) < total)
        reverse = before is not None
        cursor = after if after is not None else before
        start = None if cursor in (None, LAST_PAGE) else order.parse(cursor)
        rows = self._walk(flt, order, start, limit + 1, reverse=reverse)
        more = len(rows) > limit                       # rows beyond the page in the walk's direction
        rows = rows[:limit]
        if reverse:
            rows.reverse()
        behind = start is not None                     # rows on the other side of the cursor?
        if behind and rows:
            edge = order.key(rows[-1] if reverse else rows[0])
            behind = bool(self._walk(flt, order, edge, 1, reverse=not reverse))
        return self._page(rows, order, total, 0 if cursor is None else None, limit,
                          more_before=more if reverse else behind, more_after=behind if reverse else more)

    def filtered_ids(self, *, status: str | Iterable[str] | None = None, clip: str | None = None,
                     chunk: int = 500, **narrow) -> Iterable[int]:
        """Every image id of a filter in id order, one keyset chunk at a time (bulk changes, the CLI)."""
        flt, order, start = GalleryFilter.make(status, clip, **narrow), _order("id", False), None
        while True:
            rows = self._walk(flt, order, start, chunk)
            yield from (r["id"] for r in rows)
            if len(rows) < chunk:
                return
            start = order.key(rows[-1])

    def _page(self, rows: list[dict], order: _Order, total: int, offset: int | None, limit: int, *,
              more_before: bool, more_after: bool) -> Page:
        items = [self._image_record(r) for r in rows]
        prev_cursor = order.token(order.key(rows[0])) if rows and more_before else None
        next_cursor = order.token(order.key(rows[-1])) if rows and more_after else None
        return Page(items, int(total), offset, limit, next_cursor=next_cursor, prev_cursor=prev_cursor)

    def _offset_rows(self, flt: GalleryFilter, order: _Order, offset: int, limit: int) -> list[dict]:
        """A page by position (jump to page N). One status or all: an index walk of `offset`
        entries; several statuses (or one clip's frames): SQLite sorts the filter (the one query
        here that scans; a clip is one video's frames)."""
        if len(flt.statuses) > 1 or flt.clip is not None:
            direction = "DESC" if order.desc else "ASC"
            nulls = " NULLS LAST" if order.col in NULLABLE else ""
            by = f"id {direction}" if order.col == "id" else f"{order.col} {direction}{nulls}, id {direction}"
            where, params = flt.where()
            return list(self.db.query("SELECT * FROM images" + _sql_where(where)
                                      + f" ORDER BY {by} LIMIT ? OFFSET ?", [*params, limit, offset]))
        rows: list[dict] = []
        skip = offset
        for sec in order.sections:
            got = self._run(flt.statuses[0] if flt.statuses else None, order, sec, order.desc, None,
                            limit - len(rows), flt, skip)
            rows += got
            if len(rows) == limit:
                break
            skip = 0 if got else skip - self._section_count(flt, sec, order)     # past this section: skip less
        return rows

    def _section_count(self, flt: GalleryFilter, sec: int, order: _Order) -> int:
        """Images of the filter with (sec 0) or without (sec 1) a value in the order's nullable column."""
        where, params = flt.where()
        nulls = self.db.execute("SELECT count(*) FROM images" + _sql_where([*where, f"{order.col} IS NULL"]),
                                params).fetchone()[0]
        return nulls if sec else self._count(flt) - nulls

    # ------------------------------------------------------------------ neighbours
    def _in_filter(self, image_id: int, flt: GalleryFilter) -> bool:
        where, params = flt.where()
        return self.db.execute("SELECT 1 FROM images" + _sql_where(["id = ?", *where]),
                               [int(image_id), *params]).fetchone() is not None

    def locate(self, image_id: int, *, status: str | Iterable[str] | None = None,
               sort: str = "confidence", descending: bool = False, clip: str | None = None,
               **narrow) -> Location:
        """Where an image sits in a gallery order, and its neighbours (keyboard next/previous).

        An image outside the filter gets index None and the filter's first image as `next_id`.
        `index` counts the images before it: an index range count, so it grows with the
        position (a few ms per 100,000 rows); `neighbours` alone costs the same at any size.
        """
        order, flt = _order(sort, descending), GalleryFilter.make(status, clip, **narrow)
        total = self._count(flt)
        row = self._image_row(image_id)
        if not self._in_filter(row["id"], flt):
            first = self._walk(flt, order, None, 1)
            return Location(None, total, None, first[0]["id"] if first else None)
        previous_id, next_id = self._neighbours(row, flt, order)
        return Location(self._position(flt, order, order.key(row)), total, previous_id, next_id)

    def neighbours(self, image_id: int, *, status: str | Iterable[str] | None = None,
                   sort: str = "confidence", descending: bool = False,
                   clip: str | None = None, **narrow) -> tuple[int | None, int | None]:
        """(previous id, next id) of an image in a gallery order (two keyset lookups). Outside the
        filter: (None, the filter's first image)."""
        order, flt = _order(sort, descending), GalleryFilter.make(status, clip, **narrow)
        row = self._image_row(image_id)
        if not self._in_filter(row["id"], flt):
            first = self._walk(flt, order, None, 1)
            return None, first[0]["id"] if first else None
        return self._neighbours(row, flt, order)

    def _neighbours(self, row: dict, flt: GalleryFilter, order: _Order) -> tuple[int | None, int | None]:
        key = order.key(row)
        before = self._walk(flt, order, key, 1, reverse=True)
        after = self._walk(flt, order, key, 1)
        return (before[0]["id"] if before else None), (after[0]["id"] if after else None)

    def _position(self, flt: GalleryFilter, order: _Order, key: tuple) -> int:
        """How many images of the filter come before the row with `key`."""
        sec, value, image_id = key
        op = ">" if order.desc else "<"
        n = self._section_count(flt, 0, order) if sec == 1 else 0
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
            n += self.db.execute("SELECT count(*) FROM images" + _sql_where(where), params).fetchone()[0]
        return n
