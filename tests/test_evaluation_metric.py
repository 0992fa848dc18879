"""Metric predictions in pipeline.evaluation.protocol: no alignment, pipeline/evaluation/metric_depth.py's numbers over the
stated depth range, the same summary and baselines; medians beside means and outliers named."""
from __future__ import annotations

import numpy as np
import pytest

from pipeline.evaluation import metric_depth as mm
from pipeline.evaluation import protocol as ev

PROTOCOL = ev.Protocol(gt_kind="depth", depth_cap=20.0, min_depth=0.001)


def scene(seed: int, shape=(24, 32)) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    gt = rng.uniform(1.0, 25.0, shape)                                 # some beyond the 20 m range
    gt[0, :4] = np.nan
    pred = gt * np.exp(rng.normal(0, 0.15, shape)) + 0.3
    return pred, gt


def test_a_metric_prediction_is_scored_as_predicted_with_metric_metrics_over_the_stated_range():
    pred, gt = scene(0)
    rec = ev.evaluate_image(pred, "depth", PROTOCOL, gt)
    want = mm.image_metrics(pred, gt, mm.DepthRange(0.001, 20.0))
    assert rec["scale"] is None and rec["shift"] is None and not rec["alignment_failed"]
    assert rec["metric"] == {k: pytest.approx(want[k]) for k in (*mm.METRICS, "invalid_prediction_share")}
    assert (rec["abs_rel"], rec["delta1"]) == (pytest.approx(want["abs_rel"]), pytest.approx(want["d1"]))
    assert rec["n_valid"] == want["valid_pixels"]                      # GT beyond 20 m is not scored
    for name in ("constant", "row_prior"):                             # the baselines get the same metrics
        assert set(rec["baselines"][name]["metric"]) >= set(mm.METRICS)
    relative = ev.evaluate_image(1.0 / pred, "disparity", PROTOCOL, gt)
    assert "metric" not in relative and relative["scale"] is not None  # relative: aligned, no metric block


def test_the_summary_averages_metric_metrics_per_image_and_states_the_range():
    records = [{"name": f"im{i}", **ev.evaluate_image(scene(i)[0], "depth", PROTOCOL, scene(i)[1])}
               for i in range(3)]
    s = ev.summarize(records)
    want = mm.mean_metrics([r["metric"] for r in records])
    assert s["metric"]["images"] == 3 and s["metric"]["rmse"] == pytest.approx(want["rmse"])
    assert s["metric"]["baselines"]["constant"]["rmse"] == pytest.approx(
        np.mean([r["baselines"]["constant"]["metric"]["rmse"] for r in records]))
    described = PROTOCOL.describe(["depth"])
    assert described["metric"]["depth_range_m"] == [0.001, 20.0] and described["alignment"] == {
        "depth": "none: metric depth evaluated as predicted"}


def test_the_median_stands_beside_the_mean_and_an_outlier_is_named():
    records = [{"name": f"im{i}", "abs_rel": v, "delta1": 0.5, "n_valid": 10, "scale": 1.0,
                "baselines": {b: {"abs_rel": 1.0, "delta1": 0.1} for b in ("constant", "row_prior")}}
               for i, v in enumerate((0.10, 0.12, 0.11, 2498.0))]
    s = ev.summarize(records)
    assert s["abs_rel"] == pytest.approx(np.mean([0.10, 0.12, 0.11, 2498.0]))
    assert s["abs_rel_median"] == pytest.approx(0.115)
    assert s["outliers"] == [{"name": "im3", "abs_rel": 2498.0}] and "3 times the median" in s["outlier_rule"]
    assert ev.summarize(records[:3])["outliers"] == []
