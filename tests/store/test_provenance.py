"""Label provenance: every revision says where its values came from (model, person, ground truth),
per pixel for a person's region edits; older stores are migrated (committed v4 fixture)."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from pipeline.store import ANY_HEAD, InvalidValueError, Store
from pipeline.store.schema import SCHEMA_VERSION

DATA = Path(__file__).parent / "data"
REGION = np.zeros((6, 8), bool)
REGION[1:4, 2:6] = True


@pytest.fixture
def v4(tmp_path) -> Store:
    """A copy of the committed schema-4 store (tests/store/data/make_v4_store.py), migrated on open."""
    shutil.copy(DATA / "v4.db", tmp_path / "v4.db")
    shutil.copytree(DATA / "v4-files", tmp_path / "v4-files")
    return Store(tmp_path / "v4.db")


def by_name(store: Store, name: str) -> int:
    return next(r.id for r in store.list_images(sort="id", limit=100).items if r.name == name)


def test_migration_records_model_or_human_by_author(v4):
    assert v4.schema_version == SCHEMA_VERSION
    sources = {(r["id"], r["author"]): r["source"] for r in v4.db.query("SELECT id, author, source FROM revisions")}
    assert {s for (_, a), s in sources.items() if a == "model:teacher-a"} == {"model:teacher-a"}
    assert {s for (_, a), s in sources.items() if a != "model:teacher-a"} == {"human"}
    assert v4.verify() == []


@pytest.mark.parametrize("name, human", [
    ("pseudo.png", None),                          # a model's pseudo-label: no human pixel
    ("plane.png", REGION),                         # the plane set exactly the painted region
    ("ignored.png", np.zeros((6, 8), bool)),       # an ignore mask changes no value
    ("typed.png", np.ones((6, 8), bool)),          # a label typed in whole by a person
    ("restored.png", np.zeros((6, 8), bool)),      # back to the model's revision 1
    ("copied.png", np.zeros((6, 8), bool)),        # values copied from another model
])
def test_migrated_human_pixels_are_derived_from_the_chain(v4, name, human):
    head = v4.head(by_name(v4, name))
    got = v4.human_pixels(head)
    if human is None:
        assert got is None and head.source == "model:teacher-a"
    else:
        assert head.source == "human" and head.human_sha256 is None          # derived on read
        np.testing.assert_array_equal(got, human)


def test_migrated_store_evidence_is_only_what_people_did(v4):
    ids = {n: by_name(v4, n) for n in ("pseudo.png", "plane.png", "ignored.png", "pairs.png", "typed.png",
                                       "restored.png", "copied.png")}
    found = {n: not v4.evidence(i).empty for n, i in ids.items()}
    assert found == {"pseudo.png": False, "plane.png": True, "ignored.png": False, "pairs.png": True,
                     "typed.png": True, "restored.png": False, "copied.png": False}
    assert set(v4.evidence_image_ids()) >= {ids["plane.png"], ids["pairs.png"], ids["typed.png"]}
    ev = v4.evidence(ids["pairs.png"])
    assert ev.human is None and ev.ground_truth is None and [p.author for p in ev.pairs] == ["carol"]


def test_a_new_edit_on_a_migrated_label_records_its_mask(v4):
    image_id = by_name(v4, "plane.png")
    head = v4.head(image_id)
    rev = v4.save_revision(image_id, None, expected_head=head.id, tool="ignore_mask", author="eve",
                           masks={"ignore": ~REGION})
    assert rev.human_sha256 is not None
    np.testing.assert_array_equal(v4.human_pixels(rev), REGION)              # carried over, now stored


# ----------------------------------------------------------------------------- new revisions

def _labelled(store, image, make_depth):
    store.add_prediction(image.id, "teacher", "disparity", make_depth(1.0))
    return store.head(image.id)


def test_per_tool_rules_for_a_persons_edits(store, image, make_depth):
    r1 = _labelled(store, image, make_depth)
    planed = make_depth(1.0)
    planed[REGION] = 9.0
    r2 = store.save_revision(image.id, planed, expected_head=r1.id, tool="plane", author="a")
    np.testing.assert_array_equal(store.human_pixels(r2), REGION)
    smoothed = planed.copy()
    smoothed[0, :] += 1.0                                                    # a blend keeps the origin
    r3 = store.save_revision(image.id, smoothed, expected_head=r2.id, tool="smooth", author="a")
    np.testing.assert_array_equal(store.human_pixels(r3), REGION)
    copied = smoothed.copy()
    copied[1:2, :] = 4.0                                                     # another model's values
    r4 = store.save_revision(image.id, copied, expected_head=r3.id, tool="copy", author="a")
    expect = REGION.copy()
    expect[1, :] = False
    np.testing.assert_array_equal(store.human_pixels(r4), expect)
    told = np.zeros((6, 8), bool)
    told[5, 7] = True
    r5 = store.save_revision(image.id, copied, expected_head=r4.id, tool="import", author="a", human=told)
    np.testing.assert_array_equal(store.human_pixels(r5), told)              # what the caller says wins
    r6 = store.save_revision(image.id, make_depth(2.0), expected_head=r5.id, tool="import", author="x",
                             source="model:other")
    assert (r6.source, store.human_pixels(r6)) == ("model:other", None)
    with pytest.raises(InvalidValueError, match="label source"):
        store.save_revision(image.id, None, expected_head=r6.id, tool="t", author="a", source="robot")


def test_ground_truth_sits_beside_the_labels(store, image, make_depth):
    r1 = _labelled(store, image, make_depth)
    depth = make_depth(2.0)
    depth[0, 0] = np.nan
    gt, created = store.add_ground_truth(image.id, depth, kind="metric_depth", source="lidar", author="importer")
    assert created and (gt.source, gt.kind, gt.parent_id, gt.tool) == ("ground_truth:lidar", "metric_depth",
                                                                       None, "ground_truth")
    assert store.head(image.id) == r1 and store.get_image(image.id).status == "pending"   # head untouched
    valid = store.valid_pixels(gt)
    assert valid.sum() == 47 and not valid[0, 0]
    again, created = store.add_ground_truth(image.id, depth, kind="metric_depth", source="lidar", author="x")
    assert (again.id, created) == (gt.id, False)
    assert [r.number for r in store.history(image.id).revisions] == [1, 2]
    assert store.ground_truth(image.id) == gt and store.evidence(image.id).ground_truth == gt
    store.add_prediction(image.id, "teacher2", "disparity", make_depth(3.0))
    assert store.head(image.id) == r1                                        # still the first pseudo-label
    r2 = store.save_revision(image.id, None, expected_head=r1.id, tool="ignore_mask", author="a",
                             masks={"ignore": REGION})
    assert r2.parent_id == r1.id                                              # the chain skips the GT root
    back = store.restore_revision(image.id, gt.id, expected_head=r2.id, author="a")
    assert (back.source, back.valid_sha256, back.kind) == ("ground_truth:lidar", gt.valid_sha256, "metric_depth")


@pytest.mark.parametrize("kw, words", [
    (dict(kind="depth"), "kind must be one of"), (dict(source="two words"), "ground-truth source"),
])
def test_ground_truth_refuses_bad_values(store, image, make_depth, kw, words):
    args = dict(kind="disparity", source="stereo", author="a") | kw
    with pytest.raises(InvalidValueError, match=words):
        store.add_ground_truth(image.id, make_depth(), **args)
    with pytest.raises(InvalidValueError, match="no valid pixel"):
        store.add_ground_truth(image.id, np.zeros((6, 8), np.float32), kind="disparity", source="s", author="a")


def test_a_model_label_is_not_evidence_and_an_image_without_label_has_none(store, image, make_depth):
    assert store.evidence(image.id).empty
    r1 = _labelled(store, image, make_depth)
    store.set_status(image.id, "accepted", author="a", expected_head=ANY_HEAD)
    assert store.evidence(image.id).empty and r1.source == "model:teacher"
    assert image.id not in store.evidence_image_ids()
