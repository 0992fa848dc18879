"""The held-out split has one owner (pipeline/store/holdout.py) and is one condition of the store's
queries: the training pool and the teacher-vs-student comparison split the store exactly, with no
query per image (issue 10, point 5)."""
from __future__ import annotations

import hashlib
import random
from fractions import Fraction

import numpy as np
import pytest

from pipeline.evaluation import holdout as hc
from pipeline.store import Store
from pipeline.store.holdout import holdout_bound, holdout_where, in_holdout
from pipeline.train.store_source import store_items

N = 24


def exact_rule(sha: str, fraction: float) -> bool:
    """The definition in integers: the first 64 bits of the hash below fraction * 2^64."""
    return Fraction(int(sha[:16], 16)) < Fraction(fraction) * 2 ** 64


def test_the_text_comparison_is_the_integer_rule_at_its_boundary():
    rng = random.Random(0)
    shas = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(2000)]
    for fraction in (0.0, 1e-9, 0.1, 0.25, 0.5, 0.75, 0.999999, 1.0, 1.5):
        assert [in_holdout(s, fraction) for s in shas] == [exact_rule(s, fraction) for s in shas]
    for fraction in (0.1, 0.3, 0.5, 0.9):                  # hashes right at the bound: below in, at it out
        bound = int(holdout_bound(fraction), 16)
        tail = "".join(rng.choice("0123456789abcdef") for _ in range(48))
        at, below = f"{bound:016x}{tail}", f"{bound - 1:016x}{tail}"
        assert (in_holdout(below, fraction), in_holdout(at, fraction)) == (True, False)
        assert (exact_rule(below, fraction), exact_rule(at, fraction)) == (True, False)
    assert [s for s in shas if in_holdout(s, 0.2)] == [s for s in shas if in_holdout(s, 0.2) and in_holdout(s, 0.4)]
    assert holdout_where(1.0, held=True) == ("1", []) and holdout_where(1.0, held=False) == ("0", [])
    assert not any(in_holdout(s, 0.0) for s in shas) and all(in_holdout(s, 1.0) for s in shas)


@pytest.fixture
def labelled(tmp_path, make_png, make_depth):
    """N accepted pseudo-labels; every third image also has ground truth (comparison evidence)."""
    store = Store(tmp_path / "studio.db")
    ids = []
    for i in range(N):
        rec, _ = store.add_image(make_png(seed=i), f"{i}.png", width=8, height=6)
        store.add_prediction(rec.id, "teacher", "disparity", make_depth(1.0 + i))
        if i % 3 == 0:
            store.add_ground_truth(rec.id, make_depth(2.0 + i), kind="disparity", source="test", author="t")
        ids.append(rec.id)
    store.set_statuses(ids, "accepted", author="t")
    return store, ids


@pytest.mark.parametrize("fraction", [0.25, 0.5])
def test_training_pool_and_comparison_split_the_store_exactly(labelled, fraction):
    store, ids = labelled
    held = {i for i in ids if in_holdout(store.get_image(i).sha256, fraction)}
    assert 0 < len(held) < N                                       # the fixture exercises both sides
    train = {int(item.image_id) for item in store_items(store.path, fraction)}
    items, skipped = hc.evidence_items(store, fraction)
    compared = {it.image_id for it in items} | {int(s["name"][1:]) for s in skipped}
    assert train.isdisjoint(compared) and train | compared == set(ids)   # disjoint, complementary
    assert compared == held == set(store.held_out_ids(fraction))
    assert {it.image_id for it in items} == {i for i in held if (i - ids[0]) % 3 == 0}
    chunked = {it.image_id for it in store.iter_training_items(chunk=3, holdout=fraction)}
    assert chunked == train                                       # a chunk is never cut short by the split
    gt = {it.image_id for it in store.ground_truth_training_items(holdout=fraction)}
    assert gt == {i for i in ids if (i - ids[0]) % 3 == 0} - held
    assert {int(item.image_id) for item in store_items(store.path, 0.0)} == set(ids) and store.held_out_ids(0.0) == []


def test_the_split_is_one_condition_of_the_query_not_a_query_per_image(labelled, monkeypatch):
    store, ids = labelled
    seen: list[str] = []
    store.db.conn.set_trace_callback(seen.append)
    store.training_items(holdout=0.5)
    store.held_out_ids(0.5)
    store.ground_truth_training_items(holdout=0.5)
    store.db.conn.set_trace_callback(None)
    selects = [s for s in seen if s.lstrip().upper().startswith("SELECT")]
    assert len(selects) == 3 + 1 + 2       # (labels, masks, pairs) + held-out ids + (ground truth, pairs), at any size
    bound = holdout_bound(0.5)                     # the trace shows the SQL with its parameters bound
    assert sum(f"sha256 >= '{bound}'" in s for s in selects) == 3 and sum(f"sha256 < '{bound}'" in s for s in selects) == 1
    # the callers never decide the split image by image: training reads no image record at all, and
    # the comparison opens only the images it scores (for their pictures), not every image it considers
    opened = []
    get_image = Store.get_image
    monkeypatch.setattr(Store, "get_image", lambda self, i: opened.append(i) or get_image(self, i))
    monkeypatch.setattr(Store, "image_hashes", lambda *a, **k: pytest.fail("a per-image hold-out decision"))
    assert len(store_items(store.path, 0.5)) + len(store.held_out_ids(0.5)) == N and opened == []
    items, skipped = hc.evidence_items(store, 0.5)
    assert len(items) + len(skipped) == len(store.held_out_ids(0.5)) and len(skipped) > 0
    assert sorted(opened) == sorted(it.image_id for it in items)


def test_training_items_by_chunk_keep_their_size_with_a_split(labelled):
    store, ids = labelled
    whole = [it.image_id for it in store.training_items(holdout=0.5)]
    first = store.training_items(limit=4, holdout=0.5)
    assert [it.image_id for it in first] == whole[:4]
    nxt = store.training_items(after_id=first[-1].image_id, limit=4, holdout=0.5)
    assert [it.image_id for it in nxt] == whole[4:8]
    assert all(np.isfinite(it.depth()).all() for it in first)
