"""pipeline.services.depth_readout: colour bar, histogram, hover grid and two-point measures, against known values."""
from __future__ import annotations

import math

import numpy as np
import pytest

from pipeline import render
from pipeline.geometry import measure
from pipeline.geometry.measure import MeasureError
from pipeline.services import depth_readout


def test_colour_bar_ends_match_the_colour_map_and_are_labelled():
    lut = render.colormap_table("viridis")
    bar = depth_readout.colour_bar("disparity", "viridis", 0.2, 3.7)
    assert bar["colors"][0] == "#" + bytes(lut[0].tolist()).hex()
    assert bar["colors"][-1] == "#" + bytes(lut[-1].tolist()).hex()
    positions = [p for p, _ in bar["ticks"]]
    assert bar["ticks"][0] == (0.0, "0.2") and bar["ticks"][-1] == (1.0, "3.7")
    assert positions == sorted(positions) and len(positions) >= 4
    for pos, label in bar["ticks"][1:-1]:                       # round numbers where they belong
        assert float(label) == pytest.approx(0.2 + pos * 3.5)
    metric = depth_readout.colour_bar("metric_depth", "viridis", 1.0, 5.0)
    assert metric["colors"] == bar["colors"][::-1] and metric["unit"] == "m"   # near (small metres) at the map's end


def test_colour_bar_agrees_with_the_picture():
    """The bar's colour at a value is the colour render.colorize gives that value (both kinds)."""
    a = np.linspace(1.0, 9.0, 15, dtype=np.float32).reshape(1, 15)        # 15 evenly spaced values
    for kind in ("disparity", "metric_depth"):
        bar = depth_readout.colour_bar(kind, "Spectral_r", 1.0, 9.0, stops=15)
        picture = render.colorize(a, "Spectral_r", 1.0, 9.0, kind=kind)[0]
        assert ["#" + bytes(c.tolist()).hex() for c in picture] == bar["colors"]


def test_histogram_counts_every_pixel_once():
    a = np.array([[0.5, 1.0, 1.5, 2.0], [2.5, 3.0, np.nan, 9.0]], np.float32)
    h = depth_readout.histogram(a, 1.0, 3.0, bins=4)
    assert h["counts"] == [1, 1, 1, 2] and h["below"] == 1 and h["above"] == 1 and h["missing"] == 1
    assert sum(h["counts"]) + h["below"] + h["above"] + h["missing"] == h["total"] == 8
    assert h["edges"] == [1.0, 1.5, 2.0, 2.5, 3.0]


def test_hover_grid_round_trips_within_the_16_bit_step():
    rng = np.random.default_rng(0)
    a = rng.uniform(0.5, 12.0, (300, 451)).astype(np.float32)
    a[6, 9] = np.nan                                            # a sampled pixel (every 3rd)
    grid = depth_readout.hover_grid(a, max_side=160)
    assert grid["step"] == 3 and (grid["height"], grid["width"]) == (100, 151)
    back = depth_readout.decode_grid(grid)
    sample = a[::3, ::3]
    ok = np.isfinite(sample)
    assert np.isnan(back[~ok]).all() and not ok.all()
    span = np.nanmax(sample) - np.nanmin(sample)
    assert np.abs(back[ok] - sample[ok]).max() <= span / 65534 / 2 * 1.01


def test_metric_distance_on_a_wall_facing_the_camera():
    """A plane at 4 m: two pixels 100 columns apart are 4 * 100 / f metres apart."""
    depth = np.full((120, 160), 4.0, np.float32)
    m = depth_readout.measure_points(depth, "metric_depth", 200.0, [(30, 60), (130, 60)])
    assert m["distance_m"] == pytest.approx(4.0 * 100 / 200.0) and m["unit"] == "m"
    assert [p["value"] for p in m["points"]] == [4.0, 4.0] and m["window"] == 3
    one = depth_readout.measure_points(depth, "metric_depth", 200.0, [(30, 60)])
    assert "distance_m" not in one and one["points"][0] == {"x": 30, "y": 60, "value": 4.0}


def test_relative_predictions_give_values_and_the_reason_for_no_distance():
    disparity = np.linspace(0.1, 1.0, 80 * 60, dtype=np.float32).reshape(60, 80)
    m = depth_readout.measure_points(disparity, "disparity", 100.0, [(0, 0), (79, 59)])
    assert m["refusal"] == measure.RELATIVE_REASON and "distance_m" not in m
    assert m["points"][1]["value"] == pytest.approx(float(np.median(disparity[58:60, 78:80])))
    with pytest.raises(MeasureError, match="outside the 80x60 image"):
        depth_readout.measure_points(disparity, "disparity", 100.0, [(80, 3)])


def test_a_point_without_depth_is_refused_by_name():
    depth = np.full((20, 20), np.nan, np.float32)
    depth[:, 10:] = 2.0
    with pytest.raises(MeasureError, match=r"no depth at \(2, 5\)"):
        depth_readout.measure_points(depth, "metric_depth", 50.0, [(2, 5), (15, 5)])
    assert math.isfinite(depth_readout.measure_points(depth, "metric_depth", 50.0, [(12, 5), (15, 5)])["distance_m"])
