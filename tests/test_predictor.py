"""Predictor: parity with the official end-to-end path, resize rule per version, invariances, batching."""
from __future__ import annotations

import io
import sys
import threading
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline import Prediction, Predictor, build_model
from pipeline.errors import ConfigError, ImageError
from pipeline.predictor import pick_device
from pipeline.preprocess import prepare, resize_output
from pipeline.runtime import resolve_auto

SMALL = 140          # input size for the tiny-model tests: fast, still several patches a side


def _tiny(reference_dir, version="v2", metric=False, max_depth=20.0):
    """The 4-block `vitt` network with the reference recipe's deterministic weights (non-trivial output)."""
    sys.path.insert(0, str(reference_dir))
    try:
        import make_weights
    finally:
        sys.path.pop(0)
    model = build_model("vitt", version, metric=metric, max_depth=max_depth)
    shapes = {k: tuple(t.shape) for k, t in model.state_dict().items()}
    model.load_state_dict({k: torch.from_numpy(a) for k, a in make_weights.make_state_dict(shapes).items()})
    return model


@pytest.fixture(scope="module")
def tiny(reference_dir):
    return _tiny(reference_dir)


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    """A smooth (not noise) 45 x 70 RGB picture, so JPEG round trips stay close."""
    y, x = np.mgrid[0:45, 0:70]
    rgb = np.stack([x * 3, y * 5, (x + y) * 2], -1) % 256
    return rgb.astype(np.uint8)


def _load_recipe(model, state_dict):
    """What the checkpoint loader does for official files: DINOv2's unused mask_token is dropped."""
    model.load_state_dict({k: v for k, v in state_dict.items() if k != "pretrained.mask_token"})
    return model


def _expected(model, rgb, input_size, align_corners):
    with torch.no_grad():
        out = model(prepare(rgb, input_size))                                # (1, h, w)
    return resize_output(out, rgb.shape[:2], align_corners)[0].numpy()


@pytest.fixture(scope="module")
def recipe_v2(recipe_state_dict):
    return _load_recipe(build_model("vits", "v2"), recipe_state_dict)


def test_recipe_weights_match_official_full_resolution(recipe_v2, reference):
    pred = Predictor(recipe_v2, device="cpu", model_id="recipe").predict(reference["image_rgb"])
    assert pred.array.dtype == np.float32 and pred.array.shape == (500, 741)
    assert np.abs(pred.array - reference["depth_v2_full_res"]).max() < 1e-3
    assert (pred.kind, pred.unit, pred.model_id, pred.device, pred.input_size) == (
        "disparity", "relative disparity", "recipe", "cpu", 518)
    assert pred.backend == resolve_auto(torch.device("cpu"))                  # OpenVINO where installed
    assert pred.seconds > 0


@pytest.mark.slow
def test_recipe_v1_matches_official_forward_resized_without_align_corners(recipe_state_dict, reference):
    model = _load_recipe(build_model("vits", "v1"), recipe_state_dict)
    pred = Predictor(model, device="cpu").predict(reference["image_rgb"])
    expected = resize_output(torch.from_numpy(reference["relative_v1"]), (500, 741), align_corners=False)[0]
    assert np.abs(pred.array - expected.numpy()).max() < 1e-3


@pytest.mark.parametrize("version, align_corners", [("v1", False), ("v2", True)])
def test_output_resized_with_the_versions_rule(reference_dir, image, version, align_corners):
    model = _tiny(reference_dir, version)
    got = Predictor(model, device="cpu", input_size=SMALL).predict(image).array
    np.testing.assert_allclose(got, _expected(model, image, SMALL, align_corners), atol=2e-5)  # default backend
    other = _expected(model, image, SMALL, not align_corners)
    assert np.abs(got - other).max() > 1e-4                                  # the rule matters here


def test_path_pil_bytes_and_array_give_identical_predictions(tiny, image, tmp_path):
    path = tmp_path / "img.png"
    Image.fromarray(image).save(path)
    # torch: the same pixels give the same bits on every call (OpenVINO answers a shape's 3rd call on
    # with its static model, equal to float rounding only: tests/test_openvino_shapes.py)
    p = Predictor(tiny, device="cpu", input_size=SMALL, backend="torch")
    ref = p.predict(image).array
    for src in (path, str(path), path.read_bytes(), Image.open(path), Image.fromarray(image)):
        np.testing.assert_array_equal(p.predict(src).array, ref)


def test_exif_rotated_jpeg_gives_the_rotated_prediction(tiny, image):
    exif = Image.Exif()
    exif[0x0112] = 8                                                         # display rotated 90 CCW
    rotated, plain = io.BytesIO(), io.BytesIO()
    Image.fromarray(image).save(rotated, "JPEG", exif=exif, quality=95)
    Image.fromarray(image).save(plain, "JPEG", quality=95)
    p = Predictor(tiny, device="cpu", input_size=SMALL)
    got = p.predict(rotated.getvalue()).array
    assert got.shape == (70, 45)
    decoded_plain = np.asarray(Image.open(plain))
    np.testing.assert_array_equal(got, p.predict(np.ascontiguousarray(np.rot90(decoded_plain))).array)


def test_modes_decode_to_expected_inputs(tiny, image):
    p = Predictor(tiny, device="cpu", input_size=SMALL)
    gray = image[..., 0]
    np.testing.assert_array_equal(p.predict(Image.fromarray(gray, "L")).array,
                                  p.predict(np.stack([gray] * 3, -1)).array)
    opaque = np.concatenate([image, np.full(image.shape[:2] + (1,), 255, np.uint8)], -1)
    np.testing.assert_array_equal(p.predict(Image.fromarray(opaque, "RGBA")).array, p.predict(image).array)
    wide = gray.astype(np.uint16) * 257                                       # 16-bit, full range
    wide[0, 0], wide[0, 1] = 0, 65535
    g8 = np.rint(wide / 257.0).astype(np.uint8)
    np.testing.assert_array_equal(p.predict(Image.fromarray(wide)).array, p.predict(np.stack([g8] * 3, -1)).array)
    cmyk = Image.fromarray(image).convert("CMYK")
    np.testing.assert_array_equal(p.predict(cmyk).array, p.predict(np.asarray(cmyk.convert("RGB"))).array)


def test_predict_many_batches_match_single_predictions_in_order(tiny, image):
    p = Predictor(tiny, device="cpu", input_size=SMALL)
    images = [image, image[:, ::-1], image[:40, :60], image[::-1], image.transpose(1, 0, 2)]
    singles = [p.predict(np.ascontiguousarray(im)).array for im in images]
    many = p.predict_many([np.ascontiguousarray(im) for im in images], batch_size=2)
    assert [m.array.shape for m in many] == [s.shape for s in singles]
    for m, s in zip(many, singles, strict=True):
        np.testing.assert_allclose(m.array, s, atol=1e-5)
    assert not np.allclose(singles[0], singles[1])                           # order is observable
    with pytest.raises(ConfigError, match="batch size"):
        p.predict_many([image], batch_size=0)


def test_concurrent_predicts_equal_serial(tiny, image):
    p = Predictor(tiny, device="cpu", input_size=SMALL)
    inputs = [image, image[::-1].copy(), image[:, ::-1].copy(), image[5:, 3:].copy()]
    serial = [p.predict(im).array for im in inputs]
    results: dict[int, np.ndarray] = {}

    def work(i):
        results[i] = Predictor(tiny, device="cpu", input_size=SMALL).predict(inputs[i]).array

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(inputs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, s in enumerate(serial):
        np.testing.assert_array_equal(results[i], s)


def test_metric_model_reports_metres(reference_dir, image):
    model = _tiny(reference_dir, "v2", metric=True, max_depth=80.0)
    pred = Predictor(model, device="cpu", input_size=SMALL).predict(image)
    assert (pred.kind, pred.unit, pred.model_id) == ("metric_depth", "m", "depth-anything-v2-vitt-metric")
    assert 0 < pred.array.min() and pred.array.max() < 80.0                  # sigmoid x max_depth


def test_loaded_checkpoint_like_input_uses_its_id_and_config(tiny, image):
    loaded = SimpleNamespace(model=tiny, config=tiny.config, model_id="my-student", source="x", meta={})
    pred = Predictor(loaded, device="cpu", input_size=SMALL).predict(image)
    assert pred.model_id == "my-student"
    assert Predictor(loaded, device="cpu", model_id="override").model_id == "override"


def test_from_checkpoint_loads_recipe_pth(recipe_pth, reference, recipe_v2):
    pytest.importorskip("pipeline.weights.loading")
    p = Predictor.from_checkpoint(recipe_pth, device="cpu", input_size=SMALL)
    rgb = reference["image_rgb"][::4, ::4].copy()
    np.testing.assert_allclose(p.predict(rgb).array, _expected(recipe_v2, rgb, SMALL, True), atol=1e-5)
    assert p.kind == "disparity"


def test_bad_arguments_are_user_errors(tiny, image):
    assert pick_device(None).type in ("cuda", "mps", "cpu")
    assert pick_device("cpu") == torch.device("cpu")
    with pytest.raises(ConfigError, match="unknown device"):
        pick_device("toaster")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA is not available"):
            Predictor(tiny, device="cuda")
    with pytest.raises(ConfigError, match="multiple of 14"):
        Predictor(tiny, input_size=500)
    with pytest.raises(ConfigError, match="DepthAnything network"):
        Predictor("not a model")
    with pytest.raises(ImageError, match="1x1"):
        Predictor(tiny, device="cpu", input_size=SMALL).predict(np.zeros((1, 1, 3), np.uint8))
    assert isinstance(Predictor(tiny, device="cpu", input_size=SMALL).predict(image), Prediction)


def test_predictions_follow_weight_changes_and_the_runner_is_cached(reference_dir, image):
    model = _tiny(reference_dir)
    p = Predictor(model, device="cpu", input_size=SMALL)
    before = p.predict(image).array
    assert p.runner() is Predictor(model, device="cpu", input_size=SMALL).runner()   # built once per network
    with torch.no_grad():
        model.depth_head.scratch.output_conv2[2].bias += 0.25                  # e.g. an optimiser step
    after = p.predict(image).array                                             # an exported runner is rebuilt
    np.testing.assert_allclose(after, _expected(model, image, SMALL, True), atol=1e-5)
    assert np.abs(after - before).max() > 0.1


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_autocast_stays_close_to_the_cpu_result(recipe_v2, reference):
    cpu = Predictor(recipe_v2, device="cpu").predict(reference["image_rgb"]).array
    gpu_predictor = Predictor(recipe_v2)                                      # None -> CUDA when available
    assert gpu_predictor.device.type == "cuda"
    gpu = gpu_predictor.predict(reference["image_rgb"])
    assert gpu.array.dtype == np.float32 and gpu.device.startswith("cuda")
    assert np.abs(gpu.array - cpu).max() <= 0.03 * (cpu.max() - cpu.min())  # bf16/fp16 autocast
    recipe_v2.to("cpu")
