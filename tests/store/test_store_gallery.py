"""The gallery at scale: keyset pages walk exactly the full order, counts kept by triggers, query plans."""
from __future__ import annotations

import sqlite3

import numpy as np
import pytest

from pipeline.store import LAST_PAGE, STATUSES, InvalidValueError, Location, Store
from pipeline.store.schema import migrate

FILTERS = [None, "pending", "accepted,corrected", "rejected", list(STATUSES)]
SORTS = ["confidence", "name", "date", "id"]


@pytest.fixture(scope="module")
def big(tmp_path_factory) -> Store:
    """31 images: confidences with ties and NULLs, repeated names, every status, a deleted one."""
    store = Store(tmp_path_factory.mktemp("gallery") / "g.db")
    rng = np.random.default_rng(7)
    label = np.ones((6, 8), np.float32)
    for i in range(32):
        rec, _ = store.add_image(f"image {i}".encode(), f"n{int(rng.integers(0, 6))}.png", width=8, height=6)
        conf = [None, 0.25, 0.5, 0.5, float(rng.random())][i % 5]
        if conf is not None:
            store.add_prediction(rec.id, "m", "disparity", label, confidence=conf)
        status = STATUSES[int(rng.integers(0, 4))]
        if status != "pending":
            store.set_status(rec.id, status, author="t")
    with store.write() as db:                      # a deletion must leave the counts right too
        db.conn.execute("DELETE FROM images WHERE id = 5")
    return store


def reference(store: Store, status, sort: str, descending: bool) -> list[int]:
    """The full order, computed in Python from every row."""
    st = [s for s in (status.split(",") if isinstance(status, str) else status or STATUSES)]
    col = {"confidence": "confidence", "name": "name", "date": "created_at", "id": "id"}[sort]
    rows = [r for r in store.db.query("SELECT * FROM images") if r["status"] in st]
    scored = [r for r in rows if r[col] is not None]
    unscored = [r for r in rows if r[col] is None]
    scored.sort(key=lambda r: (r[col], r["id"]), reverse=descending)
    unscored.sort(key=lambda r: r["id"], reverse=descending)
    return [r["id"] for r in scored + unscored]


@pytest.mark.parametrize("status", FILTERS)
@pytest.mark.parametrize("sort", SORTS)
@pytest.mark.parametrize("descending", [False, True])
def test_cursor_pages_forward_and_back_walk_exactly_the_full_order(big, status, sort, descending):
    want = reference(big, status, sort, descending)
    kw = {"status": status, "sort": sort, "descending": descending}
    for limit in (1, 3, 7, 50):
        page, seen = big.list_images(limit=limit, **kw), []
        assert page.prev_cursor is None and page.offset == 0
        while True:
            assert page.total == len(want)
            seen += [r.id for r in page.items]
            if page.next_cursor is None:
                break
            page = big.list_images(after=page.next_cursor, limit=limit, **kw)
        assert seen == want
        page, back = big.list_images(before=LAST_PAGE, limit=limit, **kw), []
        assert page.next_cursor is None
        while True:
            back = [r.id for r in page.items] + back
            if page.prev_cursor is None:
                break
            page = big.list_images(before=page.prev_cursor, limit=limit, **kw)
        assert back == want
        for offset in (0, 2, len(want) - 1, len(want) + 3):      # jumps by position agree
            assert [r.id for r in big.list_images(offset=offset, limit=limit, **kw).items] == \
                want[offset:offset + limit]


@pytest.mark.parametrize("status", [None, "pending", "accepted,corrected"])
@pytest.mark.parametrize("sort", SORTS)
@pytest.mark.parametrize("descending", [False, True])
def test_locate_matches_the_full_order(big, status, sort, descending):
    want = reference(big, status, sort, descending)
    for image_id in [r[0] for r in big.db.execute("SELECT id FROM images")]:
        loc = big.locate(image_id, status=status, sort=sort, descending=descending)
        if image_id in want:
            i = want.index(image_id)
            assert loc == Location(i, len(want), want[i - 1] if i else None, want[i + 1] if i + 1 < len(want) else None)
        else:
            assert loc == Location(None, len(want), None, want[0] if want else None)


def test_a_cursor_survives_changes_and_is_refused_by_another_order(big, tmp_path, make_png):
    page = big.list_images(sort="name", limit=4)
    with pytest.raises(InvalidValueError, match="another sort order"):
        big.list_images(sort="date", after=page.next_cursor)
    with pytest.raises(InvalidValueError, match="not one the store made"):
        big.list_images(after="[1, 2")
    with pytest.raises(InvalidValueError, match="not both"):
        big.list_images(after=page.next_cursor, before=page.next_cursor)
    store = Store(tmp_path / "s.db")
    ids = [store.add_image(make_png(seed=i), f"{i}.png", width=8, height=6)[0].id for i in range(6)]
    first = store.list_images(sort="id", limit=2)
    store.set_status(ids[1], "rejected", author="t")          # the cursor's own row leaves the filter
    nxt = store.list_images(status="pending", sort="id", after=first.next_cursor, limit=2)
    assert [r.id for r in nxt.items] == ids[2:4]


def counts_by_scan(store: Store) -> dict[str, int]:
    out = dict.fromkeys(STATUSES, 0)
    out.update({r[0]: r[1] for r in store.db.execute("SELECT status, count(*) FROM images GROUP BY status")})
    return out


def test_counts_kept_by_triggers_equal_a_scan(big, tmp_path, make_png):
    assert big.count_by_status() == counts_by_scan(big)
    assert big.count_images("accepted,corrected") == sum(counts_by_scan(big)[s] for s in ("accepted", "corrected"))
    store = Store(tmp_path / "c.db")
    recs = [store.add_image(make_png(seed=i), f"{i}.png", width=8, height=6)[0] for i in range(5)]
    store.set_status(recs[0].id, "accepted", author="t")
    store.set_status(recs[0].id, "accepted", author="t")                   # same status: no change
    store.set_status(recs[1].id, "rejected", author="t")
    with store.write() as db:
        db.conn.execute("DELETE FROM images WHERE id = ?", [recs[2].id])
    with pytest.raises(sqlite3.IntegrityError):                            # a refused change counts nothing
        with store.write() as db:
            db.conn.execute("UPDATE images SET status = 'bogus' WHERE id = ?", [recs[3].id])
    assert store.count_by_status() == counts_by_scan(store) == {"pending": 2, "accepted": 1, "rejected": 1,
                                                                 "corrected": 0}


def test_migration_5_counts_the_rows_an_older_database_already_has(tmp_path, make_png):
    path = tmp_path / "v4.db"
    conn = sqlite3.connect(path)
    migrate(conn, target=4)
    for i, status in enumerate(["pending", "accepted", "accepted", "corrected"]):
        conn.execute("INSERT INTO images (sha256, name, ext, nbytes, width, height, status, created_at, updated_at) "
                     "VALUES (?, 'x.png', '.png', 1, 1, 1, ?, 't', 't')", (f"h{i}", status))
    conn.commit()
    conn.close()
    store = Store(path)
    assert store.count_by_status() == {"pending": 1, "accepted": 2, "rejected": 0, "corrected": 1}


def plans(store: Store, fn) -> list[tuple[str, str]]:
    """(sql, query plan) of every SELECT on images that `fn` runs."""
    seen: list[str] = []
    conn = store.db.conn
    conn.set_trace_callback(seen.append)
    try:
        fn()
    finally:
        conn.set_trace_callback(None)
    out = []
    for sql in seen:
        if sql.startswith("SELECT") and "FROM images" in sql:
            out.append((sql, " | ".join(r[3] for r in conn.execute("EXPLAIN QUERY PLAN " + sql))))
    return out


@pytest.mark.parametrize("status", [None, "pending", "accepted,corrected"])
@pytest.mark.parametrize("sort", SORTS)
@pytest.mark.parametrize("descending", [False, True])
def test_page_queries_walk_an_index_without_sorting_or_scanning(big, status, sort, descending):
    """What keeps a page at 1,000,000 images as fast as at 10,000: index ranges, no temporary sort."""
    kw = {"status": status, "sort": sort, "descending": descending, "limit": 3}

    def browse():
        page = big.list_images(**kw)
        page = big.list_images(after=page.next_cursor, **kw)
        big.list_images(before=page.prev_cursor, **kw)
        big.list_images(before=LAST_PAGE, **kw)
        big.locate(big.list_images(**kw).items[0].id, status=status, sort=sort, descending=descending)

    found = plans(big, browse)
    assert len(found) > 8
    for sql, plan in found:
        assert "TEMP B-TREE" not in plan, (sql, plan)
        rowid_walk = plan == "SCAN images" and " WHERE " not in sql       # all images in id order
        assert "USING" in plan or rowid_walk, (sql, plan)


def test_training_items_in_keyset_chunks_equal_the_whole_list(big):
    labelled = [i.image_id for i in big.training_items(STATUSES)]
    big.add_point_pair(labelled[0], (0, 0), (5, 7), 1, author="t")
    big.add_point_pair(labelled[-1], (1, 1), (2, 2), 2, author="t")
    for statuses in (("accepted", "corrected"), ("pending",), STATUSES):
        whole = big.training_items(statuses)
        assert whole and [i.image_id for i in whole] == sorted(i.image_id for i in whole)
        for chunk in (1, 3, 100):
            assert list(big.iter_training_items(statuses, chunk=chunk)) == whole
        assert big.training_items(statuses, after_id=whole[0].image_id, limit=2) == whole[1:3]
    assert sum(len(i.point_pairs) for i in big.iter_training_items(STATUSES, chunk=2)) == 2


def test_neighbours_are_locates_previous_and_next(big):
    for image_id in [r[0] for r in big.db.execute("SELECT id FROM images")]:
        for status, sort in ((None, "confidence"), ("pending", "name"), ("accepted,corrected", "date")):
            loc = big.locate(image_id, status=status, sort=sort, descending=True)
            assert big.neighbours(image_id, status=status, sort=sort, descending=True) == (loc.previous_id, loc.next_id)
