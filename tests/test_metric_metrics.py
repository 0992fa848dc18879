"""Metric-depth metrics against values computed by hand; the depth range, skipped images, bad predictions."""
from __future__ import annotations

import math

import numpy as np
import pytest

from pipeline.errors import ConfigError
from pipeline.evaluation.metric_depth import DepthRange, errors, image_metrics, mean_metrics


def test_hand_computed_values():
    # pred / gt: 1/1 (exact), 2/1 (ratio 2), 3/2 (ratio 1.5), 2/4 (ratio 2)
    pred, gt = np.array([1.0, 2.0, 3.0, 2.0]), np.array([1.0, 1.0, 2.0, 4.0])
    m = errors(pred, gt)
    assert m["abs_rel"] == pytest.approx((0 + 1 + 0.5 + 0.5) / 4)
    assert m["sq_rel"] == pytest.approx((0 + 1 + 0.5 + 1) / 4)
    assert m["rmse"] == pytest.approx(math.sqrt((0 + 1 + 1 + 4) / 4))
    g = [0.0, math.log(2), math.log(1.5), -math.log(2)]
    assert m["rmse_log"] == pytest.approx(math.sqrt(sum(x * x for x in g) / 4))
    assert m["log10"] == pytest.approx((0 + 2 * math.log10(2) + math.log10(1.5)) / 4)
    assert m["silog"] == pytest.approx(math.sqrt(sum(x * x for x in g) / 4 - 0.5 * (sum(g) / 4) ** 2))
    assert (m["d1"], m["d2"], m["d3"]) == (0.25, 0.5, 0.5)       # 1.5 < 1.5625; 2 > 1.953


def test_silog_ignores_a_global_scale_only_partly_and_a_perfect_prediction_scores_zero():
    gt = np.linspace(1, 10, 50)
    perfect = errors(gt, gt)
    assert perfect["abs_rel"] == 0 and perfect["rmse"] == 0 and perfect["silog"] == 0 and perfect["d1"] == 1
    doubled = errors(2 * gt, gt)                                           # g = ln 2 everywhere
    assert doubled["silog"] == pytest.approx(math.log(2) * math.sqrt(0.5))
    assert doubled["abs_rel"] == pytest.approx(1.0) and doubled["d3"] == 0.0


def test_only_ground_truth_inside_the_depth_range_counts():
    gt = np.array([[0.0005, 1.0, 2.0, 30.0, np.nan] * 4])                 # 4 x (too near, ok, ok, too far, none)
    pred = np.array([[9.0, 1.0, 3.0, 9.0, 9.0] * 4])
    m = image_metrics(pred, gt, DepthRange(1e-3, 20.0))
    assert m is None                                                       # 8 valid pixels < 10: skipped
    gt, pred = np.tile(gt, (2, 1)), np.tile(pred, (2, 1))
    m = image_metrics(pred, gt, DepthRange(1e-3, 20.0))
    assert m["valid_pixels"] == 16 and m["abs_rel"] == pytest.approx(0.25)  # half exact, half 3 vs 2
    assert image_metrics(pred, gt, DepthRange(1e-3, 40.0))["valid_pixels"] == 24
    keep = np.tile([True, True, False, True, True], (3, 4))                # hide the 3-vs-2 pixels
    masked = image_metrics(np.tile(pred[:1], (3, 1)), np.tile(gt[:1], (3, 1)), DepthRange(1e-3, 20.0), mask=keep)
    assert masked["valid_pixels"] == 12 and masked["abs_rel"] == 0.0


def test_bad_predictions_are_left_out_and_counted():
    gt = np.full((4, 5), 2.0)
    pred = np.full((4, 5), 2.0)
    pred[0, :5] = [0.0, -1.0, np.nan, np.inf, 2.0]
    m = image_metrics(pred, gt, DepthRange(1e-3, 10.0))
    assert m["invalid_prediction_share"] == pytest.approx(4 / 20) and m["abs_rel"] == 0.0


def test_set_mean_and_skipped_images():
    a = image_metrics(np.full((4, 4), 2.0), np.full((4, 4), 1.0))
    b = image_metrics(np.full((4, 4), 1.0), np.full((4, 4), 1.0))
    out = mean_metrics(iter([a, b, None]))
    assert out["images"] == 2 and out["skipped_images"] == 1 and out["abs_rel"] == pytest.approx(0.5)
    assert mean_metrics([None])["abs_rel"] is None


def test_bad_range_and_shapes_are_refused():
    with pytest.raises(ConfigError, match="maximum depth"):
        DepthRange(1.0, 0.5)
    with pytest.raises(ConfigError, match="resize the prediction"):
        image_metrics(np.ones((2, 2)), np.ones((3, 3)))
    text = DepthRange(0.001, 20.0).describe()
    assert text["depth_range_m"] == [0.001, 20.0] and "none" in text["alignment"]
