"""Measuring: distances between pixels of a ray-cast room match the scene's own 3D points; field of view <-> focal."""
from __future__ import annotations

import math

import numpy as np
import pytest
from synthetic_geometry import room

from pipeline.geometry.measure import (
    MeasureError,
    depth_at,
    distance_between,
    field_of_view,
    focal_from_fov,
    fov_from_focal,
    point_at,
    require_metric,
)


@pytest.fixture(scope="module")
def scene():
    return room()


def test_distance_between_two_pixels_is_the_scenes_3d_distance(scene):
    a, b = (60, 55), (20, 90)
    m = distance_between(scene.depth, a, b, scene.focal)
    truth = np.linalg.norm(scene.points[55, 60] - scene.points[90, 20])
    assert m.distance_m == pytest.approx(truth, rel=1e-9)
    np.testing.assert_allclose(m.a, scene.points[55, 60], rtol=1e-9)
    assert m.depth_b_m == pytest.approx(scene.depth[90, 20])


def test_hand_computed_distance_and_principal_point():
    depth = np.full((4, 6), 2.0)
    # pixel (x=0, y=0) centre is at (0.5 - 3, 0.5 - 2) / f; with f = 1: ray (-2.5, -1.5, 1)
    np.testing.assert_allclose(point_at(depth, (0, 0), 1.0), [-5.0, -3.0, 2.0])
    np.testing.assert_allclose(point_at(depth, (0, 0), 1.0, principal=(0.5, 0.5)), [0.0, 0.0, 2.0])
    assert distance_between(depth, (0, 0), (5, 0), 2.0).distance_m == pytest.approx(5.0)   # 5 px * 2 m / 2 px


def test_depth_under_a_pixel_with_a_window_and_without_depth():
    depth = np.array([[1.0, 2.0, 3.0], [4.0, np.nan, 6.0], [7.0, 8.0, 0.0]])
    assert depth_at(depth, (0, 0)) == 1.0
    assert depth_at(depth, (1, 1)) is None
    assert depth_at(depth, (1, 1), window=1) == pytest.approx(np.median([1, 2, 3, 4, 6, 7, 8]))
    assert depth_at(depth, (2.4, 2.2)) is None                                 # 0 m is no depth; rounds to (2, 2)
    with pytest.raises(MeasureError, match="no depth at"):
        distance_between(depth, (1, 1), (0, 0), 1.0)
    with pytest.raises(MeasureError, match="outside the 3x3 image"):
        depth_at(depth, (3, 0))


def test_relative_predictions_cannot_be_measured_and_say_why():
    with pytest.raises(MeasureError, match="relative model.*scale and shift.*calibrate"):
        distance_between(np.ones((2, 2)), (0, 0), (1, 1), 1.0, kind="disparity")
    require_metric("metric_depth")


def test_field_of_view_and_focal_are_inverse():
    f = focal_from_fov(640, 480, 60.0)
    assert f == pytest.approx(320 / math.tan(math.radians(30)))
    assert fov_from_focal(640, 480, f) == pytest.approx(60.0)
    fov = field_of_view(640, 480, f)
    assert fov["horizontal_deg"] == pytest.approx(60.0) and fov["longer_side_deg"] == pytest.approx(60.0)
    assert fov["vertical_deg"] == pytest.approx(math.degrees(2 * math.atan(240 / f)))
    assert fov["diagonal_deg"] == pytest.approx(math.degrees(2 * math.atan(400 / f)))
    assert fov_from_focal(480, 640, focal_from_fov(480, 640, 45.0)) == pytest.approx(45.0)   # portrait: longer side
    with pytest.raises(MeasureError, match="positive number of pixels"):
        field_of_view(640, 480, 0.0)
