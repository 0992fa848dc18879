"""Correction tools on known inputs with known outputs."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from pipeline.errors import StudioError
from pipeline.labels import corrections as C

H, W = 48, 64


def plane_inverse_depth(normal=(0.1, -0.6, 0.8), h=2.0, f=50.0) -> np.ndarray:
    """1/Z of the 3D plane n.X = h seen by a pinhole camera (focal f, centre in the middle)."""
    v, u = np.mgrid[0:H, 0:W].astype(np.float64)
    rays = np.stack([(u - W / 2) / f, (v - H / 2) / f, np.ones_like(u)], -1)    # (H, W, 3)
    return (rays @ np.asarray(normal)) / h                                     # (H, W)


def box(y0, y1, x0, x1) -> np.ndarray:
    m = np.zeros((H, W), bool)
    m[y0:y1, x0:x1] = True
    return m


# ---------------------------------------------------------------------------- masks, sky
def test_ignore_mask_is_the_union_and_accepts_painted_uint8():
    painted = np.zeros((H, W), np.uint8)
    painted[0:5, 0:5] = 255
    existing = box(3, 10, 3, 10)
    out = C.ignore_mask(painted, existing)
    assert out.dtype == bool and out.sum() == 25 + 49 - 4
    assert out[0, 0] and out[9, 9] and not out[20, 20]
    assert np.array_equal(C.ignore_mask(painted), painted > 0)


def test_ignore_mask_rejects_a_mask_of_another_size():
    with pytest.raises(StudioError, match="shape"):
        C.ignore_mask(np.ones((H, W), bool), np.ones((H + 1, W), bool))


def test_mark_sky_disparity_zero_metric_max_depth_input_untouched():
    label = np.full((H, W), 3.0, np.float32)
    region = box(0, 10, 0, W)
    out, sky = C.mark_sky(label, region, "disparity")
    assert (out[:10] == 0).all() and (out[10:] == 3).all() and np.array_equal(sky, region)
    assert (label == 3).all()                                      # a new array
    depth, _ = C.mark_sky(label, region, "metric_depth", max_depth=80.0)
    assert (depth[:10] == 80).all() and (depth[10:] == 3).all()
    with pytest.raises(StudioError, match="max_depth"):
        C.mark_sky(label, region, "metric_depth")
    with pytest.raises(StudioError, match="empty"):
        C.mark_sky(label, np.zeros((H, W), bool), "disparity")


# ---------------------------------------------------------------------------- plane fit
@pytest.mark.parametrize("kind", ["disparity", "metric_depth"])
def test_plane_fit_restores_a_corrupted_plane(kind):
    inv = plane_inverse_depth()
    assert inv.min() > 0
    truth = (3.0 * inv + 0.5) if kind == "disparity" else 1.0 / inv        # affine disparity / Z
    truth = truth.astype(np.float32)
    region = box(8, 40, 10, 54)
    rng = np.random.default_rng(1)
    corrupt = truth.copy()
    bad = region & (rng.random((H, W)) < 0.3)                                # 30% outliers
    corrupt[bad] *= rng.uniform(0.2, 5.0, bad.sum()).astype(np.float32)
    corrupt[region] += (rng.normal(0, 1e-7, region.sum()) * truth[region]).astype(np.float32)
    out, fit = C.fit_plane(corrupt, region, kind)
    np.testing.assert_allclose(out[region], truth[region], rtol=1e-4)
    assert np.array_equal(out[~region], corrupt[~region])
    assert 0.65 < fit.inlier_fraction < 0.75


def test_plane_fit_coefficients_for_a_known_disparity_plane():
    v, u = np.mgrid[0:H, 0:W]
    label = (0.02 * u - 0.01 * v + 1.5).astype(np.float32)
    label[20, 20] = 100.0
    out, fit = C.fit_plane(label, np.ones((H, W), bool), "disparity")
    assert (fit.a, fit.b, fit.c) == pytest.approx((0.02, -0.01, 1.5), rel=1e-5)
    assert out[20, 20] == pytest.approx(0.02 * 20 - 0.01 * 20 + 1.5, rel=1e-6)


def test_plane_fit_metric_beyond_horizon_becomes_max_depth():
    v, u = np.mgrid[0:H, 0:W]
    inv = 0.01 * (v - 10.0)                              # a floor: rows 0..10 lie beyond its horizon
    label = np.where(inv > 0, 1.0 / np.where(inv > 0, inv, 1), 20.0).astype(np.float32)
    corrupt = label.copy()
    corrupt[12:20, 5:15] = 3.0                           # a painted-over object on the floor
    region = box(0, H, 0, W)
    out, fit = C.fit_plane(corrupt, region, "metric_depth", max_depth=200.0)
    assert (fit.a, fit.b, fit.c) == pytest.approx((0.0, 0.01, -0.1), abs=1e-7)
    np.testing.assert_allclose(out[11:], label[11:], rtol=1e-5)
    assert (out[:11] == 200.0).all()                     # beyond the horizon -> max_depth


# ---------------------------------------------------------------------------- smoothing
@pytest.mark.parametrize("method", ["gaussian", "bilateral"])
def test_smooth_keeps_outside_bit_for_bit_and_reduces_noise(method):
    rng = np.random.default_rng(0)
    label = (5.0 + rng.normal(0, 0.1, (H, W))).astype(np.float32)
    region = box(10, 40, 10, 50)
    out = C.smooth_region(label, region, sigma=2.0, method=method, range_sigma=1.0)
    assert out.tobytes() != label.tobytes()
    assert np.array_equal(out[~region].view(np.uint32), label[~region].view(np.uint32))
    assert out[region].std() < 0.35 * label[region].std()
    assert out[region].mean() == pytest.approx(5.0, abs=0.02)


def test_gaussian_smoothing_preserves_a_linear_ramp_and_a_constant():
    v, u = np.mgrid[0:H, 0:W]
    ramp = (0.1 * u + 0.05 * v).astype(np.float32)
    region = box(15, 33, 15, 49)                         # > 3 sigma from the border
    out = C.smooth_region(ramp, region, sigma=2.0)
    np.testing.assert_allclose(out, ramp, atol=1e-5)
    const = np.full((H, W), 7.0, np.float32)
    assert np.array_equal(C.smooth_region(const, region, sigma=3.0), const)


def test_bilateral_does_not_blur_across_a_step():
    label = np.where(np.arange(W)[None, :] < 32, 1.0, 10.0).astype(np.float32).repeat(H, 0)
    region = box(0, H, 20, 44)
    edge_aware = C.smooth_region(label, region, sigma=2.0, method="bilateral", range_sigma=0.5)
    np.testing.assert_allclose(edge_aware, label, atol=1e-6)
    blurred = C.smooth_region(label, region, sigma=2.0, method="gaussian")
    assert abs(blurred[5, 31] - 1.0) > 1.0               # the plain Gaussian does blur it


# ---------------------------------------------------------------------------- copy / align
def test_copy_from_prediction_aligns_scale_and_shift_outside_the_region():
    rng = np.random.default_rng(2)
    other = rng.uniform(0.5, 2.0, (H, W)).astype(np.float32)
    label = (3.0 * other + 2.0).astype(np.float32)
    region = box(5, 20, 5, 30)
    broken = label.copy()
    broken[region] = -50.0                                # garbage: must not affect the fit
    out, al = C.copy_from_prediction(broken, other, region)
    assert (al.scale, al.shift) == pytest.approx((3.0, 2.0), rel=1e-5)
    assert al.pixels == H * W - region.sum()
    np.testing.assert_allclose(out[region], label[region], rtol=1e-5)
    assert np.array_equal(out[~region], broken[~region])


def test_align_scale_shift_known_values_and_errors():
    x = np.array([[0.0, 1.0], [2.0, 3.0]])
    al = C.align_scale_shift(x, 2 * x - 1)
    assert (al.scale, al.shift, al.pixels) == pytest.approx((2.0, -1.0, 4))
    with pytest.raises(StudioError, match="too few"):
        C.copy_from_prediction(np.ones((2, 2)), np.ones((2, 2)), np.ones((2, 2), bool))


# ---------------------------------------------------------------------------- point pairs
def test_point_pairs_flag_disagreements_for_both_kinds():
    """Pairs in DA-2K form: points [h, w] (row, column), closer 1 or 2, as the store keeps them."""
    disp = np.tile(np.linspace(0.0, 1.0, W, dtype=np.float32), (H, 1))     # right = closer
    pairs = [
        ((5, 60), (5, 2), 1),                                                  # right closer: agrees
        {"point1": [5, 2], "point2": [5, 60], "closer_point": "point1"},      # left closer: disagrees
        SimpleNamespace(point1=(1, 10), point2=(40, 10), closer=2),           # same column: equal -> flagged
        ((3, 30), (3, 31), 2),                                                 # tiny difference: agrees at margin 0
    ]
    assert C.check_point_pairs(disp, pairs, "disparity").tolist() == [False, True, True, False]
    assert C.check_point_pairs(disp, pairs, "disparity", margin=0.05).tolist() == [False, True, True, True]
    # the same geometry as metric depth: Z = 1 / (disp + 0.1), smaller = closer
    depth = 1.0 / (disp + 0.1)
    assert C.check_point_pairs(depth, pairs, "metric_depth").tolist() == [False, True, True, False]
    # invariant to the disparity's scale and shift
    assert C.check_point_pairs(7 * disp + 3, pairs, "disparity", margin=0.05).tolist() == [False, True, True, True]


def test_point_pair_outside_the_image_or_without_a_closer_point_is_a_user_error():
    with pytest.raises(StudioError, match=r"\[h=0, w=64\] is outside"):
        C.check_point_pairs(np.zeros((H, W)), [((0, W), (0, 0), 1)], "disparity")
    with pytest.raises(StudioError, match="closer point must be 1 or 2"):
        C.check_point_pairs(np.zeros((H, W)), [((0, 1), (0, 0), "a")], "disparity")


# ---------------------------------------------------------------------------- flip consistency
def test_flip_consistency_is_one_for_an_affine_copy_and_known_for_a_corruption():
    rng = np.random.default_rng(3)
    pred = rng.uniform(0, 1, (H, W))
    flipped = (2.0 * pred + 1.0)[:, ::-1]                 # what the model would give the flipped image
    score, conf = C.flip_consistency(pred, flipped)
    assert score == pytest.approx(1.0, abs=1e-6) and conf.min() > 1 - 1e-6

    pred = np.zeros((H, W))
    pred[:, W // 2:] = 1.0                                # two levels: robust range R = 1
    bad = pred.copy()
    bad[:H // 2, :W // 4] = 0.5                           # a quarter of the left half disagrees
    score, conf = C.flip_consistency(pred, bad[:, ::-1])
    # independent reference: least squares by polyfit, then 1 - min(1, |err| / 1)
    s, t = np.polyfit(bad.ravel(), pred.ravel(), 1)
    expected = 1 - np.minimum(np.abs(pred - (s * bad + t)), 1)
    np.testing.assert_allclose(conf, expected, atol=1e-6)
    assert score == pytest.approx(expected.mean(), abs=1e-6) and score < 0.99


def test_flip_consistency_ranks_a_noisier_flip_lower():
    rng = np.random.default_rng(4)
    pred = rng.uniform(0, 1, (H, W))
    s1, _ = C.flip_consistency(pred, (pred + rng.normal(0, 0.01, (H, W)))[:, ::-1])
    s2, _ = C.flip_consistency(pred, (pred + rng.normal(0, 0.1, (H, W)))[:, ::-1])
    assert 1 > s1 > s2 > 0


@pytest.mark.parametrize("method", ["gaussian", "bilateral"])
def test_smoothing_only_reads_the_filters_reach_around_the_region(method):
    rng = np.random.default_rng(6)
    label = rng.normal(0, 1, (H, W)).astype(np.float32)
    region = box(20, 26, 28, 36)
    out = C.smooth_region(label, region, sigma=1.5, method=method, range_sigma=1.0)
    far = label.copy()
    far[:, :10] = 1e3                                     # more than 4 sigma from the region
    far[40:, :] = -1e3
    out_far = C.smooth_region(far, region, sigma=1.5, method=method, range_sigma=1.0)
    np.testing.assert_array_equal(out[region], out_far[region])
    near = label.copy()
    near[20:26, 26] = 1e3                                 # within reach: must change the result
    assert not np.array_equal(C.smooth_region(near, region, sigma=1.5, method=method, range_sigma=1.0)[region],
                              out[region])
