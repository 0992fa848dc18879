"""Metrics, alignment and data layouts of pipeline.evaluation.protocol on cases with known answers."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from pipeline.errors import ConfigError, StudioError
from pipeline.evaluation import data as ed
from pipeline.evaluation import protocol as ev
from pipeline.files.sample_data import MOTORCYCLE_CALIBRATION, disparity_to_depth, motorcycle_depth, motorcycle_sample


def _depth(h=12, w=16, seed=0):
    rng = np.random.default_rng(seed)
    return rng.uniform(1.0, 9.0, (h, w))


@pytest.fixture
def gt():
    return _depth()


DEPTH = ev.Protocol(gt_kind="depth", depth_cap=80.0)


# ----------------------------------------------------------------------------- metrics

def test_perfect_predictions(gt):
    for pred, kind in ((gt, "depth"), (1.0 / gt, "disparity")):
        r = ev.evaluate_image(pred, kind, DEPTH, gt)
        assert r["abs_rel"] == pytest.approx(0.0, abs=1e-12) and r["delta1"] == 1.0 and r["n_valid"] == gt.size


def test_affine_transform_of_gt_disparity_is_aligned_perfectly(gt):
    pred = 0.37 * (1.0 / gt) - 0.05           # any positive scale and shift
    r = ev.evaluate_image(pred, "disparity", DEPTH, gt)
    assert r["abs_rel"] == pytest.approx(0.0, abs=1e-10) and r["delta1"] == 1.0
    assert r["scale"] == pytest.approx(1 / 0.37) and r["shift"] == pytest.approx(0.05 / 0.37)


def test_metric_ten_percent_scale_error(gt):
    r = ev.evaluate_image(1.1 * gt, "depth", DEPTH, gt)
    assert r["abs_rel"] == pytest.approx(0.1) and r["delta1"] == 1.0
    r = ev.evaluate_image(1.3 * gt, "depth", DEPTH, gt)
    assert r["abs_rel"] == pytest.approx(0.3) and r["delta1"] == 0.0


def test_delta1_and_absrel_known_mixture():
    gt = np.full((2, 2), 2.0)
    pred = np.array([[2.0, 2.0], [2.6, 1.0]])  # ratios 1, 1, 1.3, 2 -> delta1 = 0.5
    r = ev.evaluate_image(pred, "depth", DEPTH, gt)
    assert r["delta1"] == 0.5
    assert r["abs_rel"] == pytest.approx((0 + 0 + 0.3 + 0.5) / 4)


def test_fit_matches_numpy_lstsq():
    rng = np.random.default_rng(3)
    pred, target = rng.normal(size=(20, 30)), rng.normal(size=(20, 30))
    mask = rng.random((20, 30)) > 0.3
    s, t = ev.fit_scale_shift(pred, target, mask)
    a = np.stack([pred[mask], np.ones(mask.sum())], 1)
    (s_ref, t_ref), *_ = np.linalg.lstsq(a, target[mask], rcond=None)
    assert s == pytest.approx(s_ref, rel=1e-10) and t == pytest.approx(t_ref, rel=1e-10)


def test_alignment_is_in_disparity_space(gt):
    # a prediction that is an affine map of GT *depth* is not an affine map of disparity: not perfect
    r = ev.evaluate_image(2.0 * gt + 1.0, "disparity", DEPTH, gt)
    assert r["abs_rel"] > 0.05


def test_invalid_gt_pixels_are_ignored(gt):
    bad = gt.copy()
    bad[0, :4] = [np.nan, np.inf, 0.0, -3.0]
    bad[1, 0] = 1e-4                                    # below min_depth
    bad[1, 1] = 200.0                                   # beyond the 80 m cap
    pred = 1.0 / gt
    pred_noisy = pred.copy()
    pred_noisy[0, :4] = [5.0, -1.0, 1e6, 0.0]
    pred_noisy[1, :2] = [7.0, 9.0]
    for p in (pred, pred_noisy):
        r = ev.evaluate_image(p, "disparity", DEPTH, bad)
        assert r["n_valid"] == gt.size - 6 and r["abs_rel"] == pytest.approx(0.0, abs=1e-10)


def test_mask_from_data_is_respected(gt):
    pred = 1.0 / gt
    pred[:, :8] = 0.123                                  # garbage on the masked half
    mask = np.zeros_like(gt, dtype=bool)
    mask[:, 8:] = True
    r = ev.evaluate_image(pred, "disparity", DEPTH, gt, mask=mask)
    assert r["n_valid"] == mask.sum() and r["abs_rel"] == pytest.approx(0.0, abs=1e-10)


def test_aligned_disparity_is_clamped_at_the_depth_cap():
    gt = np.array([[1.0, 2.0, 4.0, 8.0]])
    pred = np.array([[1.0, 0.5, 0.25, -10.0]])          # last pixel's aligned disparity goes negative
    r = ev.evaluate_image(pred, "disparity", ev.Protocol(depth_cap=10.0), gt)
    s, t = ev.fit_scale_shift(pred, 1 / gt, np.ones_like(gt, dtype=bool))
    aligned = np.maximum(s * pred + t, 1 / 10.0)
    assert aligned[0, 3] == pytest.approx(0.1)           # the clamp acted
    expected = ev.depth_metrics(1 / aligned, gt, np.ones_like(gt, dtype=bool))
    assert r["abs_rel"] == pytest.approx(expected["abs_rel"]) and r["depth_cap"] == 10.0


def test_per_image_gt_max_cap():
    gt = np.array([[1.0, 2.0, 4.0, np.nan]])
    proto = ev.Protocol(gt_kind="depth", depth_cap=None)
    r = ev.evaluate_image(3 / gt + 2, "disparity", proto, gt)
    assert r["n_valid"] == 3 and r["abs_rel"] == pytest.approx(0.0, abs=1e-12)
    assert r["depth_cap"] == pytest.approx(4.0)           # the largest valid GT depth
    assert proto.describe()["depth_cap"] == "per-image maximum valid GT depth"


def test_disparity_gt_is_scored_in_disparity_space_never_inverted():
    gt_disp = np.array([[1.0, 0.5, 0.25, 0.0, 0.8]])      # 0 = invalid (unknown / infinitely far)
    proto = ev.Protocol(gt_kind="disparity", depth_cap=None)
    r = ev.evaluate_image(3 * gt_disp + 2, "disparity", proto, gt_disp)
    assert r["space"] == "disparity" and r["n_valid"] == 4 and r["abs_rel"] == pytest.approx(0.0, abs=1e-12)
    assert r["scale"] == pytest.approx(1 / 3) and "depth_cap" not in r
    # a 10 % error on one pixel in disparity space: AbsRel over disparity, not over 1/disparity
    pred = gt_disp.copy()
    pred[0, 0] = 1.1
    r = ev.evaluate_image(pred, "disparity", proto, gt_disp)
    s, t = ev.fit_scale_shift(pred, gt_disp, gt_disp > 0)
    want = np.mean(np.abs((s * pred + t) - gt_disp)[gt_disp > 0] / gt_disp[gt_disp > 0])
    assert r["abs_rel"] == pytest.approx(want)
    assert "disparity space" in proto.describe()["metrics"] and "depth_cap" not in proto.describe()


def test_baselines_are_scored_on_the_same_pixels():
    h, w = 10, 6
    rows = ev.row_prior((h, w))
    assert rows[0, 0] == pytest.approx(0.05) and rows[-1, -1] == pytest.approx(0.95) and np.all(np.diff(rows, axis=0) > 0)
    gt_depth = 1.0 / (0.5 * rows + 0.1)                   # a floor: disparity grows towards the bottom
    r = ev.evaluate_image(np.ones((h, w)), "disparity", DEPTH, gt_depth)
    assert r["alignment_failed"] and r["scale"] == 0.0     # a constant prediction has no order at all
    assert r["abs_rel"] == pytest.approx(r["baselines"]["constant"]["abs_rel"])
    assert r["baselines"]["row_prior"]["abs_rel"] == pytest.approx(0.0, abs=1e-12)
    # a ceiling (disparity shrinking towards the bottom): the prior would need a negative scale, so it
    # degenerates to the constant instead of being flipped
    r = ev.evaluate_image(1.0 / gt_depth[::-1], "disparity", DEPTH, gt_depth[::-1])
    assert r["baselines"]["row_prior"]["abs_rel"] == pytest.approx(r["baselines"]["constant"]["abs_rel"])
    assert r["baselines"]["row_prior"]["scale"] == 0.0 and not r["alignment_failed"] and r["abs_rel"] < 1e-9


def test_metric_prediction_against_disparity_gt_is_refused():
    with pytest.raises(ConfigError, match="depth ground truth"):
        ev.evaluate_image(np.ones((2, 2)), "depth", ev.Protocol(gt_kind="disparity"), np.ones((2, 2)))


def test_prediction_at_another_resolution_is_resized(gt):
    big = np.kron(1.0 / gt, np.ones((2, 2)))             # 2x nearest upsampling of a perfect prediction
    r = ev.evaluate_image(big, "disparity", DEPTH, gt)
    assert r["n_valid"] == gt.size and r["abs_rel"] < 0.1 and r["resized_from"] == [24, 32]
    # pairs are scored on the resized prediction (image coordinates)
    pairs = np.array([[0, 0, 11, 15, 1 if gt[0, 0] < gt[11, 15] else 2]])
    assert ev.evaluate_image(big, "disparity", DEPTH, gt, pairs=pairs)["pairs"]["correct"] == 1


# ----------------------------------------------------------------------------- pairs

def test_pair_accuracy_hand_made():
    pred = np.array([[0.9, 0.1], [0.5, 0.5]])            # disparity: (0,0) closest
    pairs = ev.parse_pairs([
        {"point1": [0, 0], "point2": [0, 1], "closer_point": "point1"},   # right
        {"point1": [0, 1], "point2": [1, 0], "closer_point": "point1"},   # wrong
        {"point1": [1, 0], "point2": [1, 1], "closer_point": "point2"},   # tie: wrong
        [1, 0, 0, 1, 1],                                                  # right (row form)
    ])
    assert pairs.tolist()[0] == [0, 0, 0, 1, 1]
    r = ev.pair_accuracy(pred, pairs)
    assert r == {"correct": 2, "total": 4, "accuracy": 0.5}
    # depth predictions: closer = smaller
    assert ev.pair_accuracy(1.0 / pred, pairs, "depth")["correct"] == 2
    assert ev.pair_accuracy(pred, pairs, "depth")["correct"] == 1      # reversed order: only the (wrong) other one


def test_pair_parsing_refuses_unknown_closer():
    with pytest.raises(StudioError, match="closer_point"):
        ev.parse_pairs([{"point1": [0, 0], "point2": [1, 1], "closer_point": "both"}])


def _rec(abs_rel, delta1, n, failed=False, const=0.5, prior=0.4, pairs=None, name=""):
    r = {"name": name, "abs_rel": abs_rel, "delta1": delta1, "n_valid": n, "scale": -1.0 if failed else 1.0,
         "alignment_failed": failed, "baselines": {"constant": {"abs_rel": const, "delta1": 0.1},
                                                    "row_prior": {"abs_rel": prior, "delta1": 0.2}}}
    if pairs:
        r["pairs"] = {"correct": pairs[0], "total": pairs[1]}
        r["row_prior_pairs"] = {"correct": pairs[2], "total": pairs[1]}
    return r


def test_summary_averages_successful_alignments_beside_baselines_and_pools_pairs():
    recs = [_rec(0.1, 1.0, 10, pairs=(1, 1, 0)), _rec(0.3, 0.5, 30, const=0.7, prior=0.2),
            {"abs_rel": None, "delta1": None, "n_valid": 0, "pairs": {"correct": 1, "total": 3},
             "row_prior_pairs": {"correct": 2, "total": 3}},
            _rec(0.05, 1.0, 99, failed=True, name="upside-down")]
    s = ev.summarize(recs)
    assert s["abs_rel"] == pytest.approx(0.2) and s["delta1"] == pytest.approx(0.75)
    assert s["images_scored"] == 2 and s["pixels_scored"] == 40 and s["scale_range"] == [-1.0, 1.0]
    assert (s["images_failed"], s["failed_share"], s["failed_images"]) == (1, pytest.approx(1 / 3), ["upside-down"])
    assert s["baselines"]["constant"]["abs_rel"] == pytest.approx(0.6)      # the same two images
    assert s["baselines"]["row_prior"]["abs_rel"] == pytest.approx(0.3)
    assert s["pair_accuracy"] == pytest.approx(0.5) and s["pairs_total"] == 4
    assert s["baselines"]["row_prior"]["pair_accuracy"] == pytest.approx(0.5)
    assert s["verdict"]["beats_baselines"] is False and "failed (scale <= 0) on 1 of 3" in s["verdict"]["text"]


@pytest.mark.parametrize("recs, beats, words", [
    ([_rec(0.1, 0.9, 5), _rec(0.2, 0.8, 5)], True, "better than both baselines on 2"),
    ([_rec(0.35, 0.9, 5), _rec(0.45, 0.8, 5)], False, "not better than the row prior baseline"),
    ([_rec(0.55, 0.9, 5), _rec(0.65, 0.8, 5)], False, "constant and the row prior"),
])
def test_the_verdict_needs_both_baselines_beaten(recs, beats, words):
    v = ev.summarize(recs)["verdict"]
    assert v["beats_baselines"] is beats and words in v["text"]
    assert ev.summarize([])["verdict"] == {"beats_baselines": None, "text": "nothing scored"}


# ----------------------------------------------------------------------------- data layouts

def _rgb(path, h=12, w=16):
    Image.fromarray(np.full((h, w, 3), 128, np.uint8)).save(path)


def test_folder_layout_discovery(tmp_path, gt):
    (tmp_path / "images").mkdir()
    (tmp_path / "gt").mkdir()
    _rgb(tmp_path / "images" / "a.png")
    np.save(tmp_path / "gt" / "a.npy", gt)
    _rgb(tmp_path / "images" / "b.jpg")
    np.save(tmp_path / "images" / "b_depth.npy", 2 * gt)
    Image.fromarray((np.arange(12 * 16).reshape(12, 16) % 2 * 255).astype(np.uint8)).save(tmp_path / "images" / "b_mask.png")
    _rgb(tmp_path / "images" / "c.png")                  # no GT: pairs only
    (tmp_path / "pairs.json").write_text(json.dumps({"c.png": [{"point1": [0, 0], "point2": [1, 1], "closer_point": "point2"}]}))
    items = {it.name: it for it in ed.find_items(tmp_path)}
    assert sorted(items) == ["images/a", "images/b", "images/c"]
    np.testing.assert_array_equal(items["images/a"].load_gt(), gt)
    np.testing.assert_array_equal(items["images/b"].load_gt(), 2 * gt)
    assert items["images/b"].load_mask().sum() == 12 * 16 // 2 and items["images/a"].load_mask is None
    assert items["images/c"].load_gt is None and items["images/c"].pairs.tolist() == [[0, 0, 1, 1, 2]]
    assert items["images/a"].load_image().shape == (12, 16, 3)


def test_raw_16bit_png_gt_with_zero_invalid_and_scale(tmp_path):
    raw = np.array([[0, 1000], [2500, 65535]], dtype=np.uint16)
    Image.fromarray(raw).save(tmp_path / "x.png")
    arr = ed.read_array(tmp_path / "x.png", scale=0.001)
    assert np.isnan(arr[0, 0]) and arr[0, 1] == pytest.approx(1.0) and arr[1, 1] == pytest.approx(65.535)


def test_pickled_npy_is_refused(tmp_path):
    np.save(tmp_path / "evil.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ev.EvaluationDataError, match="evil.npy"):
        ed.read_array(tmp_path / "evil.npy")


def test_missing_or_empty_data_folder(tmp_path):
    with pytest.raises(ev.EvaluationDataError, match="does not exist"):
        ed.find_items(tmp_path / "nope")
    with pytest.raises(ev.EvaluationDataError, match="no images"):
        ed.find_items(tmp_path)


def test_store_export_is_read_with_kind_masks_and_pairs(tmp_path, gt):
    """A real `pipeline.intake.dataset_export` folder: disparity label, an ignore mask, one point pair."""
    import io

    from pipeline.intake.dataset_export import export_dataset
    from pipeline.store import ANY_HEAD, Store

    store = Store(tmp_path / "s.db")
    buf = io.BytesIO()
    Image.fromarray(np.full((12, 16, 3), 90, np.uint8)).save(buf, format="PNG")
    rec, _ = store.add_image(buf.getvalue(), "street.png", width=16, height=12)
    ignore = np.zeros((12, 16), bool)
    ignore[:, :4] = True
    store.save_revision(rec.id, (1.0 / gt).astype(np.float32), expected_head=ANY_HEAD, tool="test", author="t",
                        masks={"ignore": ignore}, kind="disparity", status="accepted")
    store.add_point_pair(rec.id, [0, 5], [11, 15], 1, author="t")
    export_dataset(store, tmp_path / "export")

    (item,) = ed.find_items(tmp_path / "export")
    assert item.name.startswith("street-") and item.gt_kind == "disparity"
    np.testing.assert_array_equal(item.load_gt(), (1.0 / gt).astype(np.float32))
    np.testing.assert_array_equal(item.load_mask(), ~ignore)
    assert item.pairs.tolist() == [[0, 5, 11, 15, 1]]
    assert item.load_image().shape == (12, 16, 3)
    # scored as disparity GT: a perfect prediction on the unmasked pixels
    pred = 1.0 / gt
    pred[:, :4] = -5.0
    r = ev.evaluate_image(pred, "disparity", ev.Protocol(gt_kind="disparity", depth_cap=None),
                          item.load_gt(), item.load_mask(), item.pairs)
    assert r["n_valid"] == 12 * 12 and r["abs_rel"] == pytest.approx(0.0, abs=1e-5)


def test_evaluate_skips_items_without_labels_and_reports_protocol(gt):
    items = [ev.EvalItem("a", None, lambda: gt), ev.EvalItem("nothing", None),
             ev.EvalItem("allbad", None, lambda: np.full_like(gt, np.nan))]
    rep = ev.evaluate(items, lambda it: (1.0 / gt, "disparity"), DEPTH)
    assert [s["name"] for s in rep["skipped"]] == ["nothing", "allbad"]
    assert rep["summary"]["images_scored"] == 1 and rep["summary"]["abs_rel"] == pytest.approx(0, abs=1e-10)
    assert rep["protocol"]["depth_cap"] == 80.0 and "disparity space" in rep["protocol"]["alignment"]["disparity"]
    json.dumps(ev.clean_json(rep), allow_nan=False)


# ----------------------------------------------------------------------------- built-in sample

def test_motorcycle_sample_and_calibration():
    rgb, disp, calib = motorcycle_sample()
    assert rgb.shape == (500, 741, 3) and rgb.dtype == np.uint8 and disp.dtype == np.float32
    assert int(np.isnan(disp).sum()) == 27226 and np.nanmin(disp) > 0
    assert calib["focal_px"] == 994.978 and calib["doffs_px"] == 31.086
    _, depth, _ = motorcycle_depth()
    i, j = 200, 300
    assert np.isfinite(disp[i, j])
    assert depth[i, j] == pytest.approx(0.193001 * 994.978 / (disp[i, j] + 31.086), rel=1e-6)
    assert 2.0 < np.nanmin(depth) and np.nanmax(depth) < 5.1
    assert np.isnan(disparity_to_depth(np.array([np.nan, -40.0]), MOTORCYCLE_CALIBRATION)).all()


def test_store_export_scores_ground_truth_and_human_pixels_never_pseudo_labels(tmp_path, gt):
    import io

    from pipeline.intake.dataset_export import export_dataset
    from pipeline.store import Store

    store = Store(tmp_path / "s.db")
    ids = []
    for i in range(3):
        buf = io.BytesIO()
        Image.fromarray(np.full((12, 16, 3), 40 * i, np.uint8)).save(buf, format="PNG")
        rec, _ = store.add_image(buf.getvalue(), f"im{i}.png", width=16, height=12)
        store.add_prediction(rec.id, "teacher", "disparity", (1.0 / gt).astype(np.float32))
        store.set_status(rec.id, "accepted", author="t")
        ids.append(rec.id)
    planed = (1.0 / gt).astype(np.float32)
    planed[2:6, 3:9] = 0.5                                              # a person's plane on one region
    store.save_revision(ids[1], planed, expected_head=store.head(ids[1]).id, tool="plane", author="ann")
    store.add_ground_truth(ids[2], gt.astype(np.float32), kind="metric_depth", source="lidar", author="ann")
    export_dataset(store, tmp_path / "export")
    items = sorted(ed.find_items(tmp_path / "export"), key=lambda it: it.name)
    pseudo, human, truth = items
    assert pseudo.load_gt is None and "model:teacher" in pseudo.note and pseudo.gt_kind is None
    region = np.zeros((12, 16), bool)
    region[2:6, 3:9] = True
    assert human.gt_kind == "disparity" and np.array_equal(human.load_mask(), region)
    assert truth.gt_kind == "depth" and truth.note == "ground truth (ground_truth:lidar)"
    np.testing.assert_array_equal(truth.load_gt(), gt.astype(np.float32))
