"""pipeline.services.depth_results: what a finished request offers (re-colour, legend, measure, exports), no network re-run."""
from __future__ import annotations

import zipfile

import numpy as np
import pytest
from PIL import Image

from pipeline.errors import ConfigError
from pipeline.geometry import measure, pointcloud
from pipeline.services import depth_outputs
from pipeline.services.depth_outputs import RequestGone


@pytest.fixture
def metric_result(metric_service, small_rgb):
    return metric_service.run(small_rgb, input_size=70, focal_px=90.0)


def test_recolour_clips_the_range_and_remembers_it(metric_service, metric_result):
    rid, a = metric_result.summary["request"], metric_result.array
    lo, hi = float(np.percentile(a, 10)), float(np.percentile(a, 90))
    path, legend = metric_service.results.recolour(rid, "viridis", lo, hi)
    expected = depth_outputs.colour_picture(a, "metric_depth", "viridis", lo, hi)
    with Image.open(path) as picture:
        assert picture.mode == "P" and np.array_equal(np.asarray(picture.convert("RGB")), np.asarray(expected.convert("RGB")))
    assert legend["clipped"] and legend["bar"]["ticks"][0] == (0.0, f"{lo:.4g}")
    assert legend["histogram"]["below"] > 0 and legend["histogram"]["above"] > 0
    record = metric_service.results.open(rid).record
    assert (record.cmap, record.vmin, record.vmax) == ("viridis", lo, hi)
    with pytest.raises(ConfigError, match="lower limit below its upper one"):
        metric_service.results.recolour(rid, "viridis", hi, lo)
    with pytest.raises(ConfigError, match="unknown colour map"):
        metric_service.results.recolour(rid, "nope")


def test_a_recoloured_picture_gets_a_new_path_with_the_same_name(metric_service, metric_result):
    """The studio sends a request's files where they lie (Gradio static paths): what changes must move."""
    rid, a = metric_result.summary["request"], metric_result.array
    first = metric_result.files["color"]
    one, _ = metric_service.results.recolour(rid, "viridis")
    two, _ = metric_service.results.recolour(rid, "magma", None, float(np.median(a)))
    assert len({first, one, two}) == 3 and first.name == one.name == two.name == "array_depth_color.png"
    assert first.exists() and not one.exists() and not one.parent.exists()      # /predict's own picture stays
    req = metric_service.results.open(rid)
    assert req.record.recoloured == 2 and req.colour_path() == two == req.basic_files()["color"]
    expected = np.asarray(depth_outputs.colour_picture(a, "metric_depth", "magma", None, float(np.median(a)))
                          .convert("RGB"))
    assert np.array_equal(metric_service.results.colour_rgb(rid), expected)
    assert metric_service.results.files(rid)["color"] == two


def test_a_zip_is_made_once_per_set_of_files_and_follows_a_recolouring(metric_service, metric_result):
    rid = metric_result.summary["request"]
    files, zipped = metric_service.results.exports(rid, [])
    made = zipped.stat().st_mtime_ns
    again_files, again = metric_service.results.exports(rid, [])
    assert again == zipped and again.stat().st_mtime_ns == made and again.name == "array_all.zip"   # not rebuilt
    new_colour, _ = metric_service.results.recolour(rid, "viridis")
    _, after = metric_service.results.exports(rid, [])
    assert after != zipped and not zipped.exists() and after.name == "array_all.zip"
    with zipfile.ZipFile(after) as z:
        assert z.read("array_depth_color.png") == new_colour.read_bytes()
        assert sorted(z.namelist()) == sorted(p.name for p in again_files)


def test_measure_uses_the_saved_prediction_and_its_focal(metric_service, metric_result):
    rid, a = metric_result.summary["request"], metric_result.array
    m = metric_service.results.measure(rid, [(5, 7), (70, 50)])
    expected = measure.distance_between(a, (5, 7), (70, 50), 90.0, window=1)
    assert m["distance_m"] == pytest.approx(expected.distance_m) and m["unit"] == "m"
    legend = metric_service.results.legend(rid)
    assert legend["fov"]["focal_px"] == 90.0 and legend["grid"]["step"] == 1


def test_relative_results_refuse_distances(vitt_service, small_rgb):
    rid = vitt_service.run(small_rgb, input_size=70).summary["request"]
    m = vitt_service.results.measure(rid, [(1, 1), (50, 40)])
    assert m["refusal"] == measure.RELATIVE_REASON and len(m["points"]) == 2


def test_exports_in_the_formats_tools_read(metric_service, metric_result, small_rgb):
    import open3d as o3d
    import trimesh

    from pipeline.files.exports import read_exr
    rid, a = metric_result.summary["request"], metric_result.array
    files, zipped = metric_service.results.exports(rid, ["ply", "exr", "glb", "normals", "gray"])
    by_name = {p.name: p for p in files}
    stem = "array"
    assert set(by_name) == {f"{stem}{s}" for s in ("_input.jpg", "_depth_color.png", "_depth16.png", "_depth.npy",
                                                     "_points.ply", "_points_full.ply", "_depth.exr", "_mesh.glb",
                                                     "_normals.png", "_normals.npy", "_depth_gray.png")}
    assert np.array_equal(read_exr(by_name[f"{stem}_depth.exr"]).array, a)
    full = o3d.io.read_point_cloud(str(by_name[f"{stem}_points_full.ply"]))
    expected = pointcloud.backproject(a, 90.0, pointcloud.VIEWER_AXES).reshape(-1, 3)
    assert np.allclose(np.asarray(full.points), expected, atol=1e-5)                 # metres, the request's focal
    mesh = trimesh.load(by_name[f"{stem}_mesh.glb"], force="mesh")
    assert len(mesh.faces) > 0 and len(mesh.vertices) <= 60 * 80
    assert np.load(by_name[f"{stem}_normals.npy"]).shape == (60, 80, 3)
    assert np.asarray(Image.open(by_name[f"{stem}_depth_gray.png"])).dtype == np.uint8
    with zipfile.ZipFile(zipped) as z:
        assert sorted(z.namelist()) == sorted(by_name)


def test_a_cleaned_up_request_is_gone(metric_service, metric_result):
    import shutil
    rid = metric_result.summary["request"]
    shutil.rmtree(metric_result.folder)
    with pytest.raises(RequestGone, match="compute depth again"):
        metric_service.results.measure(rid, [(1, 1)])
