"""The network: parity with the official code, the inference path, training, metric head, batching."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from pipeline.model import build_model, optimize_for_inference
from pipeline.model import inference as inference_mod

PARITY_TOL = 2e-4          # forward vs the official code (now ~9e-6)
FULL_RES_TOL = 1e-3        # after resizing back to the image
EXACT_REL_TOL = 1e-5       # optimised exact path vs plain model, as a share of the output range


@pytest.fixture(scope="module")
def loaded(recipe_state_dict):
    """vits V2 and V1 with the recipe weights."""
    sd = {k: v for k, v in recipe_state_dict.items() if k != "pretrained.mask_token"}
    models = {}
    for version in ("v2", "v1"):
        m = build_model("vits", version)
        m.load_state_dict(sd)
        models[version] = m
    return models


class _Outputs(dict):
    """Plain and optimised forwards on the reference input, computed on first use: {version: (plain, opt)}."""

    def __init__(self, models, x):
        super().__init__()
        self.models, self.x = models, x

    def __missing__(self, version):
        m = self.models[version]
        with torch.inference_mode():
            self[version] = (m(self.x), optimize_for_inference(m)(self.x))
        return self[version]


@pytest.fixture(scope="module")
def outputs(loaded, reference):
    return _Outputs(loaded, torch.from_numpy(reference["net_input"]))


VERSIONS = ["v2", pytest.param("v1", marks=pytest.mark.slow)]    # v1: two more vits forwards


@pytest.mark.parametrize("version", VERSIONS)
def test_forward_matches_official(outputs, reference, version):
    plain, opt = outputs[version]
    ref = torch.from_numpy(reference[f"relative_{version}"])
    assert (plain - ref).abs().max().item() <= PARITY_TOL
    assert (opt - ref).abs().max().item() <= PARITY_TOL


@pytest.mark.slow
def test_full_resolution_matches_official(loaded, reference):
    from pipeline.preprocess import prepare, resize_output
    x = prepare(reference["image_rgb"])
    with torch.inference_mode():
        depth = resize_output(loaded["v2"](x), reference["image_rgb"].shape[:2]).numpy()[0]
    assert np.abs(depth - reference["depth_v2_full_res"]).max() <= FULL_RES_TOL


@pytest.mark.parametrize("version", VERSIONS)
def test_exact_inference_path_equals_plain_model(outputs, version):
    plain, opt = outputs[version]
    span = (plain.max() - plain.min()).item()
    assert span > 1.0                                         # a real output, not all zeros
    assert (opt - plain).abs().max().item() <= EXACT_REL_TOL * span


def test_inference_path_leaves_training_model_untouched(recipe_state_dict):
    m = build_model("vitt").train()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    opt = optimize_for_inference(m)
    assert m.training                                         # its mode is not changed either
    after = m.state_dict()
    assert list(after) == list(before)
    assert all(torch.equal(after[k], before[k]) for k in before)
    assert all(k.startswith(("pretrained.", "depth_head.")) for k in after)
    with pytest.raises(RuntimeError, match="cannot train"):
        opt.train()


def _random_vitt(metric: bool = False, seed: int = 0):
    torch.manual_seed(seed)
    m = build_model("vitt", "v2", metric=metric, max_depth=10.0)
    with torch.no_grad():                                     # non-trivial layerscale and biases
        for name, p in m.named_parameters():
            if name.endswith("gamma") or name.endswith("bias"):
                p.uniform_(-0.5, 0.5)
    return m


@pytest.mark.parametrize("metric", [False, True])
def test_exact_path_on_vitt_with_autocast_free_and_batched_input(metric):
    m = _random_vitt(metric)
    x = torch.randn(3, 3, 42, 56)
    with torch.inference_mode():
        plain, opt = m(x), optimize_for_inference(m)(x)
    span = (plain.max() - plain.min()).item()
    assert span > 0
    assert (opt - plain).abs().max().item() <= 1e-5 * max(span, 1.0)


def test_fast_path_within_stated_bound_or_warns(loaded, reference, outputs):
    m = loaded["v2"]
    if inference_mod.FAST_PATH is None:
        with pytest.warns(UserWarning, match="no approximate fast path"):
            fast = optimize_for_inference(m, fast=True)
        assert getattr(fast, "exact", False)
        return
    fast = optimize_for_inference(m, fast=True)           # pragma: no cover - only when one is shipped
    exact = outputs["v2"][1]
    with torch.inference_mode():
        approx = fast(torch.from_numpy(reference["net_input"]))
    assert (approx - exact).abs().max().item() <= 0.01 * (exact.max() - exact.min()).item()


def test_every_parameter_gets_a_gradient_in_training():
    m = _random_vitt().train()
    x = torch.randn(2, 3, 28, 42)
    out = m(x)                                                # (B, H, W)
    assert out.shape == (2, 28, 42)
    (out ** 2).mean().backward()
    missing = [n for n, p in m.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.abs().sum() > 0)]
    assert sorted(missing) == sorted(UNUSED_IN_OFFICIAL)


# Parameters the official architecture has but never uses in a forward pass: the skip unit of the
# deepest fusion block (refinenet4 is called without a skip input). (DINOv2's mask token is not
# a parameter here at all; checkpoint loading drops it.)
UNUSED_IN_OFFICIAL = tuple(
    f"depth_head.scratch.refinenet4.resConfUnit1.conv{i}.{p}" for i in (1, 2) for p in ("weight", "bias")
)


def test_metric_head_is_bounded_by_max_depth():
    m = _random_vitt(metric=True)
    with torch.no_grad():                                     # push the sigmoid to both ends
        m.depth_head.scratch.output_conv2[2].bias.fill_(30.0)
        hi = m(torch.randn(1, 3, 28, 28))
        m.depth_head.scratch.output_conv2[2].bias.fill_(-30.0)
        lo = m(torch.randn(1, 3, 28, 28))
    assert float(hi.max()) <= 10.0 and float(hi.min()) > 9.0
    assert float(lo.min()) >= 0.0 and float(lo.max()) < 1e-6
    m2 = _random_vitt(metric=True)
    with torch.no_grad():
        mid = m2(torch.randn(2, 3, 28, 42))
    assert 0.0 < float(mid.min()) and float(mid.max()) < 10.0


@pytest.mark.parametrize("optimised", [False, True])
def test_batched_equals_per_image(optimised):
    m = _random_vitt()
    f = optimize_for_inference(m) if optimised else m
    x = torch.randn(3, 3, 42, 28)
    with torch.inference_mode():
        batched = f(x)
        single = torch.cat([f(x[i:i + 1]) for i in range(3)])
    assert batched.shape == (3, 42, 28)
    torch.testing.assert_close(batched, single, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(batched[0], batched[1])          # the images differ


@pytest.mark.parametrize("optimised", [False, True])
def test_input_not_multiple_of_14_is_a_clear_error(optimised):
    m = _random_vitt()
    f = optimize_for_inference(m) if optimised else m
    with pytest.raises(ValueError, match=r"\(28, 30\) is not a multiple of 14"):
        with torch.inference_mode():
            f(torch.zeros(1, 3, 28, 30))


def test_state_dict_keys_are_official(official_shapes):
    m = build_model("vits", "v2")
    keys = set(m.state_dict())
    official = set(official_shapes["shapes"]["vits"])
    assert keys == official - {"pretrained.mask_token"} or keys == official


def test_non_depth_anything_module_comes_back_in_eval_mode():
    lin = torch.nn.Linear(2, 2).train()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert optimize_for_inference(lin) is lin and not lin.training
