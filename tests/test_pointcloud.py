"""pointcloud: known pixels to known XYZ, planes, the disparity assumption, focal priority, .ply round trip."""
from __future__ import annotations

import math

import numpy as np
import open3d as o3d
import pytest

from pipeline.errors import ConfigError
from pipeline.geometry.pointcloud import (
    DISPARITY_NOTE,
    METRIC_NOTE,
    depth_for_point_cloud,
    focal_from_fov,
    make_point_cloud,
    point_cloud_note,
    resolve_focal,
    write_ply,
)


def _rgb(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _points(pcd):
    return np.asarray(pcd.points), np.asarray(pcd.colors)


def test_known_pixel_maps_to_known_xyz():
    depth = np.ones((4, 6), np.float32)
    depth[1, 4] = 3.0
    rgb = _rgb(4, 6)
    pts, cols = _points(make_point_cloud(rgb, depth, "metric_depth", focal_px=10.0))
    i = 1 * 6 + 4                                                             # row-major pixel order
    np.testing.assert_allclose(pts[i], [(4.5 - 3.0) / 10 * 3.0, (1.5 - 2.0) / 10 * 3.0, 3.0], rtol=1e-6)
    np.testing.assert_allclose(cols[i], rgb[1, 4] / 255.0)
    gl, _ = _points(make_point_cloud(rgb, depth, "metric_depth", focal_px=10.0, axes="opengl"))
    np.testing.assert_allclose(gl[i], [0.45, 0.15, -3.0], rtol=1e-6)
    with pytest.raises(ConfigError, match="unknown axes"):
        make_point_cloud(rgb, depth, "metric_depth", axes="blender")


def test_constant_metric_depth_is_a_fronto_parallel_plane_at_that_depth():
    h, w, f, z = 30, 40, 50.0, 2.5
    pts, _ = _points(make_point_cloud(_rgb(h, w), np.full((h, w), z, np.float32), "metric_depth", focal_px=f))
    assert len(pts) == h * w
    np.testing.assert_allclose(pts[:, 2], z)
    np.testing.assert_allclose(pts[:, 0].max(), (w - 0.5 - w / 2) / f * z, rtol=1e-6)  # right edge
    np.testing.assert_allclose(pts[:, 1].min(), (0.5 - h / 2) / f * z, rtol=1e-6)       # top edge (y down)
    np.testing.assert_allclose(pts[:, 0].mean(), 0.0, atol=1e-6)             # centred principal point


def test_constant_disparity_gives_a_plane_at_median_depth_one():
    pts, _ = _points(make_point_cloud(_rgb(10, 12), np.full((10, 12), 0.37, np.float32), "disparity",
                                      focal_px=20.0))
    np.testing.assert_allclose(pts[:, 2], 1.0, rtol=1e-6)


def test_disparity_is_inverse_depth_with_far_points_clipped():
    d = np.array([[4.0, 2.0, 1.0, 1.0, 0.0]], np.float32).repeat(2, axis=0)
    z = depth_for_point_cloud(d, "disparity", far_percentile=100.0)
    # 1/d = [0.25, 0.5, 1, 1, inf]; median over positive = 0.75; the zero is put at the far limit (1)
    np.testing.assert_allclose(z[0], np.array([0.25, 0.5, 1.0, 1.0, 1.0]) / 0.75, rtol=1e-6)
    assert z[0, 0] / z[0, 1] == pytest.approx(0.5)  # depth ratio = 1 / disparity ratio
    z90 = depth_for_point_cloud(np.arange(1, 101, dtype=np.float32)[None], "disparity", far_percentile=90.0)
    far = np.percentile(1.0 / np.arange(1, 101), 90) / np.median(1.0 / np.arange(1, 101))
    assert z90.max() == pytest.approx(far, rel=1e-5)
    assert (z90 == z90.max()).sum() >= 10                                     # the far tail sits on the limit
    with pytest.raises(ConfigError, match="no positive disparity"):
        depth_for_point_cloud(np.zeros((3, 3)), "disparity")


def test_invalid_values_are_dropped():
    metric = np.array([[1.0, np.nan], [0.0, 2.0]], np.float32)               # NaN and 0 m: no point
    pts, cols = _points(make_point_cloud(_rgb(2, 2), metric, "metric_depth", focal_px=2.0))
    np.testing.assert_allclose(pts[:, 2], [1.0, 2.0])
    np.testing.assert_allclose(cols * 255, _rgb(2, 2)[[0, 1], [0, 1]], atol=1e-9)
    disp = np.array([[1.0, np.inf], [2.0, np.nan]], np.float32)
    assert len(make_point_cloud(_rgb(2, 2), disp, "disparity").points) == 2


def test_focal_priority_given_exif_fov():
    assert focal_from_fov(770, 518) == pytest.approx(385 / math.tan(math.radians(30)))
    assert focal_from_fov(518, 770) == focal_from_fov(770, 518)              # longer side, any orientation
    assert focal_from_fov(100, 50, fov_deg=90) == pytest.approx(50.0)
    assert resolve_focal(100, 50, 123.0, 456.0) == (123.0, "given")
    assert resolve_focal(100, 50, None, 456.0) == (456.0, "exif")
    assert resolve_focal(100, 50)[0] == pytest.approx(focal_from_fov(100, 50))
    with pytest.raises(ConfigError, match="positive"):
        resolve_focal(100, 50, -5.0)
    with pytest.raises(ConfigError, match="field of view"):
        focal_from_fov(10, 10, 180)
    default = make_point_cloud(_rgb(5, 8), np.full((5, 8), 1.0, np.float32), "metric_depth")
    np.testing.assert_allclose(np.asarray(default.points)[7, 0], 3.5 / focal_from_fov(8, 5), rtol=1e-6)


def test_ply_round_trip_through_open3d(tmp_path):
    rgb = _rgb(20, 30, seed=3)
    depth = np.random.default_rng(4).uniform(0.5, 9.0, (20, 30)).astype(np.float32)
    pcd = make_point_cloud(rgb, depth, "metric_depth", focal_px=25.0)
    path = write_ply(tmp_path / "cloud.ply", pcd)
    assert path == tmp_path / "cloud.ply"
    assert path.read_bytes().startswith(b"ply\nformat binary_little_endian 1.0\n")
    back = o3d.io.read_point_cloud(str(path))
    np.testing.assert_allclose(np.asarray(back.points), np.asarray(pcd.points), rtol=1e-6)
    np.testing.assert_array_equal(np.rint(np.asarray(back.colors) * 255), rgb.reshape(-1, 3))
    pcd.estimate_normals()
    back = o3d.io.read_point_cloud(str(write_ply(tmp_path / "n.ply", pcd)))
    np.testing.assert_allclose(np.asarray(back.normals), np.asarray(pcd.normals), atol=1e-6)


def test_voxel_downsample_outliers_and_cap():
    h, w = 40, 40
    depth = np.full((h, w), 2.0, np.float32)
    depth[0, 0] = 50.0                                                        # one stray far point
    rgb = _rgb(h, w)
    full = make_point_cloud(rgb, depth, "metric_depth", focal_px=40.0)
    clean = make_point_cloud(rgb, depth, "metric_depth", focal_px=40.0, remove_outliers=True)
    assert np.asarray(full.points)[:, 2].max() == 50.0 and np.asarray(clean.points)[:, 2].max() == 2.0
    voxel = make_point_cloud(rgb, depth, "metric_depth", focal_px=40.0, voxel_size=0.2)
    # pixel pitch at 2 m is 0.05 m: 0.2 m voxels hold about 4 x 4 points each
    assert 60 <= len(voxel.points) <= 150
    capped = make_point_cloud(rgb, depth, "metric_depth", focal_px=40.0, max_points=100)
    again = make_point_cloud(rgb, depth, "metric_depth", focal_px=40.0, max_points=100)
    assert len(capped.points) == 100
    np.testing.assert_array_equal(np.asarray(capped.points), np.asarray(again.points))


def test_notes_and_bad_arguments():
    assert point_cloud_note("metric_depth") == METRIC_NOTE
    assert "zero shift" in point_cloud_note("disparity") and "98th percentile" in point_cloud_note("disparity")
    assert DISPARITY_NOTE.startswith("Relative model")
    with pytest.raises(ConfigError, match="must be uint8"):
        make_point_cloud(_rgb(3, 4), np.ones((4, 3)), "metric_depth")
    with pytest.raises(ConfigError, match="unknown prediction kind"):
        make_point_cloud(_rgb(3, 4), np.ones((3, 4)), "depth")
    from pipeline.errors import StudioError
    with pytest.raises(StudioError, match="cannot write"):
        write_ply("/nonexistent-folder/x.ply", o3d.geometry.PointCloud())


def test_rays_are_the_back_projection_at_depth_one_and_follow_the_principal_point():
    from pipeline.geometry.pointcloud import backproject, pixel_rays, rays_at
    h, w, f = 5, 7, 3.0
    pts = backproject(np.ones((h, w), np.float32), f)
    x, y = pixel_rays((h, w), f)
    np.testing.assert_allclose(pts[..., 0], np.broadcast_to(x, (h, w)), rtol=1e-6)
    np.testing.assert_allclose(pts[..., 1], np.broadcast_to(y[:, None], (h, w)), rtol=1e-6)
    np.testing.assert_allclose(rays_at([(6, 4), (0, 0)], (h, w), f), pts[[4, 0], [6, 0]], rtol=1e-6)
    shifted = backproject(np.ones((h, w), np.float32), f, principal=(0.5, 0.5))
    np.testing.assert_allclose(shifted[0, 0], [0.0, 0.0, 1.0], atol=1e-7)      # the principal pixel looks straight ahead
    with pytest.raises(ConfigError, match="principal point"):
        pixel_rays((h, w), f, principal=(math.nan, 1.0))
    cloud = make_point_cloud(_rgb(h, w), np.full((h, w), 2.0, np.float32), "metric_depth", focal_px=f,
                             principal=(0.5, 0.5))
    np.testing.assert_allclose(np.asarray(cloud.points)[0], [0.0, 0.0, 2.0], atol=1e-6)
