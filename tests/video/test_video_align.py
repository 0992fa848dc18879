"""pipeline.video.align: per-frame scale and shift recovered from known distortions."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage
from skimage.data import astronaut

from pipeline.video.align import AlignParams, TemporalAligner, fit_scale_shift


def smooth_field(shape, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (ndimage.gaussian_filter(rng.normal(size=shape), 6) * 20 + 3).astype(np.float32)


def run(aligner, preds, rgbs=None):
    out = []
    for i, p in enumerate(preds):
        s, b = aligner.align(p, None if rgbs is None else rgbs[i])
        out.append((s, b, s * p.astype(np.float64) + b))
    return out


def test_fit_recovers_an_affine_map_despite_outliers():
    rng = np.random.default_rng(1)
    x = rng.uniform(0, 5, 4000)
    y = 2.5 * x - 0.7
    y[:1200] += rng.uniform(3, 9, 1200)                            # 30 % outliers (a moving object)
    s, b = fit_scale_shift(x, y)
    assert s == pytest.approx(2.5, rel=1e-6) and b == pytest.approx(-0.7, abs=1e-6)


def test_fit_degenerate_input_stays_finite_and_positive():
    s, b = fit_scale_shift(np.ones(100), np.ones(100) * 3)
    assert np.isfinite([s, b]).all() and s > 0
    assert fit_scale_shift(np.arange(5.0), np.arange(5.0)) == (1.0, 0.0)        # too few pairs: unchanged


def test_static_scene_every_frame_is_brought_to_the_first_frames_scale():
    truth = smooth_field((60, 80))
    a = [1.0, 0.6, 1.7, 0.9, 2.2, 1.3]
    b = [0.0, 0.4, -1.0, 2.0, 0.5, -0.3]
    preds = [(ai * truth + bi).astype(np.float32) for ai, bi in zip(a, b, strict=True)]
    out = run(TemporalAligner("disparity", AlignParams(motion=False)), preds)
    for (s, shift, aligned), ai, bi in zip(out, a, b, strict=True):
        assert s == pytest.approx(1 / ai, rel=1e-4) and shift == pytest.approx(-bi / ai, abs=1e-3)
        np.testing.assert_allclose(aligned, truth, atol=1e-3)


def test_a_moving_object_does_not_pull_the_fit():
    truth = smooth_field((60, 80))
    preds, a = [], [1.0, 0.5, 1.5, 0.8]
    for t, ai in enumerate(a):
        frame = truth.copy()
        frame[30:50, 10 * t:10 * t + 20] = 60.0                    # a near object moving right
        preds.append((ai * frame + 1.0).astype(np.float32))
    out = run(TemporalAligner("disparity", AlignParams(motion=False)), preds)
    assert [round(s, 4) for s, _, _ in out] == pytest.approx([1 / ai for ai in a], rel=1e-3)


def test_panning_camera_is_compared_on_the_overlap():
    photo = astronaut()[::2, ::2]                                  # (256, 256, 3)
    depth = smooth_field(photo.shape[:2], seed=3)
    a = [1.0, 0.7, 1.4, 0.9, 1.2]
    rgbs, preds = [], []
    for t, ai in enumerate(a):
        x = 6 * t
        rgbs.append(np.ascontiguousarray(photo[40:200, x:x + 180]))
        preds.append((ai * depth[40:200, x:x + 180] + 0.5).astype(np.float32))
    moving = run(TemporalAligner("disparity", AlignParams(grid=180)), preds, rgbs)
    assert [s for s, _, _ in moving] == pytest.approx([1 / ai for ai in a], rel=2e-3)
    still = run(TemporalAligner("disparity", AlignParams(grid=180, motion=False)), preds, rgbs)
    err = lambda out: max(abs(s * ai - 1) for (s, _, _), ai in zip(out, a, strict=True))  # noqa: E731
    assert err(moving) < err(still) / 5                            # the motion estimate is what makes it exact


def test_metric_depth_is_left_in_metres():
    preds = [smooth_field((30, 40)) * k for k in (1.0, 2.0, 0.5)]
    out = run(TemporalAligner("metric_depth"), preds)
    assert [(s, b) for s, b, _ in out] == [(1.0, 0.0)] * 3
