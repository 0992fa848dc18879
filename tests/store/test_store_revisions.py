"""Revision chain, undo/redo and branches, history, masks, optimistic concurrency."""
from __future__ import annotations

import dataclasses
import re
import threading

import numpy as np
import pytest

from pipeline.store import ANY_HEAD, HistoryError, InvalidValueError, Revision, StaleRevisionError, Store
from pipeline.store.blobs import encode_array, sha256_bytes

TS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")


def sha(a) -> str:
    return sha256_bytes(encode_array(a))


def test_pseudo_label_then_corrections_form_a_chain(store, image, make_depth):
    d1, d2 = make_depth(1.0), make_depth(2.0)
    pred, created = store.add_prediction(image.id, "teacher-l", "disparity", d1, confidence=0.25)
    assert created
    r1 = store.head(image.id)
    assert r1 == Revision(id=r1.id, image_id=image.id, parent_id=None, number=1, tool="pseudo_label",
                          kind="disparity", depth_sha256=sha(d1), masks={}, model_id="teacher-l",
                          prediction_id=pred.id, author="model:teacher-l", note=None, created_at=r1.created_at,
                          source="model:teacher-l")
    assert TS.match(r1.created_at)
    img = store.get_image(image.id)
    assert (img.status, img.confidence, img.head_revision_id) == ("pending", 0.25, r1.id)

    ignore = np.zeros((6, 8), bool)
    ignore[1:3, 2:5] = True
    r2 = store.save_revision(image.id, d2, expected_head=r1.id, tool="plane", author="bob",
                             masks={"ignore": ignore}, note="table")
    assert r2 == Revision(id=r2.id, image_id=image.id, parent_id=r1.id, number=2, tool="plane",
                          kind="disparity", depth_sha256=sha(d2), masks={"ignore": sha(ignore)},
                          model_id="teacher-l", prediction_id=None, author="bob", note="table",
                          created_at=r2.created_at, source="human",
                          human_sha256=sha(np.ones((6, 8), bool)))     # every value changed: all set by bob
    assert store.get_image(image.id).status == "corrected"
    label = store.load_label(r2.id)
    assert label.depth.dtype == np.float32 and np.array_equal(label.depth, d2)
    assert label.masks.keys() == {"ignore"} and np.array_equal(label.masks["ignore"], ignore)
    # the first revision is still there, unchanged
    assert np.array_equal(store.load_label(r1.id).depth, d1)


def test_mask_only_revision_keeps_parent_depth_and_masks_can_be_dropped(store, image, make_depth):
    store.add_prediction(image.id, "m", "disparity", make_depth())
    h = store.head(image.id)
    sky = np.zeros((6, 8), np.uint8)
    sky[0] = 1
    r2 = store.save_revision(image.id, expected_head=h.id, tool="sky", author="al", masks={"sky": sky})
    assert r2.depth_sha256 == h.depth_sha256 and r2.masks == {"sky": sha(sky)}
    ign = np.ones((6, 8), bool)
    r3 = store.save_revision(image.id, expected_head=r2.id, tool="ignore_mask", author="al", masks={"ignore": ign})
    assert r3.masks == {"sky": sha(sky), "ignore": sha(ign)}
    r4 = store.save_revision(image.id, expected_head=r3.id, tool="ignore_mask", author="al", masks={"ignore": None},
                             status=None)
    assert r4.masks == {"sky": sha(sky)}
    assert np.array_equal(store.load_label(r4).masks["sky"], sky)


def test_undo_redo_and_a_new_branch_after_undo(store, image, make_depth):
    store.add_prediction(image.id, "m", "disparity", make_depth(1))
    r1 = store.head(image.id)
    r2 = store.save_revision(image.id, make_depth(2), expected_head=r1.id, tool="smooth", author="a")
    r3 = store.save_revision(image.id, make_depth(3), expected_head=r2.id, tool="smooth", author="a")
    assert store.undo(image.id, author="a", expected_head=r3.id) == r2
    assert store.undo(image.id, author="a") == r1
    with pytest.raises(HistoryError, match="nothing to undo"):
        store.undo(image.id, author="a")
    assert store.redo(image.id, author="a") == r2
    assert store.redo(image.id, author="a") == r3
    with pytest.raises(HistoryError, match="nothing to redo"):
        store.redo(image.id, author="a")
    # undo to r1, then save: a new branch from r1; redo after that has nothing to go to
    store.undo(image.id, author="a")
    store.undo(image.id, author="a")
    r4 = store.save_revision(image.id, make_depth(4), expected_head=r1.id, tool="copy", author="b")
    assert (r4.parent_id, r4.number) == (r1.id, 4)
    h = store.history(image.id)
    assert [(r.id, r.parent_id, r.number) for r in h.revisions] == [
        (r1.id, None, 1), (r2.id, r1.id, 2), (r3.id, r2.id, 3), (r4.id, r1.id, 4)]
    assert (h.head_id, h.can_undo, h.can_redo) == (r4.id, True, False)
    # redo from r1 goes to the newest branch (r4), not the older r2
    store.undo(image.id, author="a")
    assert store.history(image.id).can_redo
    assert store.redo(image.id, author="a") == r4
    # every move is in the audit log, newest first
    actions = [e.action for e in store.audit_log(entity="image", entity_id=image.id)][:3]
    assert actions == ["head.redo", "head.undo", "revision.save"]


def test_the_status_follows_the_head(store, image, make_depth):
    """Undoing the only correction gives back a pending pseudo-label; redo / restore follow the head too."""
    store.add_prediction(image.id, "m", "disparity", make_depth())
    r1 = store.head(image.id)
    r2 = store.save_revision(image.id, make_depth(2), expected_head=r1.id, tool="plane", author="a")
    store.set_status(image.id, "accepted", author="a", expected_head=r2.id)
    store.undo(image.id, author="a")
    img = store.get_image(image.id)
    assert (img.status, img.head_revision_id) == ("pending", r1.id)
    store.redo(image.id, author="a")
    assert store.get_image(image.id).status == "corrected"          # the decision was about another label
    with pytest.raises(HistoryError, match="nothing to redo .*no revision was undone"):
        store.redo(image.id, author="a")
    store.restore_revision(image.id, r1.id, expected_head=r2.id, author="a")
    assert store.get_image(image.id).status == "pending"            # the model's values again
    store.undo(image.id, author="a")
    store.undo(image.id, author="a")
    with pytest.raises(HistoryError, match="nothing to undo for image .*: it is at its first revision"):
        store.undo(image.id, author="a")
    assert store.get_image(image.id).status == "pending"
    r4 = store.restore_revision(image.id, r2.id, expected_head=r1.id, author="a", status=None)
    assert (r4.source, store.get_image(image.id).status) == ("human", "pending")     # None keeps the status


def test_check_head_reads_without_writing(store, image, make_depth):
    store.add_prediction(image.id, "m", "disparity", make_depth())
    r1 = store.head(image.id)
    before = store.db.execute("SELECT count(*) FROM audit").fetchone()[0]
    store.check_head(image.id, r1.id)
    store.check_head(image.id, ANY_HEAD)
    with pytest.raises(StaleRevisionError, match=r"\(no label\): it is now revision 1 by model:m"):
        store.check_head(image.id, None)
    assert store.db.execute("SELECT count(*) FROM audit").fetchone()[0] == before
    assert not store.db.conn.in_transaction


def test_a_revision_keeps_its_meta_and_a_restore_copies_it(store, image, make_depth):
    store.add_prediction(image.id, "m", "disparity", make_depth())
    r1 = store.head(image.id)
    meta = {"calibration": {"scale": 0.5, "references": [{"type": "distance", "given_m": 2.0}]}}
    r2 = store.save_revision(image.id, make_depth(3), expected_head=r1.id, tool="calibrate", author="a",
                             kind="metric_depth", meta=meta)
    assert (r2.meta, store.get_revision(r2.id).meta, r1.meta) == (meta, meta, {})
    r3 = store.restore_revision(image.id, r2.id, expected_head=r2.id, author="a")
    assert (r3.meta, r3.kind) == (meta, "metric_depth")


def test_stale_save_is_refused_with_who_and_when(store, image, make_depth):
    store.add_prediction(image.id, "m", "disparity", make_depth())
    r1 = store.head(image.id)
    r2 = store.save_revision(image.id, make_depth(2), expected_head=r1.id, tool="plane", author="bob")
    with pytest.raises(StaleRevisionError) as err:
        store.save_revision(image.id, make_depth(3), expected_head=r1.id, tool="smooth", author="carol")
    msg = str(err.value)
    assert f"image {image.id} (cat.png) changed since you opened it (revision 1)" in msg   # per-image numbers,
    assert f"it is now revision 2 by bob at {r2.created_at}; reload" in msg             # as the studio shows
    assert err.value.current == r2 and err.value.expected == r1.id
    assert [r.id for r in store.history(image.id).revisions] == [r1.id, r2.id]   # nothing saved
    with pytest.raises(StaleRevisionError):
        store.undo(image.id, author="carol", expected_head=r1.id)
    with pytest.raises(StaleRevisionError):
        store.set_status(image.id, "accepted", author="carol", expected_head=r1.id)
    assert store.set_status(image.id, "accepted", author="bob", expected_head=r2.id).status == "accepted"


def test_first_save_expects_no_label(store, image, make_depth):
    r = store.save_revision(image.id, make_depth(), expected_head=None, tool="import", author="a", kind="metric_depth")
    assert (r.number, r.kind, r.model_id) == (1, "metric_depth", None)
    with pytest.raises(StaleRevisionError, match=r"\(no label\): it is now revision 1"):
        store.save_revision(image.id, make_depth(), expected_head=None, tool="import", author="b")


def test_two_threads_editing_the_same_label_one_is_refused(tmp_path, make_png, make_depth):
    store = Store(tmp_path / "s.db")
    img, _ = store.add_image(make_png(), "x.png", width=8, height=6)
    store.add_prediction(img.id, "m", "disparity", make_depth())
    opened = store.head(img.id).id
    barrier = threading.Barrier(2)
    results: dict[str, object] = {}

    def edit(who: str, value: float) -> None:
        barrier.wait()
        try:
            results[who] = store.save_revision(img.id, make_depth(value), expected_head=opened,
                                               tool="smooth", author=who)
        except StaleRevisionError as e:
            results[who] = e

    threads = [threading.Thread(target=edit, args=(w, v)) for w, v in (("ann", 5.0), ("ben", 6.0))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    saved = [v for v in results.values() if isinstance(v, Revision)]
    refused = [v for v in results.values() if isinstance(v, StaleRevisionError)]
    assert len(saved) == 1 and len(refused) == 1
    assert refused[0].current == saved[0]
    assert f"by {saved[0].author}" in str(refused[0])
    h = store.history(img.id)
    assert [r.number for r in h.revisions] == [1, 2] and h.head_id == saved[0].id


def test_bad_arrays_are_refused_before_anything_is_written(store, image, make_depth):
    store.add_prediction(image.id, "m", "disparity", make_depth())
    head = store.head(image.id).id
    with pytest.raises(InvalidValueError, match="float32"):
        store.save_revision(image.id, make_depth().astype(np.float64), expected_head=head, tool="t", author="a")
    with pytest.raises(InvalidValueError, match=r"shape \(5, 8\), the image is \(6, 8\)"):
        store.save_revision(image.id, np.zeros((5, 8), np.float32), expected_head=head, tool="t", author="a")
    with pytest.raises(InvalidValueError, match="unknown mask 'glass'"):
        store.save_revision(image.id, expected_head=head, tool="t", author="a", masks={"glass": np.ones((6, 8), bool)})
    with pytest.raises(InvalidValueError, match="unknown status"):
        store.save_revision(image.id, expected_head=head, tool="t", author="a", status="done")
    assert len(store.history(image.id).revisions) == 1


def test_any_head_skips_the_check(store, image, make_depth):
    store.add_prediction(image.id, "m", "disparity", make_depth())
    r = store.save_revision(image.id, make_depth(9), expected_head=ANY_HEAD, tool="import", author="a")
    assert store.head(image.id) == r
    assert dataclasses.asdict(r)["number"] == 2


def test_restore_appends_a_copy_of_an_older_revision(store, image, make_depth):
    store.add_prediction(image.id, "m", "disparity", make_depth(1))
    r1 = store.head(image.id)
    sky = np.ones((6, 8), bool)
    r2 = store.save_revision(image.id, make_depth(2), expected_head=r1.id, tool="sky", author="a", masks={"sky": sky})
    r3 = store.restore_revision(image.id, r1.id, expected_head=r2.id, author="b")
    assert r3 == Revision(r3.id, image.id, r2.id, 3, "restore", "disparity", r1.depth_sha256, {}, "m", None, "b",
                          "restored revision 1", r3.created_at, source="model:m")   # the values are m's again
    assert np.array_equal(store.load_label(r3).depth, make_depth(1))
    assert store.human_pixels(r3) is None
    r4 = store.restore_revision(image.id, r2.id, expected_head=r3.id, author="b")
    assert (r4.depth_sha256, r4.masks, r4.source, r4.human_sha256) == (r2.depth_sha256, r2.masks, "human",
                                                                      r2.human_sha256)
    with pytest.raises(StaleRevisionError):
        store.restore_revision(image.id, r1.id, expected_head=r3.id, author="c")
    other, _ = store.add_image(b"other", "o.png", width=8, height=6)
    with pytest.raises(InvalidValueError, match=f"belongs to image {image.id}"):
        store.restore_revision(other.id, r1.id, expected_head=None, author="c")


def test_expected_head_accepts_a_revision_or_an_id_string(store, image, make_depth):
    store.add_prediction(image.id, "m", "disparity", make_depth())
    r1 = store.head(image.id)
    r2 = store.save_revision(image.id, expected_head=r1, tool="sky", author="a", masks={"sky": np.ones((6, 8), bool)})
    r3 = store.save_revision(image.id, expected_head=str(r2.id), tool="sky", author="a", masks={"sky": None})
    assert [r.id for r in store.history(image.id).revisions] == [r1.id, r2.id, r3.id]
    with pytest.raises(InvalidValueError, match="expected_head must be a revision id"):
        store.save_revision(image.id, expected_head="latest", tool="t", author="a")
