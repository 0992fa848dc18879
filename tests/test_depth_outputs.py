"""pipeline.services.depth_outputs: the viewer's light cloud keeps the full camera, exports are built once, ids are checked."""
from __future__ import annotations

import json

import numpy as np
import open3d as o3d
import pytest

from pipeline.errors import ConfigError
from pipeline.geometry import pointcloud
from pipeline.services import depth_outputs
from pipeline.services.depth_outputs import DepthSource, RequestGone


def scene(h=61, w=83, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    depth = (2.0 + 0.02 * xx + 0.05 * yy + 0.1 * np.sin(xx / 5.0)).astype(np.float32)   # (H, W) metres
    return rng.integers(0, 255, (h, w, 3), dtype=np.uint8), depth


@pytest.mark.parametrize("step_points", [(1, 10_000), (2, 1500), (3, 600)])
def test_viewer_cloud_points_are_the_full_clouds_points_of_the_strided_pixels(step_points):
    """Exact intrinsics: each light point is where the full-resolution cloud puts that pixel (metres)."""
    step, max_points = step_points
    rgb, depth = scene()
    focal = 70.0
    pcd, got_step = pointcloud.strided_cloud(rgb, depth, "metric_depth", focal, max_points)
    assert got_step == step
    full = pointcloud.backproject(depth, focal, pointcloud.VIEWER_AXES)                # (H, W, 3)
    expected = full[::step, ::step].reshape(-1, 3)
    assert np.allclose(np.asarray(pcd.points), expected, atol=1e-5)
    assert np.allclose(np.asarray(pcd.colors) * 255, rgb[::step, ::step].reshape(-1, 3), atol=0.5)


def test_relative_viewer_cloud_shares_the_full_clouds_scale():
    rgb, depth = scene()
    disparity = 1.0 / depth
    pcd, step = pointcloud.strided_cloud(rgb, disparity, "disparity", 70.0, 1500)
    full = pointcloud.make_point_cloud(rgb, disparity, "disparity", focal_px=70.0, axes=pointcloud.VIEWER_AXES)
    full_points = np.asarray(full.points).reshape(61, 83, 3)
    assert step == 2 and np.allclose(np.asarray(pcd.points), full_points[::2, ::2].reshape(-1, 3), atol=1e-5)


def test_strided_principal_point():
    assert pointcloud.strided_principal(83, 61, 1) == (41.5, 30.5)
    cx, cy = pointcloud.strided_principal(80, 60, 4)
    assert (cx, cy) == ((40 - 0.5) / 4 + 0.5, (30 - 0.5) / 4 + 0.5)


def test_exports_are_built_once_and_unknown_ones_refused(tmp_path, monkeypatch):
    rgb, depth = scene()
    calls = []
    source = DepthSource(rgb, depth, "metric_depth", 70.0, meta={"model": "m"})

    def src():
        calls.append(1)
        return source
    built = depth_outputs.write_exports(src, tmp_path, "scene", ["exr", "gray", "exr"])
    assert list(built) == ["exr", "gray"] and [p.name for p in built["exr"]] == ["scene_depth.exr"]
    from pipeline.files.exports import read_exr
    back = read_exr(built["exr"][0])
    assert np.array_equal(back.array, depth) and back.kind == "metric_depth" and back.meta["model"] == "m"
    before = built["exr"][0].stat().st_mtime_ns
    depth_outputs.write_exports(src, tmp_path, "scene", ["exr", "gray"])
    assert calls == [1] and built["exr"][0].stat().st_mtime_ns == before          # second ask: nothing rebuilt
    with pytest.raises(ConfigError, match="unknown export 'tiff'; choose from ply, exr, glb, normals, gray"):
        depth_outputs.write_exports(src, tmp_path, "scene", ["tiff"])


def test_request_ids_are_checked_and_gone_requests_say_so(tmp_path):
    for bad in ("../../etc", "20261130-082631-99ded15a/../x", "", None):
        with pytest.raises(RequestGone, match="is not a request id"):
            depth_outputs.open_request(tmp_path, bad)
    with pytest.raises(RequestGone, match="is gone"):
        depth_outputs.open_request(tmp_path, "20261130-082631-99ded15a")
    folder = tmp_path / "20261130-082631-99ded15a"
    folder.mkdir()
    (folder / depth_outputs.REQUEST_FILE).write_text(json.dumps({"id": "x"}))
    with pytest.raises(RequestGone, match="cannot be read"):
        depth_outputs.open_request(tmp_path, folder.name)


def test_colour_range_limits_are_checked():
    assert depth_outputs.check_range(None, 3) == (None, 3.0)
    with pytest.raises(ConfigError, match="needs its lower limit below its upper one, got 5 and 2"):
        depth_outputs.check_range(5, 2)
    with pytest.raises(ConfigError, match="colour range limit must be a number"):
        depth_outputs.check_range(float("nan"), None)
    assert depth_outputs.check_range("", 0) == (None, 0.0)               # empty: the data's own; 0 is a limit
    with pytest.raises(ConfigError, match="colour range limit must be a number .* got 'lots'"):
        depth_outputs.check_range("lots", None)                          # what an API client may send


@pytest.mark.parametrize("kind, values", [
    ("disparity", [0.5, 2.0, np.nan, np.inf, 0.0, -1.0]),        # zero and negative: the far plane, kept
    ("metric_depth", [1.5, 4.0, np.nan, -np.inf, 0.0, -2.0]),     # only finite positive metres
    ("disparity", [0.0, -1.0, np.nan]),                          # no positive disparity: no cloud
    ("metric_depth", [0.0, -3.0, np.nan]),                       # no usable depth: no cloud
])
def test_the_count_predict_reports_is_the_cloud_made_later(tmp_path, kind, values):
    """viewer_cloud_size (what /predict puts in its summary without building the cloud) gives the
    points, stride and note of the cloud write_viewer_cloud makes when the page asks."""
    rng = np.random.default_rng(3)
    array = rng.choice(np.asarray(values, np.float32), size=(37, 51))
    rgb = rng.integers(0, 255, (37, 51, 3), dtype=np.uint8)
    counted = depth_outputs.viewer_cloud_size(array, kind, 400)
    made = depth_outputs.write_viewer_cloud(tmp_path / "v.ply", rgb, array, kind, 40.0, 400)
    assert counted == made and counted[1] == 3
    if counted[0]:
        pcd = o3d.io.read_point_cloud(str(tmp_path / "v.ply"))
        assert len(pcd.points) == counted[0]
    else:
        assert not (tmp_path / "v.ply").exists() and counted[2].startswith("No point cloud:")
