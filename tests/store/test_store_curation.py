"""Curation at scale (schema migration 8): narrower gallery filters (name glob, tag, confidence range) on
the same keyset walks, tags, the confidence histogram kept by triggers, batch status changes."""
from __future__ import annotations

import fnmatch
import re
import sqlite3

import numpy as np
import pytest

from pipeline.store import LAST_PAGE, STATUSES, InvalidValueError, Location, Store
from pipeline.store.schema import CONFIDENCE_BINS, migrate

SORTS = ["confidence", "name", "date", "id"]
NARROW = [dict(name="n[12]*"), dict(tag="glass"), dict(min_confidence=0.3, max_confidence=0.8),
          dict(name="*.png", tag="night", max_confidence=0.6), dict(min_confidence=0.5)]


@pytest.fixture(scope="module")
def tagged(tmp_path_factory) -> Store:
    """40 images: confidences with ties and NULLs, repeated names, every status, two tags."""
    store = Store(tmp_path_factory.mktemp("curation") / "g.db")
    rng = np.random.default_rng(11)
    label = np.ones((6, 8), np.float32)
    for i in range(40):
        rec, _ = store.add_image(f"picture {i}".encode(), f"n{int(rng.integers(0, 5))}.{'png' if i % 3 else 'jpg'}",
                                 width=8, height=6)
        conf = [None, 0.25, 0.5, 0.5, float(rng.random())][i % 5]
        if conf is not None:
            store.add_prediction(rec.id, "m", "disparity", label, confidence=conf)
        status = STATUSES[int(rng.integers(0, 4))]
        if status != "pending":
            store.set_status(rec.id, status, author="t")
        if i % 4 == 1:
            store.add_tags([rec.id], "glass", author="t")
        if i % 3 == 2:
            store.add_tags([rec.id], ["night", "glass"], author="t")
    return store


def reference(store: Store, status, sort: str, descending: bool, name=None, tag=None, min_confidence=None,
              max_confidence=None) -> list[int]:
    """The full order of a filter, computed in Python from every row."""
    st = status.split(",") if isinstance(status, str) else status or STATUSES
    col = {"confidence": "confidence", "name": "name", "date": "created_at", "id": "id"}[sort]
    tagged = {r[0] for r in store.db.execute("SELECT image_id FROM image_tags WHERE tag = ?", [tag])}
    rows = [r for r in store.db.query("SELECT * FROM images") if r["status"] in st
            and (name is None or fnmatch.fnmatchcase(r["name"], name)) and (tag is None or r["id"] in tagged)
            and (min_confidence is None or (r["confidence"] is not None and r["confidence"] >= min_confidence))
            and (max_confidence is None or (r["confidence"] is not None and r["confidence"] <= max_confidence))]
    scored = sorted([r for r in rows if r[col] is not None], key=lambda r: (r[col], r["id"]), reverse=descending)
    unscored = sorted([r for r in rows if r[col] is None], key=lambda r: r["id"], reverse=descending)
    return [r["id"] for r in scored + unscored]


@pytest.mark.parametrize("narrow", NARROW)
@pytest.mark.parametrize("status", [None, "pending", "accepted,corrected"])
@pytest.mark.parametrize("sort", SORTS)
def test_narrow_filters_page_forward_and_back_through_exactly_their_images(tagged, narrow, status, sort):
    for descending in (False, True):
        want = reference(tagged, status, sort, descending, **narrow)
        kw = {"status": status, "sort": sort, "descending": descending, **narrow}
        assert tagged.count_images(status, **narrow) == len(want)
        for limit in (1, 4):
            page, seen = tagged.list_images(limit=limit, **kw), []
            while True:
                assert page.total == len(want)
                seen += [r.id for r in page.items]
                if page.next_cursor is None:
                    break
                page = tagged.list_images(after=page.next_cursor, limit=limit, **kw)
            assert seen == want
            page, back = tagged.list_images(before=LAST_PAGE, limit=limit, **kw), []
            while True:
                back = [r.id for r in page.items] + back
                if page.prev_cursor is None:
                    break
                page = tagged.list_images(before=page.prev_cursor, limit=limit, **kw)
            assert back == want
            for offset in (0, 3, len(want) + 1):
                assert [r.id for r in tagged.list_images(offset=offset, limit=limit, **kw).items] == \
                    want[offset:offset + limit]
        for image_id in [r[0] for r in tagged.db.execute("SELECT id FROM images")][::3]:
            loc = tagged.locate(image_id, **kw)
            if image_id in want:
                i = want.index(image_id)
                assert loc == Location(i, len(want), want[i - 1] if i else None,
                                       want[i + 1] if i + 1 < len(want) else None)
            else:
                assert loc == Location(None, len(want), None, want[0] if want else None)
        assert list(tagged.filtered_ids(status=status, chunk=3, **narrow)) == sorted(want)


def test_filters_refuse_what_they_cannot_mean(tagged):
    with pytest.raises(InvalidValueError, match="confidence range 0.9..0.1 is empty"):
        tagged.list_images(min_confidence=0.9, max_confidence=0.1)
    with pytest.raises(InvalidValueError, match="lowest confidence must be a number"):
        tagged.list_images(min_confidence="high")
    with pytest.raises(InvalidValueError, match="tag 'two words'"):
        tagged.list_images(tag="two words")
    assert tagged.list_images(name="", tag="", min_confidence="").total == tagged.count_images()


def plans(store: Store, fn) -> list[tuple[str, str]]:
    seen: list[str] = []
    conn = store.db.conn
    conn.set_trace_callback(seen.append)
    try:
        fn()
    finally:
        conn.set_trace_callback(None)
    return [(sql, " | ".join(r[3] for r in conn.execute("EXPLAIN QUERY PLAN " + sql))) for sql in seen
            if sql.startswith("SELECT") and "FROM images" in sql and "count(" not in sql]


@pytest.mark.parametrize("narrow", NARROW)
@pytest.mark.parametrize("sort", SORTS)
def test_narrow_pages_still_walk_an_index_without_a_temporary_sort(tagged, narrow, sort):
    kw = {"status": "pending", "sort": sort, "limit": 3, **narrow}

    def browse():
        page = tagged.list_images(**kw)
        if page.next_cursor:
            tagged.list_images(after=page.next_cursor, **kw)
        tagged.list_images(before=LAST_PAGE, **kw)
    found = plans(tagged, browse)
    assert found
    for sql, plan in found:
        assert "USING" in plan, (sql, plan)
        # the one sort allowed: a name prefix or a confidence range read as an index range (its
        # matches, not the store), then ordered
        ranged = re.search(r"\((status=\? AND )?(name>\? AND name<\?|confidence[<>]\?)", plan)
        assert "TEMP B-TREE" not in plan or ranged, (sql, plan)


def test_tags_are_added_removed_and_counted(tmp_path, make_png):
    store = Store(tmp_path / "t.db")
    ids = [store.add_image(make_png(seed=i), f"{i}.png", width=8, height=6)[0].id for i in range(3)]
    assert store.add_tags(ids[:2], "indoor, glass", author="a") == 4
    assert store.add_tags(ids, ["glass"], author="a") == 1                  # existing pairs are kept once
    assert store.tags_of(ids[0]) == ["glass", "indoor"] and store.tags_of(ids[2]) == ["glass"]
    assert store.tag_counts() == [("glass", 3), ("indoor", 2)]
    assert store.remove_tags([ids[0]], "glass", author="a") == 1
    assert store.tag_counts() == [("glass", 2), ("indoor", 2)]
    assert [e.action for e in store.audit_log(entity="image", limit=2)] == ["image.tags.remove", "image.tags.add"]
    with pytest.raises(InvalidValueError, match="at least one tag"):
        store.add_tags(ids, " , ", author="a")
    with pytest.raises(InvalidValueError, match="no spaces or commas"):
        store.add_tags(ids, ["bad tag"], author="a")
    with store.write() as db:                                               # tags go with their image
        db.conn.execute("DELETE FROM images WHERE id = ?", [ids[1]])
    assert store.tag_counts() == [("glass", 1), ("indoor", 1)]


def histogram_by_scan(store: Store, statuses) -> tuple[list[int], int]:
    counts, unscored = [0] * CONFIDENCE_BINS, 0
    for r in store.db.query("SELECT status, confidence FROM images"):
        if r["status"] not in statuses:
            continue
        if r["confidence"] is None:
            unscored += 1
        else:
            counts[min(CONFIDENCE_BINS - 1, max(0, int(r["confidence"] * CONFIDENCE_BINS)))] += 1
    return counts, unscored


def test_the_confidence_histogram_kept_by_triggers_equals_a_scan(tagged, tmp_path, make_png, make_depth):
    for st in (None, "pending", "accepted,corrected"):
        h = tagged.confidence_histogram(st)
        assert (h.counts, h.unscored) == histogram_by_scan(tagged, st.split(",") if st else STATUSES)
        assert h.edges[0] == 0.0 and h.edges[-1] == 1.0 and len(h.edges) == CONFIDENCE_BINS + 1
    store = Store(tmp_path / "h.db")
    recs = [store.add_image(make_png(seed=i), f"{i}.png", width=8, height=6)[0] for i in range(4)]
    for rec, conf in zip(recs, (0.0, 1.0, 1.7, -0.2), strict=True):         # ends and outside [0, 1]
        store.add_prediction(rec.id, "m", "disparity", make_depth(), confidence=conf)
    store.set_status(recs[0].id, "accepted", author="t")
    with store.write() as db:
        db.conn.execute("UPDATE images SET confidence = 0.51 WHERE id = ?", [recs[1].id])
        db.conn.execute("DELETE FROM images WHERE id = ?", [recs[3].id])
    h = store.confidence_histogram()
    assert (h.counts, h.unscored) == histogram_by_scan(store, STATUSES)
    assert h.counts[0] == 1 and h.counts[10] == 1 and h.counts[-1] == 1
    assert store.confidence_histogram("accepted").counts[0] == 1


def test_migration_8_bins_the_confidences_an_older_database_has(tmp_path):
    path = tmp_path / "v7.db"
    conn = sqlite3.connect(path)
    migrate(conn, target=7)
    for i, (status, conf) in enumerate([("pending", 0.12), ("pending", None), ("accepted", 0.99), ("accepted", 0.1)]):
        conn.execute("INSERT INTO images (sha256, name, ext, nbytes, width, height, status, confidence, created_at, "
                     "updated_at) VALUES (?, 'x.png', '.png', 1, 1, 1, ?, ?, 't', 't')", (f"h{i}", status, conf))
    conn.commit()
    conn.close()
    h = Store(path).confidence_histogram()
    assert (h.counts[2], h.counts[19], h.unscored, sum(h.counts)) == (2, 1, 1, 3)


def test_a_batch_status_change_skips_unlabelled_images_and_reports_each(tmp_path, make_png, make_depth):
    store = Store(tmp_path / "b.db")
    ids = [store.add_image(make_png(seed=i), f"{i}.png", width=8, height=6)[0].id for i in range(4)]
    for i in ids[:3]:
        store.add_prediction(i, "m", "disparity", make_depth())
    store.set_status(ids[1], "accepted", author="a")
    dry = store.set_statuses([*ids, 99], "accepted", author="a", dry_run=True)
    assert dry.changed == [(ids[0], "0.png", "pending"), (ids[2], "2.png", "pending")]
    assert dry.unchanged == [ids[1]] and dry.skipped == [(ids[3], "3.png", "no label yet"), (99, "", "not in the store")]
    assert store.count_by_status()["accepted"] == 1                        # a dry run writes nothing
    done = store.set_statuses(ids, "accepted", author="a")
    assert done.summary() == "2 set to accepted, 1 already accepted, 1 skipped"
    assert [store.get_image(i).status for i in ids] == ["accepted", "accepted", "accepted", "pending"]
    entry = store.audit_log(entity="image", entity_id=ids[2], limit=1)[0]
    assert (entry.action, entry.detail["from"], entry.detail["bulk"]) == ("image.status", "pending", True)
