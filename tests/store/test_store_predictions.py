"""Predictions (idempotent, the pseudo-label job's unit of work), point pairs, training items."""
from __future__ import annotations

import pickle

import numpy as np
import pytest

from pipeline.labels.corrections import pair_form
from pipeline.store import InvalidValueError, PointPair, PredictionRecord


def test_add_prediction_is_idempotent_and_only_the_first_makes_the_label(store, image, make_depth):
    assert not store.pseudo_label_done(image.id, "teacher")
    assert store.images_without_prediction("teacher") == [image.id]
    p, created = store.add_prediction(image.id, "teacher", "disparity", make_depth(1), confidence=0.8, job_id=None)
    assert created and p == PredictionRecord(p.id, image.id, "teacher", "disparity", p.array_sha256, 0.8, None, p.created_at)
    again, created = store.add_prediction(image.id, "teacher", "disparity", make_depth(5), confidence=0.1)
    assert (again, created) == (p, False)
    assert store.pseudo_label_done(image.id, "teacher")
    assert store.images_without_prediction("teacher") == []
    # a second model's prediction is kept but does not replace the label or confidence
    q, created = store.add_prediction(image.id, "other", "metric_depth", make_depth(7), confidence=0.2)
    assert created
    assert [x.model_id for x in store.predictions(image.id)] == ["teacher", "other"]
    assert np.array_equal(store.prediction_array(q), make_depth(7))
    img = store.get_image(image.id)
    assert (img.confidence, len(store.history(image.id).revisions)) == (0.8, 1)
    assert store.head(image.id).model_id == "teacher"


def test_make_label_false_only_records(store, image, make_depth):
    store.add_prediction(image.id, "m", "disparity", make_depth(), make_label=False, confidence=0.3)
    img = store.get_image(image.id)
    assert (img.head_revision_id, img.confidence) == (None, None)


def test_point_pairs_are_validated_flagged_and_soft_deleted(store, image, make_depth):
    store.add_prediction(image.id, "m", "disparity", make_depth())
    head = store.head(image.id).id
    p = store.add_point_pair(image.id, [1, 2], (5, 7), 2, author="ann")
    assert p == PointPair(p.id, image.id, (1, 2), (5, 7), 2, "ann", False, head, p.created_at)
    assert pair_form(p) == ((1, 2), (5, 7), 2)                  # what the flag rule reads: the same [h, w]
    q = store.add_point_pair(image.id, [0, 0], [3, 3], 1, author="ann")
    store.set_point_pair_flags({q.id: True})
    assert [x.flagged for x in store.point_pairs(image.id)] == [False, True]
    store.delete_point_pair(p.id, author="ann")
    assert [x.id for x in store.point_pairs(image.id)] == [q.id]
    assert [x.id for x in store.point_pairs(image.id, include_deleted=True)] == [p.id, q.id]
    with pytest.raises(InvalidValueError, match=r"point 2 \[h=6, w=0\] is outside the 8x6 image"):
        store.add_point_pair(image.id, [0, 0], [6, 0], 1, author="ann")
    with pytest.raises(InvalidValueError, match="closer must be 1 or 2"):
        store.add_point_pair(image.id, [0, 0], [1, 1], 3, author="ann")
    with pytest.raises(InvalidValueError, match="must differ"):
        store.add_point_pair(image.id, [1, 1], [1, 1], 1, author="ann")


def test_training_items_are_the_heads_of_curated_images(store, make_png, make_depth):
    ids = []
    for seed in range(3):
        rec, _ = store.add_image(make_png(seed=seed), f"{seed}.png", width=8, height=6)
        store.add_prediction(rec.id, "m", "disparity", make_depth(seed))
        ids.append(rec.id)
    ign = np.zeros((6, 8), bool)
    ign[0, 0] = True
    r = store.save_revision(ids[0], make_depth(10), expected_head=store.head(ids[0]).id, tool="plane",
                            author="a", masks={"ignore": ign})
    store.set_status(ids[1], "accepted", author="a")
    store.set_status(ids[2], "rejected", author="a")
    pair = store.add_point_pair(ids[0], [0, 1], [2, 3], 1, author="a")
    items = store.training_items()
    assert [(i.image_id, i.status, i.kind, i.model_id) for i in items] == [
        (ids[0], "corrected", "disparity", "m"), (ids[1], "accepted", "disparity", "m")]
    first = items[0]
    assert (first.revision_id, first.point_pairs, first.image_path) == (r.id, [pair], store.get_image(ids[0]).path)
    assert np.array_equal(first.depth(), make_depth(10)) and first.depth().dtype == np.float32
    assert np.array_equal(first.masks()["ignore"], ign)
    assert items[1].masks() == {} and items[1].point_pairs == []
    clone = pickle.loads(pickle.dumps(first))            # DataLoader workers get copies
    assert np.array_equal(clone.depth(), make_depth(10))
    assert [i.image_id for i in store.training_items("rejected")] == [ids[2]]


def test_point_pair_flags_follow_the_head(store, image, make_depth):
    """make_depth grows with the pixel index: a later pixel has larger disparity (closer)."""
    early, late = [0, 1], [4, 6]                         # index 1 and 38
    right = store.add_point_pair(image.id, early, late, 2, author="a", flagged=True)
    assert right.flagged                                  # no label yet: kept as given
    store.add_prediction(image.id, "m", "disparity", make_depth())
    wrong = store.add_point_pair(image.id, early, late, 1, author="a")
    assert [p.flagged for p in store.point_pairs(image.id)] == [False, True]
    h = store.head(image.id)
    store.save_revision(image.id, -make_depth(), expected_head=h.id, tool="copy", author="a")   # order reversed
    assert [p.flagged for p in store.point_pairs(image.id)] == [True, False]
    store.undo(image.id, author="a")
    assert [p.flagged for p in store.point_pairs(image.id)] == [False, True]
    store.redo(image.id, author="a")
    assert [p.flagged for p in store.point_pairs(image.id)] == [True, False]
    store.restore_revision(image.id, h.id, expected_head=store.head(image.id).id, author="a")
    assert [(p.id, p.flagged) for p in store.point_pairs(image.id)] == [(right.id, False), (wrong.id, True)]
    metric = store.add_image(b"m", "m.png", width=8, height=6)[0]
    store.save_revision(metric.id, make_depth(), expected_head=None, tool="import", author="a", kind="metric_depth")
    near = store.add_point_pair(metric.id, early, late, 1, author="a")   # metric: smaller depth = closer
    assert not near.flagged
