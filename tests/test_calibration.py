"""Calibration to metres: a ray-cast room (floor, back wall, box) whose label is disparity with a known
scale and shift; which references recover the true depths, and which sets are refused and why."""
from __future__ import annotations

import numpy as np
import pytest
from synthetic_geometry import room

from pipeline.geometry.calibration import (
    CalibrationError,
    CameraHeight,
    KnownDepth,
    KnownDistance,
    RightAngle,
    calibrate,
)

S0, T0 = 2.0, 0.1                     # the label's unknown truth: 1/Z = S0 * label + T0


@pytest.fixture(scope="module")
def scene():
    return room()


def _label(depth, s0=S0, t0=T0):
    return ((1.0 / depth - t0) / s0).astype(np.float32)


def _distance(scene, a, b) -> float:
    """What a tape measure says between the surfaces seen at pixels a and b (x, y)."""
    pa, pb = scene.points[a[1], a[0]], scene.points[b[1], b[0]]
    return float(np.linalg.norm(pa - pb))


BOX, FLOOR, WALL = (60, 55), (20, 90), (110, 10)     # (x, y) pixels on the box face, the floor, the back wall


def _rel_error(depth, truth):
    return np.abs(depth / truth - 1.0)


def test_the_test_points_are_where_the_tests_say(scene):
    assert scene.box[BOX[1], BOX[0]] and scene.floor[FLOOR[1], FLOOR[0]] and scene.wall[WALL[1], WALL[0]]


def test_two_known_depths_fix_scale_and_shift_exactly(scene):
    refs = [KnownDepth(float(scene.depth[BOX[1], BOX[0]]), point=BOX),
            KnownDepth(float(scene.depth[WALL[1], WALL[0]]), point=WALL)]
    cal = calibrate(_label(scene.depth), "disparity", refs, focal_px=scene.focal)
    assert cal.scale == pytest.approx(S0, rel=1e-6) and cal.shift == pytest.approx(T0, rel=1e-5)
    assert _rel_error(cal.depth, scene.depth).max() < 1e-5
    assert all(abs(r["residual_m"]) < 1e-6 for r in cal.references)
    assert cal.formula.startswith("depth = 1 / (2 * label + 0.1")


def test_one_known_distance_plus_a_right_angle_recovers_depths_within_2_percent(scene):
    """The realistic single-measurement use with the shift free: one tape measure + floor and wall painted."""
    refs = [KnownDistance(BOX, FLOOR, _distance(scene, BOX, FLOOR)), RightAngle(scene.floor, scene.wall)]
    cal = calibrate(_label(scene.depth), "disparity", refs, focal_px=scene.focal)
    assert _rel_error(cal.depth, scene.depth).max() < 0.02
    assert cal.shift == pytest.approx(T0, rel=1e-3)
    assert cal.references[1]["fitted_deg"] == pytest.approx(90.0, abs=1e-3)


def test_one_known_distance_with_zero_shift_is_exact_when_the_label_has_no_shift(scene):
    label = _label(scene.depth, t0=0.0)
    cal = calibrate(label, "disparity", [KnownDistance(BOX, FLOOR, _distance(scene, BOX, FLOOR))],
                    focal_px=scene.focal, assume_zero_shift=True)
    assert cal.zero_shift_assumed and cal.shift == 0.0
    assert _rel_error(cal.depth, scene.depth).max() < 0.02


@pytest.mark.parametrize("make_ref", [lambda sc: CameraHeight(sc.floor, sc.height),
                                      lambda sc: KnownDepth(float(np.median(sc.depth[sc.wall])), region=sc.wall)])
def test_any_single_length_fixes_the_scale_when_the_shift_is_zero(scene, make_ref):
    cal = calibrate(_label(scene.depth, t0=0.0), "disparity", [make_ref(scene)], focal_px=scene.focal,
                    assume_zero_shift=True)
    assert _rel_error(cal.depth, scene.depth).max() < 1e-4


def test_zero_shift_is_an_assumption_that_is_wrong_when_the_label_has_a_shift(scene):
    """Why it is an explicit option: the same single distance with a shifted label misplaces other depths."""
    cal = calibrate(_label(scene.depth), "disparity", [KnownDistance(BOX, FLOOR, _distance(scene, BOX, FLOOR))],
                    focal_px=scene.focal, assume_zero_shift=True)
    assert _rel_error(cal.depth, scene.depth).max() > 0.2


def test_camera_height_plus_one_distance(scene):
    refs = [CameraHeight(scene.floor, scene.height), KnownDistance(BOX, WALL, _distance(scene, BOX, WALL))]
    cal = calibrate(_label(scene.depth), "disparity", refs, focal_px=scene.focal)
    assert _rel_error(cal.depth, scene.depth).max() < 0.02
    assert cal.references[0]["fitted_m"] == pytest.approx(scene.height, rel=1e-6)


def test_the_fitted_floor_is_where_the_camera_height_says(scene):
    """CameraHeight's closed form agrees with back-projecting the calibrated floor and fitting a 3D plane."""
    refs = [CameraHeight(scene.floor, scene.height), RightAngle(scene.floor, scene.wall)]
    cal = calibrate(_label(scene.depth), "disparity", refs, focal_px=scene.focal)
    from pipeline.geometry.pointcloud import backproject
    pts = backproject(cal.depth, scene.focal)[scene.floor].astype(np.float64)   # (N, 3)
    centred = pts - pts.mean(0)
    normal = np.linalg.svd(centred, full_matrices=False)[2][-1]
    assert abs(pts.mean(0) @ normal) == pytest.approx(scene.height, rel=1e-4)
    assert _rel_error(cal.depth, scene.depth).max() < 0.02


def test_two_known_distances(scene):
    refs = [KnownDistance(BOX, FLOOR, _distance(scene, BOX, FLOOR)),
            KnownDistance(FLOOR, WALL, _distance(scene, FLOOR, WALL))]
    cal = calibrate(_label(scene.depth), "disparity", refs, focal_px=scene.focal)
    assert _rel_error(cal.depth, scene.depth).max() < 0.02


def test_region_depth_is_the_regions_median(scene):
    wall_depth = float(np.median(scene.depth[scene.wall]))
    refs = [KnownDepth(wall_depth, region=scene.wall), KnownDepth(float(scene.depth[BOX[1], BOX[0]]), point=BOX)]
    cal = calibrate(_label(scene.depth), "disparity", refs, focal_px=scene.focal)
    assert _rel_error(cal.depth, scene.depth).max() < 1e-4
    assert cal.references[0]["region_pixels"] == int(scene.wall.sum())


def test_an_off_centre_principal_point_is_used():
    scene = room(principal=(70.0, 40.0))
    refs = [KnownDistance(BOX, FLOOR, _distance(scene, BOX, FLOOR)), RightAngle(scene.floor, scene.wall)]
    cal = calibrate(_label(scene.depth), "disparity", refs, focal_px=scene.focal, principal=(70.0, 40.0))
    assert _rel_error(cal.depth, scene.depth).max() < 1e-3
    centred = calibrate(_label(scene.depth), "disparity", refs, focal_px=scene.focal)
    assert _rel_error(centred.depth, scene.depth).max() > 1e-2


def test_a_metric_prediction_is_rescaled_by_one_reference(scene):
    pred = (1.3 * scene.depth).astype(np.float32)
    cal = calibrate(pred, "metric_depth", [KnownDistance(BOX, FLOOR, _distance(scene, BOX, FLOOR))],
                    focal_px=scene.focal)
    assert cal.scale == pytest.approx(1 / 1.3, rel=1e-5) and cal.shift == 0.0
    assert _rel_error(cal.depth, scene.depth).max() < 1e-5
    assert cal.formula.startswith("depth = 0.769231 * prediction")


def test_noisy_label_and_several_references_still_within_2_percent(scene):
    rng = np.random.default_rng(0)
    label = _label(scene.depth) * (1.0 + 0.01 * rng.standard_normal(scene.depth.shape)).astype(np.float32)
    refs = [KnownDistance(BOX, FLOOR, _distance(scene, BOX, FLOOR), window=2),
            CameraHeight(scene.floor, scene.height), RightAngle(scene.floor, scene.wall)]
    cal = calibrate(label, "disparity", refs, focal_px=scene.focal)
    err = _rel_error(cal.depth, scene.depth)
    assert np.median(err) < 0.02                                            # per-pixel noise stays in the depths
    assert cal.scale == pytest.approx(S0, rel=0.01) and cal.shift == pytest.approx(T0, rel=0.01)


# ----------------------------------------------------------------------------- refused sets

def test_one_known_distance_alone_is_refused_with_what_to_add(scene):
    with pytest.raises(CalibrationError, match="two unknowns.*second reference.*assume zero shift"):
        calibrate(_label(scene.depth), "disparity", [KnownDistance(BOX, FLOOR, 2.0)], focal_px=scene.focal)


def test_angles_alone_cannot_fix_the_scale(scene):
    with pytest.raises(CalibrationError, match="nothing here fixes the scale"):
        calibrate(_label(scene.depth), "disparity", [RightAngle(scene.floor, scene.wall)], focal_px=scene.focal)


def test_two_depths_at_the_same_label_value_are_degenerate(scene):
    label = _label(scene.depth)
    label[5, 5] = label[10, 100]
    refs = [KnownDepth(4.0, point=(5, 5)), KnownDepth(4.0, point=(100, 10))]
    with pytest.raises(CalibrationError, match="do not fix the shift"):
        calibrate(label, "disparity", refs, focal_px=scene.focal)


def test_two_distances_with_two_exact_solutions_are_refused_and_a_right_angle_settles_it(scene):
    """Distances are nonlinear in the shift: these two are met exactly by the true shift and by a second one."""
    other = (45, 40)
    refs = [KnownDistance(BOX, FLOOR, _distance(scene, BOX, FLOOR)), KnownDistance(BOX, other, _distance(scene, BOX, other))]
    with pytest.raises(CalibrationError, match="two different calibrations fit.*add one more reference"):
        calibrate(_label(scene.depth), "disparity", refs, focal_px=scene.focal)
    cal = calibrate(_label(scene.depth), "disparity", refs + [RightAngle(scene.floor, scene.wall)], focal_px=scene.focal)
    assert _rel_error(cal.depth, scene.depth).max() < 1e-4


def test_inconsistent_references_are_refused_naming_the_worst(scene):
    near, far = float(scene.depth[BOX[1], BOX[0]]), float(scene.depth[WALL[1], WALL[0]])
    refs = [KnownDepth(far, point=BOX), KnownDepth(near, point=WALL)]     # swapped: nearer label, farther depth
    with pytest.raises(CalibrationError, match="references disagree.*depth #"):
        calibrate(_label(scene.depth), "disparity", refs, focal_px=scene.focal)
    refs = [KnownDistance(BOX, FLOOR, _distance(scene, BOX, FLOOR)), CameraHeight(scene.floor, scene.height),
            KnownDistance(FLOOR, WALL, 3 * _distance(scene, FLOOR, WALL))]
    with pytest.raises(CalibrationError, match="references disagree"):
        calibrate(_label(scene.depth), "disparity", refs, focal_px=scene.focal)


@pytest.mark.parametrize("ref, message", [
    (KnownDistance((500, 5), FLOOR, 1.0), "outside the 128x96 image"),
    (KnownDistance(BOX, FLOOR, -1.0), "positive number of metres"),
    (KnownDepth(2.0), "either a point or a region"),
    (CameraHeight(np.zeros((96, 128), bool), 1.5), "covers no pixel"),
    (CameraHeight(np.eye(96, 128, dtype=bool), 1.5), "not a line"),
    (CameraHeight(np.zeros((10, 10), bool), 1.5), "paint it on this image"),
])
def test_bad_references_get_a_one_line_reason(scene, ref, message):
    with pytest.raises(CalibrationError, match=message):
        calibrate(_label(scene.depth), "disparity", [ref, RightAngle(scene.floor, scene.wall)], focal_px=scene.focal)


def test_a_point_without_a_label_value_is_refused(scene):
    label = _label(scene.depth)
    label[FLOOR[1], FLOOR[0]] = np.nan
    with pytest.raises(CalibrationError, match="no value at"):
        calibrate(label, "disparity", [KnownDepth(3.0, point=FLOOR)], focal_px=scene.focal, assume_zero_shift=True)


def test_pixels_beyond_the_calibrated_horizon_get_no_depth(scene):
    label = _label(scene.depth)
    label[0, :4] = -1.0                                                     # far below every real value
    refs = [KnownDepth(float(scene.depth[BOX[1], BOX[0]]), point=BOX),
            KnownDepth(float(scene.depth[WALL[1], WALL[0]]), point=WALL)]
    cal = calibrate(label, "disparity", refs, focal_px=scene.focal)
    assert cal.beyond_horizon == 4 and np.isnan(cal.depth[0, :4]).all()
    assert cal.summary()["beyond_horizon"] == 4 and "depth" not in cal.summary()
