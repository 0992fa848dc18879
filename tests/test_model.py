"""The network: parity with the official code, the position-embedding resample, training, metric head, batching."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from tiny_models import random_vitt

from pipeline.model import build_model
from pipeline.model.encoder import interpolate_pos_embed

PARITY_TOL = 2e-4          # forward vs the official code (now ~9e-6)
FULL_RES_TOL = 1e-3        # after resizing back to the image


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


VERSIONS = ["v2", pytest.param("v1", marks=pytest.mark.slow)]    # v1: another vits forward


@pytest.mark.parametrize("version", VERSIONS)
def test_forward_matches_official(loaded, reference, version):
    with torch.inference_mode():
        out = loaded[version](torch.from_numpy(reference["net_input"]))
    ref = torch.from_numpy(reference[f"relative_{version}"])
    assert (out - ref).abs().max().item() <= PARITY_TOL


@pytest.mark.slow
def test_full_resolution_matches_official(loaded, reference):
    from pipeline.preprocess import prepare, resize_output
    x = prepare(reference["image_rgb"])
    with torch.inference_mode():
        depth = resize_output(loaded["v2"](x), reference["image_rgb"].shape[:2]).numpy()[0]
    assert np.abs(depth - reference["depth_v2_full_res"]).max() <= FULL_RES_TOL


def _official_resample(pos_embed: torch.Tensor, grid_h: int, grid_w: int) -> torch.Tensor:
    """DINOv2's own code: F.interpolate with scale factor (grid + 0.1) / 37; no resample for 37 x 37."""
    side = 37
    if grid_h == grid_w == side:
        return pos_embed
    patch = pos_embed[:, 1:].reshape(1, side, side, -1).permute(0, 3, 1, 2)
    patch = F.interpolate(patch, scale_factor=((grid_h + 0.1) / side, (grid_w + 0.1) / side), mode="bicubic",
                          antialias=False)
    assert patch.shape[-2:] == (grid_h, grid_w)
    return torch.cat((pos_embed[:, :1], patch.permute(0, 2, 3, 1).reshape(1, grid_h * grid_w, -1)), dim=1)


# Awkward grids: one row, tiny, just off 37 on either side, 37 on one axis only, the square 37 x 37
# (no resample), upsampling past 2x, the reference image's 37 x 55.
GRIDS = [(1, 5), (2, 3), (36, 38), (37, 55), (26, 37), (37, 37), (74, 101), (38, 37)]


@pytest.mark.parametrize("grid", GRIDS, ids=[f"{h}x{w}" for h, w in GRIDS])
def test_position_embedding_resample_is_the_official_one_in_float64(grid):
    """The matrix form every exported graph carries equals DINOv2's F.interpolate, checked in float64."""
    g = torch.Generator().manual_seed(grid[0] * 1000 + grid[1])
    pos = torch.randn(1, 1 + 37 * 37, 24, generator=g, dtype=torch.float64)
    ours = interpolate_pos_embed(pos, *grid)
    official = _official_resample(pos, *grid)
    assert ours.dtype == torch.float64 and ours.shape == official.shape == (1, 1 + grid[0] * grid[1], 24)
    assert (ours - official).abs().max().item() < 1e-12
    if grid != (37, 37):                                  # the resample does real work here
        assert not torch.equal(ours[:, 1:1 + min(grid[1], 37)], pos[:, 1:1 + min(grid[1], 37)])


def test_position_embedding_resample_in_float32_is_as_close_as_torchs_own():
    pos = torch.randn(1, 1 + 37 * 37, 384, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    exact = _official_resample(pos, 37, 55)
    ours = interpolate_pos_embed(pos.float(), 37, 55).double()
    torch_own = _official_resample(pos.float(), 37, 55).double()
    assert (ours - exact).abs().max() <= 2 * (torch_own - exact).abs().max() + 1e-7


def test_return_features_gives_the_tapped_tokens_beside_the_same_output():
    m = random_vitt()
    x = torch.randn(2, 3, 28, 42)
    with torch.no_grad():
        plain = m(x)
        out, feats = m(x, return_features=True)
        taps = m.encoder(x, m.config.layers)
    assert torch.equal(out, plain)
    assert len(feats) == 4 and all(f.shape == (2, 2 * 3, 64) for f in feats)
    assert all(torch.equal(a, b) for a, b in zip(feats, taps, strict=True))


def test_every_parameter_gets_a_gradient_in_training():
    m = random_vitt().train()
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
    m = random_vitt(metric=True)
    with torch.no_grad():                                     # push the sigmoid to both ends
        m.depth_head.scratch.output_conv2[2].bias.fill_(30.0)
        hi = m(torch.randn(1, 3, 28, 28))
        m.depth_head.scratch.output_conv2[2].bias.fill_(-30.0)
        lo = m(torch.randn(1, 3, 28, 28))
    assert float(hi.max()) <= 10.0 and float(hi.min()) > 9.0
    assert float(lo.min()) >= 0.0 and float(lo.max()) < 1e-6
    m2 = random_vitt(metric=True)
    with torch.no_grad():
        mid = m2(torch.randn(2, 3, 28, 42))
    assert 0.0 < float(mid.min()) and float(mid.max()) < 10.0


def test_batched_equals_per_image():
    m = random_vitt()
    f = m
    x = torch.randn(3, 3, 42, 28)
    with torch.inference_mode():
        batched = f(x)
        single = torch.cat([f(x[i:i + 1]) for i in range(3)])
    assert batched.shape == (3, 42, 28)
    torch.testing.assert_close(batched, single, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(batched[0], batched[1])          # the images differ


def test_input_not_multiple_of_14_is_a_clear_error():
    f = random_vitt()
    with pytest.raises(ValueError, match=r"\(28, 30\) is not a multiple of 14"):
        with torch.inference_mode():
            f(torch.zeros(1, 3, 28, 30))


def test_state_dict_keys_are_official(official_shapes):
    m = build_model("vits", "v2")
    keys = set(m.state_dict())
    official = set(official_shapes["shapes"]["vits"])
    assert keys == official - {"pretrained.mask_token"} or keys == official
