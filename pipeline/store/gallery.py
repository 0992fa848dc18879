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

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass

from .errors import InvalidValueError
from .images import check_statuses
from .schema import CONFIDENCE_BINS, STATUSES
from .tags import check_tag

# gallery sort key -> column (ties broken by id, so paging is stable)
SORTS = {"confidence": "confidence", "name": "name", "date": "created_at", "id": "id", "time": "frame_time"}
NULLABLE = {"confidence", "frame_time"}          # sort columns some images leave empty: those come last
MAX_PAGE = 1000
LAST_PAGE = "end"          # list_images(before=LAST_PAGE): the last page of the order


@dataclass(frozen=True)
class Order:
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


def order_of(sort: str, descending: bool) -> Order:
    if sort not in SORTS:
        raise InvalidValueError(f"unknown sort {sort!r}; use one of {', '.join(SORTS)}")
    return Order(SORTS[sort], bool(descending))


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


def sql_where(where: list[str]) -> str:
    return " WHERE " + " AND ".join(where) if where else ""


@dataclass(frozen=True)
class Histogram:
    """Confidence histogram: counts[i] images with a confidence in [edges[i], edges[i + 1]) (the
    last bin includes 1.0; values outside [0, 1] are counted in the end bins); `unscored` have none."""
    edges: list[float]
    counts: list[int]
    unscored: int

# ------------------------------------------------------------------ counts
def count_by_status(db) -> dict[str, int]:
    """{'pending': n, 'accepted': n, 'rejected': n, 'corrected': n} (zeros included); four rows read."""
    counts = dict.fromkeys(STATUSES, 0)
    for status, n in db.execute("SELECT status, n FROM image_counts").fetchall():
        counts[status] = n
    return counts


def count_images(db, status: str | Iterable[str] | None = None, clip: str | None = None, **narrow) -> int:
    """How many images match a filter (None = all): statuses alone from the maintained counts;
    with a `clip` or a narrower filter (name, tag, min/max_confidence), counted in their index ranges."""
    return count(db, GalleryFilter.make(status, clip, **narrow))


def count(db, flt: GalleryFilter) -> int:
    """How many images match a validated filter (the counts table when it can answer)."""
    if flt.clip is not None or flt.narrow:
        where, params = flt.where()
        return db.execute("SELECT count(*) FROM images" + sql_where(where), params).fetchone()[0]
    counts = count_by_status(db)
    return sum(counts[s] for s in (flt.statuses or STATUSES))


def confidence_histogram(db, status: str | Iterable[str] | None = None) -> Histogram:
    """The confidence histogram of images with these statuses (None = all), from the table the
    triggers keep (schema migration 8): 20 bins over [0, 1]; reads 80 rows at any store size."""
    st = check_statuses(status) or STATUSES
    counts = [0] * CONFIDENCE_BINS
    marks = ", ".join("?" * len(st))
    for b, n in db.execute(f"SELECT bin, sum(n) FROM confidence_bins WHERE status IN ({marks}) "
                                "GROUP BY bin", list(st)).fetchall():
        counts[int(b)] = int(n)
    unscored = count(db, GalleryFilter(st)) - sum(counts)
    return Histogram([i / CONFIDENCE_BINS for i in range(CONFIDENCE_BINS + 1)], counts, unscored)


def clips(db) -> list[tuple[str, int]]:
    """(clip, number of its frames in the store) for every video imported, in import order."""
    rows = db.execute("SELECT clip, count(*), min(id) AS first FROM images WHERE clip IS NOT NULL "
                           "GROUP BY clip ORDER BY first").fetchall()
    return [(r[0], int(r[1])) for r in rows]
