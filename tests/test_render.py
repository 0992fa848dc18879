"""render: colour maps and grayscale from float arrays, with known values and NaN handling."""
from __future__ import annotations

import matplotlib
import numpy as np
import pytest
from matplotlib.colors import ListedColormap
from PIL import Image

from pipeline.errors import ConfigError
from pipeline.render import colorize, colour_image, grayscale


def _mpl(name: str, x: float) -> np.ndarray:
    return np.rint(np.array(matplotlib.colormaps[name](x)[:3]) * 255).astype(np.uint8)


def test_endpoints_are_the_colour_maps_ends_and_near_disparity_is_red():
    disparity = np.array([[0.5, 4.0], [2.25, 0.5]], np.float32)            # 4.0 = nearest
    rgb = colorize(disparity)
    assert rgb.dtype == np.uint8 and rgb.shape == (2, 2, 3)
    np.testing.assert_array_equal(rgb[0, 0], _mpl("Spectral_r", 0.0))
    np.testing.assert_array_equal(rgb[0, 1], _mpl("Spectral_r", 1.0))
    np.testing.assert_array_equal(rgb[1, 0], _mpl("Spectral_r", 0.5))
    r, g, b = rgb[0, 1].astype(int)
    assert r > 150 and b < 80                                                # near: red end
    r, g, b = rgb[0, 0].astype(int)
    assert b > r                                                             # far: blue end
    np.testing.assert_array_equal(colorize(disparity, kind="metric_depth")[0, 0], _mpl("Spectral_r", 1.0))


def test_affine_invariant_and_vmin_vmax_clip():
    a = np.linspace(-3, 7, 40, dtype=np.float32).reshape(5, 8)
    np.testing.assert_array_equal(colorize(a, "viridis"), colorize(2.5 * a + 11, "viridis"))
    clipped = colorize(a, "magma", vmin=0.0, vmax=1.0)
    assert (clipped[a <= 0] == _mpl("magma", 0.0)).all()
    assert (clipped[a >= 1] == _mpl("magma", 1.0)).all()


def test_grayscale_known_values_and_direction():
    a = np.array([[2.0, 3.0, 4.0], [2.5, 3.5, 2.0]], np.float32)
    np.testing.assert_array_equal(grayscale(a), [[0, 128, 255], [64, 191, 0]])
    np.testing.assert_array_equal(grayscale(a, kind="metric_depth"), [[255, 128, 0], [191, 64, 255]])
    np.testing.assert_array_equal(grayscale(a, vmin=3.0, vmax=4.0), [[0, 0, 255], [0, 128, 0]])


def test_nan_and_inf_are_black_and_ignored_for_the_range():
    a = np.array([[np.nan, 1.0], [np.inf, 3.0], [-np.inf, 2.0]], np.float32)
    g = grayscale(a)
    np.testing.assert_array_equal(g, [[0, 0], [0, 255], [0, 128]])
    rgb = colorize(a)
    assert (rgb[[0, 1, 2], [0, 0, 0]] == 0).all()
    np.testing.assert_array_equal(rgb[1, 1], _mpl("Spectral_r", 1.0))
    assert (grayscale(np.full((3, 3), np.nan)) == 0).all()
    assert (grayscale(np.full((3, 3), 5.0)) == 0).all()                      # constant: start of the map


def test_any_registered_colour_map_name():
    rgb = colorize(np.array([[0.0, 1.0]]), "cividis")
    np.testing.assert_array_equal(rgb[0, 1], _mpl("cividis", 1.0))
    custom = ListedColormap([[0, 0, 0], [0, 1, 0]], name="test_black_green")
    matplotlib.colormaps.register(custom)
    try:
        np.testing.assert_array_equal(colorize(np.array([[0.0, 1.0]]), "test_black_green"),
                                      [[[0, 0, 0], [0, 255, 0]]])
    finally:
        matplotlib.colormaps.unregister("test_black_green")


def test_unknown_colour_map_is_a_config_error_that_says_how_to_list_names():
    with pytest.raises(ConfigError, match=r"unknown colour map 'spectral_R'.*Spectral_r.*matplotlib.colormaps"):
        colorize(np.zeros((2, 2)), "spectral_R")
    with pytest.raises(ConfigError, match="2-D"):
        grayscale(np.zeros((2, 2, 3)))


@pytest.mark.parametrize("cmap", ["Spectral_r", "gray", "magma"])
def test_colour_image_is_a_palette_picture_with_colorizes_pixels(tmp_path, cmap):
    """The PNG the studio writes decodes to exactly colorize's pixels; a palette one when every value is
    finite, or when the map holds BAD_COLOR itself (gray); RGB when non-finite pixels need a 257th colour."""
    a = np.linspace(-3.0, 5.0, 48 * 64, dtype=np.float32).reshape(48, 64)
    a[5, 7], a[6, 8] = np.nan, np.inf
    for values, finite in ((np.nan_to_num(a, nan=1.0, posinf=2.0), True), (a, False)):
        colour_image(values, cmap).save(tmp_path / "c.png")
        with Image.open(tmp_path / "c.png") as back:
            assert back.mode == ("P" if finite or cmap == "gray" else "RGB")
            np.testing.assert_array_equal(np.asarray(back.convert("RGB")), colorize(values, cmap))
