"""The network-input bound: every image becomes a network input of bounded size, or a clear refusal."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.config import PATCH_SIZE
from pipeline.errors import ConfigError, ImageError
from pipeline.preprocess import (
    MAX_ASPECT,
    MAX_INPUT_SIZE,
    max_aspect_ratio,
    max_network_pixels,
    network_size,
    prepare,
    resize_input,
)


@pytest.mark.parametrize("hw", [(500, 741), (480, 640), (518, 518), (100, 400), (400, 100), (9, 30)])
def test_ordinary_images_keep_the_official_short_side_rule(hw):
    """Up to MAX_ASPECT:1 nothing changes: the short side becomes the input size (official 'lower_bound')."""
    h, w = hw
    nh, nw = network_size(h, w, 518)
    assert min(nh, nw) == 518 and nh % PATCH_SIZE == 0 and nw % PATCH_SIZE == 0
    assert abs(nw / nh - w / h) < 0.05 * w / h


@pytest.mark.parametrize("input_size", [196, 518, 1036])
@pytest.mark.parametrize("hw", [(100, 2000), (2000, 100), (64, 4000), (300, 1201), (1, 100)])
def test_wide_images_are_capped_on_the_long_side(hw, input_size):
    """Past MAX_ASPECT:1 the long side gets MAX_ASPECT x input (official 'upper_bound' into that box)."""
    h, w = hw
    if max(h, w) / min(h, w) > max_aspect_ratio(input_size):
        pytest.skip("refused at this input size (tested below)")
    nh, nw = network_size(h, w, input_size)
    assert nh * nw <= max_network_pixels(input_size)
    assert max(nh, nw) == MAX_ASPECT * input_size
    assert min(nh, nw) >= PATCH_SIZE and nh % PATCH_SIZE == 0 and nw % PATCH_SIZE == 0
    ratio, got = max(h, w) / min(h, w), max(nh, nw) / min(nh, nw)
    assert got == pytest.approx(ratio, rel=0.5 * PATCH_SIZE / min(nh, nw) + 1e-9)   # aspect kept to the rounding


def test_the_bound_is_continuous_at_the_aspect_limit():
    assert network_size(518, 4 * 518, 518) == (518, 4 * 518)
    h, w = network_size(518, 4 * 518 + 1, 518)
    assert (h, w) == (518, 4 * 518)


@pytest.mark.parametrize("hw", [(8, 2000), (10, 20000), (20000, 10)])
def test_strips_thinner_than_one_patch_are_refused_with_the_reason(hw):
    h, w = hw
    with pytest.raises(ImageError) as e:
        network_size(h, w, 518)
    message = str(e.value)
    assert f"{w}×{h}" in message and f"{max_aspect_ratio(518)}:1" in message and "\n" not in message


def test_the_refusal_names_the_image_when_given():
    with pytest.raises(ImageError, match=r"^strip\.png: "):
        network_size(8, 2000, 518, name="strip.png")


@pytest.mark.parametrize("bad", [0, 13, 15, MAX_INPUT_SIZE + PATCH_SIZE, 14 * 10_000])
def test_input_sizes_outside_the_supported_range_are_config_errors(bad):
    with pytest.raises(ConfigError, match="input size"):
        network_size(100, 100, bad)


def test_prepare_of_a_wide_strip_is_bounded():
    rgb = np.zeros((50, 5000, 3), np.uint8)                              # 100:1, allowed at 518
    x = prepare(rgb, 518)
    assert x.shape[-2:] == (14, 2072) and x.numel() <= 3 * max_network_pixels(518)


def test_resize_input_refuses_outputs_no_input_size_allows():
    """The safety net for callers with a rule of their own (training's short-side resize)."""
    x = torch.zeros(1, 3, 8, 2000)
    with pytest.raises(ImageError, match="at most"):
        resize_input(x, (518, 129_500))
    assert resize_input(x, (14, 2072)).shape[-2:] == (14, 2072)
