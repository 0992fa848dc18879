"""Exports: EXR round trip, mesh without triangles across a depth step, linear vertex colours, normals files."""
from __future__ import annotations

import json
import math

import numpy as np
import OpenEXR
import pytest
import trimesh
from PIL import Image
from synthetic_geometry import room, sphere

from pipeline.errors import ConfigError, ImageError, StudioError
from pipeline.files.exports import depth_mesh, read_exr, srgb_to_linear, write_exr, write_glb, write_normals
from pipeline.geometry.normals import normals_from_depth, normals_picture
from pipeline.geometry.pointcloud import DISPARITY_NOTE, backproject


def _rgb(h, w, value=None, seed=0):
    if value is not None:
        return np.full((h, w, 3), value, np.uint8)
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


# ----------------------------------------------------------------------------- EXR

def test_exr_round_trip_is_exact_with_nan_and_meaning(tmp_path):
    a = np.random.default_rng(0).uniform(0.1, 80.0, (37, 53)).astype(np.float32)
    a[3, 4] = np.nan
    path = write_exr(tmp_path / "d.exr", a, "metric_depth", meta={"model_id": "m"})
    back = read_exr(path)
    np.testing.assert_array_equal(back.array, a)                           # bit exact, NaN kept
    assert back.kind == "metric_depth" and back.meta["unit"] == "m" and back.meta["model_id"] == "m"
    with OpenEXR.File(str(path)) as f:                                     # what other tools see
        assert list(f.channels()) == ["Z"] and f.channels()["Z"].pixels.dtype == np.float32
    disp = read_exr(write_exr(tmp_path / "r.exr", a, "disparity"))
    assert disp.kind == "disparity" and disp.meta["unit"] == "relative disparity"
    assert not list(tmp_path.glob(".*"))                                   # no temporary left behind


def test_third_party_exr_and_bad_files(tmp_path):
    z = np.arange(12, dtype=np.float32).reshape(3, 4)
    with OpenEXR.File({"type": OpenEXR.scanlineimage}, {"depth": z}) as f:
        f.write(str(tmp_path / "other.exr"))
    other = read_exr(tmp_path / "other.exr")
    assert other.kind is None and np.array_equal(other.array, z)
    with OpenEXR.File({"type": OpenEXR.scanlineimage}, {"R": z, "G": z}) as f:
        f.write(str(tmp_path / "rgb.exr"))
    with pytest.raises(ImageError, match="no depth channel"):
        read_exr(tmp_path / "rgb.exr")
    (tmp_path / "junk.exr").write_bytes(b"not an exr")
    with pytest.raises(ImageError, match="cannot read as an OpenEXR"):
        read_exr(tmp_path / "junk.exr")
    with pytest.raises(ConfigError, match="unknown prediction kind"):
        write_exr(tmp_path / "x.exr", z, "depth")
    with pytest.raises(StudioError, match="cannot write"):
        write_exr(tmp_path / "missing" / "x.exr", z, "metric_depth")


# ----------------------------------------------------------------------------- mesh

def test_no_triangle_spans_a_depth_step_and_both_sides_are_meshed():
    h, w = 20, 30
    depth = np.full((h, w), 2.0, np.float32)
    depth[:, 15:] = 4.0                                                     # a step edge at column 15
    mesh = depth_mesh(_rgb(h, w), depth, "metric_depth", focal_px=25.0)
    z = -mesh.vertices[:, 2][mesh.faces]                                   # (F, 3) depths (viewer axes: -z)
    assert np.all(z.max(1) / z.min(1) <= 1.05)
    assert np.all(np.ptp(z, axis=1) == 0)                                   # each triangle on one side
    assert len(mesh.faces) == 2 * (h - 1) * (14 + 14)                       # all the others are kept
    assert set(np.round(z[:, 0], 6)) == {2.0, 4.0}
    loose = depth_mesh(_rgb(h, w), depth, "metric_depth", focal_px=25.0, max_depth_ratio=2.5)
    assert len(loose.faces) == 2 * (h - 1) * (w - 1)                        # a looser ratio keeps the bridge


def test_mesh_vertices_are_the_point_cloud_and_faces_look_at_the_camera():
    scene = room(24, 32, focal=28.0)
    mesh = depth_mesh(_rgb(24, 32), scene.depth.astype(np.float32), "metric_depth", focal_px=28.0,
                      max_depth_ratio=10.0)
    pts = backproject(scene.depth.astype(np.float32), 28.0, axes="opengl").reshape(-1, 3)
    np.testing.assert_allclose(mesh.vertices, pts, rtol=1e-5, atol=1e-6)   # every pixel used, same order
    toward_camera = -(mesh.triangles_center * mesh.face_normals).sum(1)
    assert (toward_camera > 0).all()                                        # front faces seen from the camera


def test_nan_depth_drops_its_triangles_and_large_images_are_subsampled():
    depth = np.full((10, 10), 3.0, np.float32)
    depth[4, 4] = np.nan
    mesh = depth_mesh(_rgb(10, 10), depth, "metric_depth", focal_px=10.0)
    assert len(mesh.vertices) == 99 and len(mesh.faces) == 2 * 81 - 6      # a vertex touches 6 triangles
    big = depth_mesh(_rgb(100, 120), np.ones((100, 120), np.float32), "metric_depth", max_vertices=3000)
    assert big.metadata["step"] == 2 and len(big.vertices) == 50 * 60


def test_vertex_colours_are_linear_and_survive_the_glb(tmp_path):
    assert srgb_to_linear(np.array([0, 10, 128, 255])) == pytest.approx(
        [0.0, 10 / 255 / 12.92, ((128 / 255 + 0.055) / 1.055) ** 2.4, 1.0])
    rgb = _rgb(6, 8, value=128)
    rgb[:, 4:] = (255, 0, 10)
    mesh = depth_mesh(rgb, np.full((6, 8), 2.0, np.float32), "metric_depth", focal_px=8.0)
    path = write_glb(tmp_path / "m.glb", mesh)
    assert path.read_bytes()[:4] == b"glTF"
    (back,) = trimesh.load(path, process=False).geometry.values()          # the scene's one mesh
    np.testing.assert_allclose(back.vertices, mesh.vertices, atol=1e-6)
    assert back.faces.shape == mesh.faces.shape and back.metadata["unit"] == "m"
    colours = np.asarray(back.visual.vertex_attributes["color"])[:, :3].reshape(6, 8, 3)
    assert tuple(colours[0, 0]) == (55, 55, 55)                            # sRGB 128 -> linear 0.216 -> 55
    assert tuple(colours[0, 7]) == (255, 0, 1)                             # sRGB 10 -> linear 0.003 -> 1


def test_relative_mesh_says_it_is_pseudo_depth(tmp_path):
    mesh = depth_mesh(_rgb(8, 8), np.linspace(0.9, 1.0, 64).reshape(8, 8).astype(np.float32), "disparity")
    assert mesh.metadata["note"] == DISPARITY_NOTE.format(pct=98.0)
    glb = write_glb(tmp_path / "r.glb", mesh).read_bytes()
    chunk_len = int.from_bytes(glb[12:16], "little")
    gltf = json.loads(glb[20:20 + chunk_len])
    assert gltf["meshes"][0]["extras"]["kind"] == "disparity"
    assert gltf["meshes"][0]["primitives"][0]["attributes"].keys() == {"POSITION", "COLOR_0"}
    assert gltf["materials"][0]["pbrMetallicRoughness"]["metallicFactor"] == 0.0
    with pytest.raises(StudioError, match="no triangles"):
        write_glb(tmp_path / "e.glb", depth_mesh(_rgb(4, 4), np.full((4, 4), np.nan, np.float32), "metric_depth"))


# ----------------------------------------------------------------------------- normals

def test_normals_of_a_tilted_plane_are_its_normal():
    h, w, f = 40, 50, 45.0
    n = np.array([0.3, -0.5, -1.0])
    n /= np.linalg.norm(n)                                                  # faces the camera (negative z)
    x, y = np.meshgrid((np.arange(w) + 0.5 - w / 2) / f, (np.arange(h) + 0.5 - h / 2) / f)
    depth = -3.0 / (n[0] * x + n[1] * y + n[2])                             # the plane n . X = -3
    got = normals_from_depth(depth, f)
    np.testing.assert_allclose(got.reshape(-1, 3), np.broadcast_to(n, (h * w, 3)), atol=1e-5)
    gl = normals_from_depth(depth, f, axes="opengl")
    np.testing.assert_allclose(gl[5, 5], n * [1, -1, -1], atol=1e-5)


def test_normals_of_a_sphere_point_from_its_centre():
    depth, hit, centre = sphere()
    got = normals_from_depth(depth, 60.0).astype(np.float64)
    pts = backproject(depth, 60.0).astype(np.float64)
    truth = (pts - centre) / 2.0
    facing = (truth * -pts / np.linalg.norm(pts, axis=-1, keepdims=True)).sum(-1)
    inner = hit & (facing > 0.5)                                            # away from the silhouette
    angle = np.degrees(np.arccos(np.clip((got * truth).sum(-1), -1, 1)))
    assert inner.sum() > 1000 and np.median(angle[inner]) < 0.2 and angle[inner].max() < 2.0
    background = ~hit & ~np.roll(hit, 1, 0) & ~np.roll(hit, -1, 0) & ~np.roll(hit, 1, 1) & ~np.roll(hit, -1, 1)
    np.testing.assert_allclose(got[background], np.broadcast_to([0.0, 0.0, -1.0], (background.sum(), 3)), atol=1e-6)


def test_normals_next_to_a_depth_edge_use_their_own_surface():
    depth = np.full((12, 12), 2.0)
    depth[:, 6:] = 6.0
    got = normals_from_depth(depth, 10.0)
    np.testing.assert_allclose(got.reshape(-1, 3), [[0, 0, -1]] * 144, atol=1e-6)   # both columns at the step too


def test_normals_files(tmp_path):
    depth = np.full((6, 7), 2.0, np.float32)
    depth[0, 0] = np.nan
    out = write_normals(tmp_path / "n.png", tmp_path / "n.npy", depth, "metric_depth", focal_px=7.0)
    npy = np.load(out["npy"])
    assert npy.shape == (6, 7, 3) and npy.dtype == np.float32 and np.isnan(npy[0, 0]).all()
    np.testing.assert_allclose(npy[3, 3], [0, 0, 1], atol=1e-6)             # opengl: facing the viewer is +z
    png = np.asarray(Image.open(out["png"]))
    assert tuple(png[3, 3]) == (128, 128, 255) and tuple(png[0, 0]) == (0, 0, 0)
    assert out["axes"] == "opengl" and out["note"].startswith("Metric depth")
    assert tuple(normals_picture(np.array([[[1.0, -1.0, 0.0]]]))[0, 0]) == (255, 0, 128)
    relative = write_normals(tmp_path / "r.png", tmp_path / "r.npy", 1.0 / depth, "disparity", focal_px=7.0)
    assert relative["note"].startswith("Relative model") and "not true angles" in relative["note"]
    with pytest.raises(ConfigError, match="at least 2x2"):
        normals_from_depth(np.ones((1, 5)), 1.0)


def test_fov_default_is_used_without_a_focal():
    mesh = depth_mesh(_rgb(10, 20), np.ones((10, 20), np.float32), "metric_depth")
    half_width = mesh.vertices[:, 0].max() + (0.5 / (10 / math.tan(math.radians(30))))
    assert half_width == pytest.approx(math.tan(math.radians(30)), rel=1e-5)
