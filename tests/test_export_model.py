"""`python -m pipeline export-model`: files that run at parity without this project, carry their
metadata, and are never written when they do not reproduce the PyTorch model."""
from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline.cli import main
from pipeline.runtime import export as export_mod

ROOT = Path(__file__).resolve().parents[1]
FORWARD_TOL = 2e-4


def readme_block(marker: str) -> str:
    """The fenced python block that follows `<!-- test: marker ... -->` in README.md."""
    text = (ROOT / "README.md").read_text()
    m = re.search(r"<!-- test: " + re.escape(marker) + r"[^>]*-->\s*```python\n(.*?)```", text, re.S)
    assert m, f"README.md has no block marked {marker!r}"
    return m.group(1)


def test_onnx_export_runs_in_onnxruntime_alone_at_parity_with_metadata(recipe_pth, recipe_model, reference,
                                                                       tmp_path, capsys):
    """The issue's acceptance: the README's onnxruntime-only code, in a Python that cannot import this
    project, runs the exported file at parity on the reference image and at 364x518 (batch 2)."""
    out = tmp_path / "da2-small.onnx"
    assert main(["export-model", "--checkpoint", str(recipe_pth), "--format", "onnx", "--out", str(out)]) == 0
    assert "verified on (1, 3, 518, 770)" in capsys.readouterr().err
    small = torch.nn.functional.interpolate(torch.from_numpy(reference["net_input"]), size=(364, 518), mode="bicubic")
    small = torch.cat([small, small.flip(-1)])
    with torch.inference_mode():
        small_want = recipe_model("v2")(small).numpy()
    np.savez(tmp_path / "check.npz", net_input=reference["net_input"], relative_v2=reference["relative_v2"],
             small=small.numpy(), small_want=small_want)
    Image.fromarray(reference["image_rgb"]).save(tmp_path / "photo.jpg", quality=100, subsampling=0)
    check = readme_block("onnxruntime-alone") + """
import importlib.util, json
c = np.load("check.npz")
net = session.run(["depth"], {"pixel_values": c["net_input"]})[0]
small = session.run(["depth"], {"pixel_values": c["small"]})[0]
print(json.dumps({"project_importable": importlib.util.find_spec("pipeline") is not None, "meta": meta,
                  "forward": float(np.abs(net - c["relative_v2"]).max()), "small_shape": small.shape,
                  "small": float(np.abs(small - c["small_want"]).max()), "depth_shape": depth.shape,
                  "depth": depth.tolist()}))
"""
    run = subprocess.run([sys.executable, "-I", "-c", check], cwd=tmp_path, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    got = json.loads(run.stdout)
    assert got["project_importable"] is False
    assert got["forward"] <= FORWARD_TOL
    assert got["small_shape"] == [2, 364, 518] and got["small"] <= FORWARD_TOL
    depth = np.asarray(got["depth"], np.float32)
    assert got["depth_shape"] == [500, 741]
    # PIL's bicubic (a = -0.5) instead of OpenCV's (a = -0.75): close to the official output, not equal
    assert np.abs(depth - reference["depth_v2_full_res"]).max() <= 0.05 * np.ptp(reference["depth_v2_full_res"])
    meta = got["meta"]
    assert {k: meta[k] for k in ("encoder", "version", "kind", "max_depth", "patch_size", "mean", "std")} == {
        "encoder": "vits", "version": "v2", "kind": "disparity", "max_depth": "", "patch_size": "14",
        "mean": "0.485,0.456,0.406", "std": "0.229,0.224,0.225"}
    assert meta["source_sha256"] == hashlib.sha256(recipe_pth.read_bytes()).hexdigest()
    assert meta["licence"].startswith("Apache-2.0") and meta["source_checkpoint"] == "depth-anything-v2-small"


@pytest.fixture(scope="module")
def vitt_file(tmp_path_factory):
    from pipeline.config import ModelConfig
    from pipeline.weights.loading import save_checkpoint, untrained_model
    torch.manual_seed(0)
    loaded = untrained_model(ModelConfig(encoder="vitt", metric=True, max_depth=80.0))
    return save_checkpoint(loaded.model, tmp_path_factory.mktemp("vitt") / "tiny.safetensors", model_id="tiny")


def test_a_file_that_does_not_reproduce_the_model_is_not_written(vitt_file, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(export_mod, "F32_TOL", 0.0)         # any float difference now counts as a failure
    out = tmp_path / "m.onnx"
    assert main(["export-model", "--checkpoint", str(vitt_file), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "does not reproduce the PyTorch model" in err and "was not written" in err
    assert sorted(tmp_path.iterdir()) == []                  # no file, no temporary folder left behind


def test_wrong_suffix_and_format_are_one_line_errors(vitt_file, tmp_path, capsys):
    assert main(["export-model", "--checkpoint", str(vitt_file), "--format", "openvino",
                 "--out", str(tmp_path / "m.onnx")]) == 2
    assert "must end in .xml" in capsys.readouterr().err
    assert main(["export-model", "--checkpoint", str(tmp_path / "missing.pth"), "--out", str(tmp_path / "m.onnx")]) == 2
    assert not (tmp_path / "m.onnx").exists()


@pytest.mark.parametrize("fmt", ["onnx", "openvino"])
def test_metric_export_keeps_metres_and_says_so(vitt_file, tmp_path, fmt):
    out = tmp_path / ("m.onnx" if fmt == "onnx" else "m.xml")
    assert main(["export-model", "--checkpoint", str(vitt_file), "--format", fmt, "--out", str(out)]) == 0
    if fmt == "onnx":
        from pipeline.runtime.onnx_export import read_metadata
        meta = read_metadata(out)
    else:
        pytest.importorskip("openvino")
        from pipeline.runtime import openvino_rt
        model = openvino_rt.core().read_model(str(out))
        assert out.with_suffix(".bin").is_file()
        meta = {k: model.get_rt_info(["depth_anything", k]).astype(str) for k in ("kind", "max_depth", "encoder")}
    assert (meta["kind"], meta["max_depth"], meta["encoder"]) == ("metric_depth", "80", "vitt")
    x = export_mod.verification_inputs()[1]                   # (2, 3, 364, 518)
    from pipeline.weights.loading import load_model
    with torch.inference_mode():
        want = load_model(vitt_file).model(x).numpy()
    got = export_mod.run_file(out, fmt, x)
    assert 0 < got.min() and got.max() < 80.0
    assert np.abs(got - want).max() <= 5e-5 * np.ptp(want)


@pytest.mark.slow
@pytest.mark.parametrize("fmt, args, ref", [
    ("openvino", [], "relative_v2"),
    ("onnx", ["--version", "v1"], "relative_v1"),
    ("openvino", ["--version", "v1"], "relative_v1"),
    ("onnx", ["--exporter", "dynamo"], "relative_v2"),
])
def test_every_format_and_variant_matches_official(recipe_pth, reference, tmp_path, fmt, args, ref):
    out = tmp_path / ("m.onnx" if fmt == "onnx" else "m.xml")
    assert main(["export-model", "--checkpoint", str(recipe_pth), "--format", fmt, "--out", str(out), *args]) == 0
    got = export_mod.run_file(out, fmt, torch.from_numpy(reference["net_input"]))
    assert np.abs(got - reference[ref]).max() <= FORWARD_TOL


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["onnx", "openvino"])
def test_fp16_export_stays_within_one_percent_of_the_range(recipe_pth, reference, tmp_path, fmt):
    out = tmp_path / ("m.onnx" if fmt == "onnx" else "m.xml")
    assert main(["export-model", "--checkpoint", str(recipe_pth), "--format", fmt, "--fp16", "--out", str(out)]) == 0
    size = out.stat().st_size + (out.with_suffix(".bin").stat().st_size if fmt == "openvino" else 0)
    assert size < 60e6                                         # half of the 99 MB of float32 weights
    got = export_mod.run_file(out, fmt, torch.from_numpy(reference["net_input"]))
    ref = reference["relative_v2"]
    assert np.abs(got - ref).max() <= 0.01 * np.ptp(ref)


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["onnx", "openvino"])
def test_metric_export_of_the_recipe_matches_the_torch_metric_model(recipe_pth, recipe_model, reference, tmp_path, fmt):
    """Metric models have no official numbers here; the torch model is checked against sigmoid x
    max_depth of the official pre-activation (test_parity), and the file must match it."""
    out = tmp_path / ("m.onnx" if fmt == "onnx" else "m.xml")
    assert main(["export-model", "--checkpoint", str(recipe_pth), "--format", fmt, "--metric", "--max-depth", "80",
                 "--out", str(out)]) == 0
    x = torch.from_numpy(reference["net_input"])
    with torch.inference_mode():
        want = recipe_model("v2", metric=True, max_depth=80.0)(x).numpy()
    got = export_mod.run_file(out, fmt, x)
    assert np.abs(got - want).max() <= FORWARD_TOL * 80.0 / 4.0
