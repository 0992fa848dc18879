"""Acceptance test of issue 2: the model, loaded through the official-checkpoint loader, computes
what the official Depth Anything code computes (../shared/reference/vits_reference.npz).

The recipe weights are written as an official `depth_anything_v2_vits.pth` (fixture `recipe_pth`)
and loaded with `pipeline.weights.loading.load_model`, exactly as a downloaded checkpoint would be.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.config import ModelConfig
from pipeline.errors import CheckpointError
from pipeline.preprocess import prepare, resize_output
from pipeline.weights.loading import load_model, save_checkpoint
from pipeline.weights.state_dict import compare_state_dict, convert_official_state_dict, infer_encoder

FORWARD_TOL = 2e-4      # official forward from net_input
END_TO_END_TOL = 1e-3   # official infer_image from image_rgb


@pytest.fixture(scope="module")
def v2(recipe_pth):
    return load_model(recipe_pth)


@pytest.fixture(scope="module")
def v2_out(v2, reference):
    with torch.inference_mode():
        return v2.model(torch.from_numpy(reference["net_input"])).numpy()   # (1, 518, 770)


def test_official_file_is_recognised_as_v2_small(v2):
    assert v2.config == ModelConfig("vits", "v2", False)
    assert v2.model_id == "depth-anything-v2-small"
    assert v2.meta == {}
    assert not v2.model.training


def test_v2_forward_matches_official(v2_out, reference):
    ref = reference["relative_v2"]
    assert v2_out.shape == ref.shape
    assert np.abs(v2_out - ref).max() <= FORWARD_TOL


def test_v1_forward_matches_official(recipe_pth, reference):
    v1 = load_model(recipe_pth, version="v1")
    assert v1.config.layers == (8, 9, 10, 11)
    with torch.inference_mode():
        out = v1.model(torch.from_numpy(reference["net_input"])).numpy()
    assert np.abs(out - reference["relative_v1"]).max() <= FORWARD_TOL
    # V1 and V2 taps must differ on these weights, or the test above could not tell them apart
    assert np.abs(reference["relative_v1"] - reference["relative_v2"]).max() > 100 * FORWARD_TOL


def test_preprocessing_matches_official(reference):
    x = prepare(reference["image_rgb"])
    assert tuple(x.shape) == reference["net_input"].shape
    # torch bicubic matches OpenCV INTER_CUBIC to 2e-4 in [0, 1] units, i.e. < 1e-3 after /std (measured 1.8e-4)
    assert np.abs(x.numpy() - reference["net_input"]).max() <= 1e-3


def test_full_resolution_path_matches_official(v2, reference):
    rgb = reference["image_rgb"]
    with torch.inference_mode():
        pred = v2.model(prepare(rgb))
        full = resize_output(pred, rgb.shape[:2], align_corners=v2.config.align_corners_out)[0].numpy()
    ref = reference["depth_v2_full_res"]
    assert full.shape == ref.shape == (500, 741)
    assert np.abs(full - ref).max() <= END_TO_END_TOL


@pytest.mark.parametrize("encoder", ["vits", "vitb", "vitl", "vitg"])
def test_official_manifest_matches_model_on_meta_device(official_shapes, encoder):
    manifest = official_shapes["shapes"][encoder]
    assert infer_encoder(manifest) == encoder
    converted = convert_official_state_dict(manifest)
    for version in ("v1", "v2"):
        diff = compare_state_dict(converted, ModelConfig(encoder=encoder, version=version))
        assert diff == {"missing": [], "unexpected": [], "shape": []}, diff
    # the conversion does real work: unconverted, vitg's SwiGLU keys and mask_token would not fit
    raw = compare_state_dict(manifest, ModelConfig(encoder=encoder))
    assert raw["unexpected"] and ("pretrained.mask_token" in raw["unexpected"])
    if encoder == "vitg":
        assert any(".mlp.w12." in k for k in raw["unexpected"]) and raw["missing"]


def test_metric_variant_is_sigmoid_times_max_depth_of_the_same_pre_activation(recipe_pth, reference, v2):
    x = torch.from_numpy(reference["net_input"][..., :14 * 8, :14 * 10].copy())   # small crop: fast
    captured = []
    conv = v2.model.depth_head.scratch.output_conv2[2]                            # last conv, pre-activation
    handle = conv.register_forward_hook(lambda m, i, o: captured.append(o.detach().clone()))
    try:
        with torch.inference_mode():
            relative = v2.model(x)
    finally:
        handle.remove()
    pre = captured[0][:, 0]                                                         # (1, h, w)
    assert torch.allclose(relative, pre.clamp(min=0))                                # relative = ReLU(pre)
    for max_depth in (20.0, 80.0):
        metric = load_model(recipe_pth, metric=True, max_depth=max_depth)
        assert metric.config == ModelConfig("vits", "v2", True, max_depth)
        with torch.inference_mode():
            out = metric.model(x)
        torch.testing.assert_close(out, max_depth * torch.sigmoid(pre), rtol=1e-5, atol=1e-5)
        assert 0 < out.min() and out.max() < max_depth


def test_project_safetensors_round_trip_is_bit_identical(v2, reference, tmp_path):
    path = save_checkpoint(v2, tmp_path / "student.safetensors", model_id="student-7",
                           meta={"run": 7, "teacher": "depth-anything-v2-small"})
    back = load_model(path)
    assert back.config == v2.config and back.model_id == "student-7"
    assert back.meta == {"run": 7, "teacher": "depth-anything-v2-small"}
    for (k, a), (k2, b) in zip(v2.model.state_dict().items(), back.model.state_dict().items(), strict=True):
        assert k == k2 and torch.equal(a, b), k
    x = torch.from_numpy(reference["net_input"][..., : 14 * 12, : 14 * 16].copy())
    with torch.inference_mode():
        assert torch.equal(back.model(x), v2.model(x))


def test_wrong_encoder_says_what_the_file_is(recipe_pth):
    with pytest.raises(CheckpointError) as e:
        load_model(recipe_pth, encoder="vitb")
    msg = str(e.value)
    assert "this is a vits checkpoint; you asked for vitb" in msg and str(recipe_pth) in msg


def test_corrupt_file_is_a_clear_error(recipe_pth, tmp_path):
    cut = tmp_path / "depth_anything_v2_vits.pth"
    cut.write_bytes(recipe_pth.read_bytes()[: 5_000_000])
    with pytest.raises(CheckpointError, match="truncated") as e:
        load_model(cut)
    assert str(cut) in str(e.value)


class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):   # what a malicious checkpoint does: run code when unpickled
        return (open, (str(self.marker), "w"))


def test_weights_only_never_runs_pickled_code(recipe_state_dict, tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "depth_anything_v2_vits.pth"
    torch.save({**recipe_state_dict, "extra": _Exploit(marker)}, evil)
    assert not marker.exists()
    with pytest.raises(CheckpointError, match="refused to load") as e:
        load_model(evil)
    assert str(evil) in str(e.value)
    assert not marker.exists()
