"""Every backend (pipeline/runtime) computes what the official code computes, at every size.

Acceptance: the reference fixtures (../shared/reference) through each installed backend,
forward <= 2e-4 and end to end <= 1e-3, for V2 (default run) and V1 and metric (slow). Then the
pattern of the old kernel tests: awkward sizes and batches against a float64 PyTorch reference,
as close as PyTorch's own float32.
"""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from tiny_models import random_vitt

from pipeline import Predictor
from pipeline.preprocess import resize_output
from pipeline.runtime import registry

FORWARD_TOL = 2e-4
END_TO_END_TOL = 1e-3
CPU = torch.device("cpu")
EXPORTED = [b for b in ("openvino", "onnxruntime") if registry.BACKENDS[b].installed()]
ALL = ["torch", *EXPORTED]
slow = pytest.mark.slow


def runner_for(backend: str, model):
    runner = registry.build_runner(backend, model, model.config, CPU)
    assert runner.name == backend                      # no silent fallback in these tests
    return runner


@pytest.mark.parametrize("backend", EXPORTED)
@pytest.mark.parametrize("version", ["v2", pytest.param("v1", marks=slow)])
def test_backend_forward_matches_official(backend, version, recipe_model, reference):
    out = runner_for(backend, recipe_model(version))(torch.from_numpy(reference["net_input"])).numpy()
    assert out.shape == (1, 518, 770)
    assert np.abs(out - reference[f"relative_{version}"]).max() <= FORWARD_TOL


@slow
@pytest.mark.parametrize("backend", EXPORTED)
@pytest.mark.parametrize("max_depth", [20.0, 80.0])
def test_backend_forward_of_metric_model_matches_torch(backend, max_depth, recipe_model, reference):
    """Metric: no official numbers, but the torch model is checked against sigmoid x max_depth of
    the official pre-activation (test_parity); each backend must agree with it."""
    model = recipe_model("v2", metric=True, max_depth=max_depth)
    x = torch.from_numpy(reference["net_input"])
    with torch.inference_mode():
        want = model(x).numpy()
    got = runner_for(backend, model)(x).numpy()
    assert 0 < got.min() and got.max() < max_depth
    assert np.abs(got - want).max() <= FORWARD_TOL * max_depth / 4.0     # the sigmoid's slope is <= 1/4


@pytest.mark.parametrize("backend", ALL)
def test_backend_end_to_end_matches_official(backend, recipe_model, reference):
    pred = Predictor(recipe_model("v2"), device="cpu", backend=backend).predict(reference["image_rgb"])
    assert pred.backend == backend and pred.array.shape == (500, 741)
    assert np.abs(pred.array - reference["depth_v2_full_res"]).max() <= END_TO_END_TOL


@slow
@pytest.mark.parametrize("backend", EXPORTED)
def test_backend_end_to_end_v1_resizes_without_align_corners(backend, recipe_model, reference):
    pred = Predictor(recipe_model("v1"), device="cpu", backend=backend).predict(reference["image_rgb"])
    expected = resize_output(torch.from_numpy(reference["relative_v1"]), (500, 741), align_corners=False)[0]
    assert np.abs(pred.array - expected.numpy()).max() <= END_TO_END_TOL


# Awkward inputs: the smallest grid the export allows, batches, non-square both ways, exactly
# 37 x 37 patches (the position embedding is used unresampled there), the reference 37 x 55.
SHAPES = [(1, 28, 28), (3, 42, 70), (2, 70, 42), (1, 518, 518), (1, 14 * 38, 14 * 37)]


@pytest.mark.parametrize("backend", ALL)
@pytest.mark.parametrize("metric", [False, pytest.param(True, marks=slow)], ids=["relative", "metric"])
def test_backend_is_as_close_to_float64_as_torch_float32_at_awkward_sizes(backend, metric):
    model = random_vitt(metric)
    model64 = copy.deepcopy(model).double()
    runner = runner_for(backend, model)
    g = torch.Generator().manual_seed(1)
    for shape in SHAPES:
        x = torch.randn(shape[0], 3, *shape[1:], generator=g)
        with torch.inference_mode():
            exact = model64(x.double())
            torch32 = model(x).double()
        got = runner(x).double()
        assert got.shape == exact.shape == (shape[0], *shape[1:])
        span = (exact.max() - exact.min()).item()
        assert span > 1e-3                                 # a real output, not a constant
        err, own = (got - exact).abs().max().item(), (torch32 - exact).abs().max().item()
        assert err <= 10 * own + 1e-6 * span, (shape, err, own)


@pytest.mark.parametrize("exporter", ["torchscript", pytest.param("dynamo", marks=slow)])
def test_both_exporters_give_one_dynamic_graph_at_parity(exporter, tmp_path):
    """Both torch.onnx exporters export DepthAnything.forward (the position-embedding path used to
    break them), with dynamic batch, height and width."""
    ort = pytest.importorskip("onnxruntime")
    from pipeline.runtime.onnx_export import export_onnx
    model = random_vitt()
    path = export_onnx(model, tmp_path / "m.onnx", exporter=exporter)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["pixel_values"]
    assert [o.name for o in session.get_outputs()] == ["depth"]
    g = torch.Generator().manual_seed(2)
    for b, h, w in [(1, 28, 42), (3, 70, 28), (1, 518, 518), (2, 14 * 37, 14 * 55)]:
        x = torch.randn(b, 3, h, w, generator=g)
        with torch.inference_mode():
            want = model(x).numpy()
        got = session.run(None, {"pixel_values": x.numpy()})[0]
        assert got.shape == (b, h, w)
        assert np.abs(got - want).max() <= 1e-5 * max(1.0, float(want.max() - want.min()))


@pytest.mark.skipif("openvino" not in EXPORTED, reason="openvino is not installed")
def test_the_openvino_ir_reshaped_to_static_sizes_keeps_parity(tmp_path):
    """Users reshape an exported IR to their one input size (OpenVINO runs static shapes faster). The
    position-embedding resample used to fold wrongly then (Abs of a negative offset came out as the
    offset): 2.2 off at every non-square size, right only at the square grid it never resamples."""
    from pipeline.runtime import openvino_rt
    model = random_vitt(False)
    xml = openvino_rt.convert_network(model, tmp_path / "model.xml")
    g = torch.Generator().manual_seed(3)
    for shape in [(1, 3, 70, 98), (2, 3, 98, 42), (1, 3, 518, 518), (1, 3, 518, 770)]:
        ir = openvino_rt.core().read_model(str(xml))
        ir.reshape({0: list(shape)})
        compiled = openvino_rt.compile_model(ir, torch.get_num_threads())
        x = torch.randn(*shape, generator=g)
        with torch.inference_mode():
            want = model(x).numpy()
        got = compiled({0: x.numpy()})[0]
        span = float(want.max() - want.min())
        assert np.abs(got - want).max() <= 1e-5 * max(span, 1.0), shape
