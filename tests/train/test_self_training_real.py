"""End to end on real ground truth this project did not make: teacher -> pseudo-labels in the store ->
student with the full recipe -> scored against the Middlebury motorcycle and Aloe with the fitted-scale
rule. Tiny and short (it checks the path, not the accuracy: benchmarks/bench_self_training.py and
benchmarks/README.md report what comes out). The Aloe pair comes from Debian's opencv-doc package
(apt-get download + dpkg -x into a cache folder); where apt is unavailable the test is skipped."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pytest
from train_helpers import one_thread  # noqa: F401

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]


@pytest.fixture(scope="module")
def bench():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import bench_self_training
    import real_data
    try:
        real_data.opencv_samples()
    except real_data.Unavailable as e:
        pytest.skip(f"the Aloe pair cannot be fetched here: {e}")
    return bench_self_training


def test_teacher_pseudo_labels_student_scored_on_real_ground_truth(bench, tmp_path):
    from pipeline.evaluation import holdout as hc
    from pipeline.evaluation import protocol as ev
    from pipeline.predictor import Predictor
    from pipeline.store import Store
    p = dict(bench.PRESETS["tiny"], scenes=12, teacher_steps=60, student_steps=40)
    args = argparse.Namespace(device="cpu", encoder_init=None, dinov2=None)
    data = bench.prepare(tmp_path, bench.real_data.DEFAULT_CACHE, p, require_aloe=True)
    teacher = bench.train_teacher(data, tmp_path, p, args)
    info = bench.pseudo_label(tmp_path / "store.db", data, teacher, p, args)
    assert info == {"photos": data["n_photos"], "pseudo_labelled": data["n_photos"],
                    "ground_truth": {"depth": 1, "disparity": 1}}
    store = Store(tmp_path / "store.db")
    items, skipped = hc.evidence_items(store, 1.0)
    assert sorted(i.name.split(" (#")[0] for i in items) == ["aloe.png", "motorcycle.png"]
    assert {i.protocol.gt_kind for i in items} == {"depth", "disparity"}          # metres / disparity space
    assert len(skipped) == data["n_photos"] and all("model:teacher" in s["reason"] for s in skipped)
    student = bench.train_student("+ feature alignment", 0, tmp_path / "store.db", data, teacher, tmp_path, p, args)
    from pipeline.weights.loading import load_model
    meta = load_model(student).meta
    assert meta["feature_target"] == f"dinov2: {teacher}" and meta["data"]["count"] == 12 + data["n_photos"]

    records = {name: bench.score(ckpt, items, p, args) for name, ckpt in (("teacher", teacher), ("student", student))}
    predictor = Predictor.from_checkpoint(student, device="cpu", input_size=p["input_size"])
    for item, rec in zip(items, records["student"], strict=True):
        assert rec["alignment_failed"] == (rec["scale"] <= 0)
        assert set(rec["baselines"]) == {"constant", "row_prior"} and rec["n_valid"] > 100_000
        pred = predictor.predict(item.load_rgb())
        gt = np.asarray(item.load_gt(), dtype=np.float64)
        flipped = hc.score(-pred.array, pred.kind, item, gt, item.load_mask())
        assert flipped["scale"] == pytest.approx(-rec["scale"], rel=1e-4)          # the negated prediction
        assert flipped["alignment_failed"] != rec["alignment_failed"]               # fails exactly when it did not
    summary = ev.summarize([{**r, "name": r["image"]} for r in records["student"]])
    beats = summary["verdict"]["beats_baselines"]
    assert beats == (summary["images_failed"] == 0 and all(
        summary["abs_rel"] < summary["baselines"][b]["abs_rel"] for b in ("constant", "row_prior")))
