"""`python -m pipeline predict`, run in-process: every output file checked by value."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import open3d as o3d
import pytest
import torch
from PIL import Image

from pipeline import build_model, cli
from pipeline.files.depth_png import load_depth_png, read_depth_png
from pipeline.predictor import Predictor
from pipeline.render import colorize
from pipeline.weights.loading import save_checkpoint

SIZE = "140"         # small network input: the vits forward stays well under a second


def _cli(argv: list[str]) -> int:
    return cli.main(argv)


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory, reference_dir) -> Path:
    """A project-format (safetensors) vitt checkpoint with the recipe's deterministic weights."""
    sys.path.insert(0, str(reference_dir))
    try:
        import make_weights
    finally:
        sys.path.pop(0)
    model = build_model("vitt")
    shapes = {k: tuple(t.shape) for k, t in model.state_dict().items()}
    model.load_state_dict({k: torch.from_numpy(a) for k, a in make_weights.make_state_dict(shapes).items()})
    return save_checkpoint(model, tmp_path_factory.mktemp("ckpt") / "tiny.safetensors", model_id="tiny-test")


@pytest.fixture(scope="module")
def images(tmp_path_factory, motorcycle_rgb):
    folder = tmp_path_factory.mktemp("inputs")
    a = np.ascontiguousarray(motorcycle_rgb[::4, ::4])                       # (125, 186, 3)
    b = np.ascontiguousarray(motorcycle_rgb[100:260:2, 200:500:2])           # (80, 150, 3)
    Image.fromarray(a).save(folder / "moto.png")
    Image.fromarray(b).save(folder / "crop.jpg", quality=95)
    return folder, {"moto": a, "crop": np.asarray(Image.open(folder / "crop.jpg"))}


@pytest.fixture(scope="module")
def predictor(recipe_pth):
    return Predictor.from_checkpoint(recipe_pth, device="cpu", input_size=int(SIZE))


def test_folder_writes_all_outputs_by_value(images, predictor, recipe_pth, tmp_path, capsys):
    folder, rgbs = images
    out = tmp_path / "out"
    rc = _cli(["predict", str(folder), "--out", str(out), "--checkpoint", str(recipe_pth), "--input-size", SIZE,
               "--device", "cpu", "--ply", "--colormap", "magma", "--batch-size", "2"])
    assert rc == 0, capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == sorted(
        f"{s}{suffix}" for s in rgbs for suffix in (".npy", "_depth.png", "_color.png", ".ply"))
    for stem, rgb in rgbs.items():
        arr = np.load(out / f"{stem}.npy")
        assert arr.dtype == np.float32 and arr.shape == rgb.shape[:2]
        np.testing.assert_allclose(arr, predictor.predict(rgb).array, atol=1e-5)
        png = load_depth_png(out / f"{stem}_depth.png")
        assert png.calibrated and png.kind == "disparity"
        assert np.abs(png.array - arr).max() <= (arr.max() - arr.min()) / 65535 / 2 + 1e-6
        with Image.open(out / f"{stem}_color.png") as colour:              # palette PNG, the map's own colours
            assert colour.mode == "P"
            np.testing.assert_array_equal(np.asarray(colour.convert("RGB")), colorize(arr, "magma"))
        cloud = o3d.io.read_point_cloud(str(out / f"{stem}.ply"))
        assert len(cloud.points) == arr.size                                 # every disparity is usable here
        np.testing.assert_array_equal(np.rint(np.asarray(cloud.colors) * 255), rgb.reshape(-1, 3))
    assert "wrote 2 of 2 input(s)" in capsys.readouterr().err


def test_bad_file_is_reported_skipped_and_fails_the_run(images, tiny_ckpt, tmp_path, capsys):
    folder, rgbs = images
    broken = tmp_path / "broken.jpg"
    data = (folder / "crop.jpg").read_bytes()
    broken.write_bytes(data[: len(data) // 2])                               # header intact, data cut
    out = tmp_path / "out"
    rc = _cli(["predict", str(folder / "moto.png"), str(broken), str(tmp_path / "nope.png"), "--out", str(out),
               "--checkpoint", str(tiny_ckpt), "--input-size", SIZE, "--device", "cpu"])
    err = capsys.readouterr().err
    assert rc == 1
    assert f"skipped {broken}: the image data is corrupt or truncated" in err
    assert f"skipped {tmp_path / 'nope.png'}: file not found" in err
    assert "wrote 1 of 3 input(s)" in err and "Traceback" not in err
    assert sorted(p.name for p in out.iterdir()) == ["moto.npy", "moto_color.png", "moto_depth.png"]


def test_same_stem_inputs_do_not_overwrite_each_other(images, tiny_ckpt, tmp_path):
    folder, rgbs = images
    Image.fromarray(rgbs["crop"]).save(tmp_path / "moto.jpg", quality=95)
    out = tmp_path / "out"
    assert _cli(["predict", str(folder / "moto.png"), str(tmp_path / "moto.jpg"), "--out", str(out),
                 "--checkpoint", str(tiny_ckpt), "--input-size", SIZE, "--device", "cpu"]) == 0
    tiny = Predictor.from_checkpoint(tiny_ckpt, device="cpu", input_size=int(SIZE))
    assert tiny.model_id == "tiny-test"
    np.testing.assert_allclose(np.load(out / "moto_png.npy"), tiny.predict(rgbs["moto"]).array, atol=1e-5)
    assert np.load(out / "moto_jpg.npy").shape == rgbs["crop"].shape[:2]


def test_metric_flags_reach_the_model(images, recipe_pth, tmp_path):
    folder, rgbs = images
    out = tmp_path / "out"
    assert _cli(["predict", str(folder / "moto.png"), "--out", str(out), "--checkpoint", str(recipe_pth),
                 "--metric", "--max-depth", "80", "--input-size", SIZE, "--device", "cpu"]) == 0
    arr = np.load(out / "moto.npy")
    assert 0 < arr.min() and arr.max() < 80                                  # sigmoid x 80, not a ReLU output
    assert load_depth_png(out / "moto_depth.png").kind == "metric_depth"
    np.testing.assert_allclose(read_depth_png(out / "moto_depth.png"), arr, atol=(arr.max() - arr.min()) / 65535)


def test_export_flags_write_exr_mesh_and_normals(images, recipe_pth, tmp_path):
    """--exr --glb --normals on a metric run: the EXR is the metres, the mesh and normals use the same camera."""
    import trimesh

    from pipeline.files.exports import read_exr
    folder, rgbs = images
    out = tmp_path / "out"
    assert _cli(["predict", str(folder / "moto.png"), "--out", str(out), "--checkpoint", str(recipe_pth), "--metric",
                 "--max-depth", "20", "--input-size", SIZE, "--device", "cpu", "--exr", "--glb", "--normals",
                 "--focal-px", "150"]) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(
        f"moto{s}" for s in (".npy", "_depth.png", "_color.png", "_depth.exr", "_mesh.glb", "_normals.png",
                             "_normals.npy"))
    arr = np.load(out / "moto.npy")
    exr = read_exr(out / "moto_depth.exr")
    assert np.array_equal(exr.array, arr) and exr.kind == "metric_depth" and exr.meta["focal_px"] == 150.0
    mesh = trimesh.load(out / "moto_mesh.glb", force="mesh")
    z = -mesh.vertices[:, 2]                                                 # viewer axes: the camera looks down -z
    assert len(mesh.faces) > 0 and arr.min() - 1e-4 <= z.min() and z.max() <= arr.max() + 1e-4     # metres
    normals = np.load(out / "moto_normals.npy")
    assert normals.shape == (*arr.shape, 3) and np.allclose(np.linalg.norm(normals, axis=-1), 1.0, atol=1e-4)


@pytest.mark.parametrize("extra, message", [
    (["--colormap", "no_such_map"], "unknown colour map 'no_such_map'"),
    (["--checkpoint", "/nonexistent/weights.pth"], "/nonexistent/weights.pth"),
    (["--input-size", "500"], "multiple of 14"),
    (["--encoder", "vitb"], "vitb"),
])
def test_user_errors_are_one_line_and_exit_2(images, tiny_ckpt, tmp_path, capsys, extra, message):
    folder, _ = images
    argv = ["predict", str(folder / "moto.png"), "--out", str(tmp_path / "o"), "--checkpoint", str(tiny_ckpt),
            "--device", "cpu"]
    rc = _cli(argv + extra)
    err = capsys.readouterr().err
    assert rc == 2 and message in err and "Traceback" not in err
    assert not (tmp_path / "o" / "moto.npy").exists()


def test_empty_folder_is_reported(tiny_ckpt, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no images here")
    rc = _cli(["predict", str(tmp_path / "empty"), "--out", str(tmp_path / "o"), "--checkpoint", str(tiny_ckpt)])
    assert rc == 1 and "no image or video files in this folder" in capsys.readouterr().err
