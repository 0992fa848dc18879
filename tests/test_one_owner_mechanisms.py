"""Issue 10.6: one owner each for the colour-map direction, the strided point-cloud recipe, metric scaling
and the device policy. Each test shows the callers go through the owner (a spy on it) and agree in values."""
from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline import render
from pipeline.cli.predict import write_outputs
from pipeline.files import exports
from pipeline.files.image_io import DecodedImage
from pipeline.geometry import pointcloud
from pipeline.predictor import Prediction
from pipeline.services import depth_outputs, depth_readout

ROOT = Path(__file__).resolve().parents[1]


def _sources():
    yy, xx = np.mgrid[0:6, 0:9]
    metres = (1.0 + 0.3 * xx + 0.1 * yy).astype(np.float32)                # (H, W): near = small
    return {"metric_depth": metres, "disparity": (1.0 / metres).astype(np.float32)}    # near = large


@pytest.mark.parametrize("kind", ["metric_depth", "disparity"])
def test_depth_tab_cli_exports_and_colour_bar_draw_near_at_the_same_end(tmp_path, kind):
    """The depth tab's picture, the CLI's colour PNG, the grayscale export and the colour bar: the nearest pixel
    (top-left) takes the colour map's end for both kinds, and all agree pixel for pixel."""
    array = _sources()[kind]
    rgb = np.zeros((*array.shape, 3), np.uint8)
    tab = np.asarray(depth_outputs.colour_picture(array, kind, "Spectral_r").convert("RGB"))
    files = write_outputs(tmp_path, "x", DecodedImage(rgb, None, "x.png", "RGB"),
                          Prediction(array, kind, "m", "cpu", 0.0), cmap="Spectral_r", extra=["gray"])
    cli = np.asarray(Image.open(files["color_png"]).convert("RGB"))
    gray = np.asarray(Image.open(files["gray"]))
    lut = render.colormap_table("Spectral_r")
    np.testing.assert_array_equal(cli, tab)
    np.testing.assert_array_equal(tab[0, 0], lut[-1])                       # near: the map's end (red)
    np.testing.assert_array_equal(tab[-1, -1], lut[0])                      # far: its start
    assert gray[0, 0] == 255 and gray[-1, -1] == 0                          # near bright
    bar = depth_readout.colour_bar(kind, "Spectral_r", float(array.min()), float(array.max()), stops=2)
    near_end = bar["colors"][0] if kind == "metric_depth" else bar["colors"][-1]   # bar runs vmin -> vmax
    assert near_end == "#" + bytes(lut[-1].tolist()).hex()


def test_every_picture_asks_render_colour_position(tmp_path, monkeypatch):
    """A spy on the one rule sees the kind of every caller: the depth tab, the CLI, exports, the colour bar."""
    seen = []
    real = render.colour_position
    monkeypatch.setattr(render, "colour_position", lambda unit, kind="disparity": (seen.append(kind), real(unit, kind))[1])
    array = _sources()["metric_depth"]
    depth_outputs.colour_picture(array, "metric_depth", "viridis")
    write_outputs(tmp_path, "x", DecodedImage(np.zeros((*array.shape, 3), np.uint8), None, "x", "RGB"),
                  Prediction(array, "metric_depth", "m", "cpu", 0.0), cmap="viridis", extra=["gray"])
    depth_readout.colour_bar("metric_depth", "viridis", 1.0, 2.0)
    assert seen == ["metric_depth"] * 4


def test_no_caller_decides_the_direction_itself():
    """Nobody outside render.py reverses a colour map by kind (the old `invert=kind == "metric_depth"`)."""
    offenders = []
    for path in sorted((ROOT / "pipeline").rglob("*.py")) + sorted((ROOT / "studio").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.keyword) and node.arg == "invert":
                offenders.append(f"{path.relative_to(ROOT)}:{node.value.lineno}")
    assert offenders == []


def test_the_strided_cloud_recipe_has_one_owner(monkeypatch):
    """The depth tab's viewer cloud, the curate tab's cloud and the mesh take their stride from
    pointcloud.cloud_stride; the curate cloud is the full cloud's points at the strided pixels."""
    calls = []
    real = pointcloud.cloud_stride
    monkeypatch.setattr(pointcloud, "cloud_stride", lambda *a: (calls.append(a), real(*a))[1])
    monkeypatch.setattr(exports, "cloud_stride", pointcloud.cloud_stride)
    disparity = _sources()["disparity"]
    rgb = np.random.default_rng(0).integers(0, 255, (*disparity.shape, 3), dtype=np.uint8)
    mesh = exports.depth_mesh(rgb, disparity, "disparity", max_vertices=20)
    assert calls[-1] == (6, 9, 20) and mesh.metadata["step"] == real(6, 9, 20) == 2
    pcd, step = pointcloud.strided_cloud(rgb, disparity, "disparity", 8.0, 20)
    full = pointcloud.make_point_cloud(rgb, disparity, "disparity", focal_px=8.0, axes=pointcloud.VIEWER_AXES)
    np.testing.assert_allclose(np.asarray(pcd.points),
                               np.asarray(full.points).reshape(6, 9, 3)[::2, ::2].reshape(-1, 3), atol=1e-5)
    src = (ROOT / "pipeline/services/curation/render.py").read_text() + (ROOT / "pipeline/services/depth_outputs.py").read_text()
    assert "strided_cloud(" in src and "sqrt(" not in src


def test_metric_scaling_and_squeeze_live_in_the_network_only():
    """max_depth x sigmoid and the (B, 1, H, W) -> (B, H, W) squeeze: DepthAnything.forward, nowhere else
    (the runtimes run that one definition)."""
    offenders = []
    for path in sorted((ROOT / "pipeline").rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mult):
                names = {getattr(n, "attr", getattr(n, "id", None)) for n in (node.left, node.right)}
                if "max_depth" in names and rel != "pipeline/model/depth_anything.py":
                    offenders.append(f"{rel}:{node.lineno}")
    assert offenders == []


def test_one_device_policy():
    from pipeline import device, predictor
    from pipeline.errors import ConfigError
    from pipeline.train import distributed
    assert predictor.pick_device is device.pick_device and distributed.pick_device is device.pick_device
    assert device.pick_device("cpu", local_rank=3) == torch.device("cpu")
    assert device.pick_device(None).type in ("cuda", "mps", "cpu")
    with pytest.raises(ConfigError, match="unknown device"):
        device.pick_device("toaster")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA is not available"):
            device.pick_device("cuda", local_rank=1)
    else:
        assert device.pick_device("cuda", local_rank=0) == torch.device("cuda", 0)

