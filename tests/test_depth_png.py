"""depth_png: golden codes, round trips within half a step, constant arrays, NaN, third-party files."""
from __future__ import annotations

import json
import struct

import numpy as np
import pytest
from PIL import Image

from pipeline.errors import ConfigError, ImageError
from pipeline.files.depth_png import TEXT_KEY, load_depth_png, read_depth_png, write_depth_png


def _ihdr(path) -> tuple[int, int, int, int]:
    """(width, height, bit depth, colour type) straight from the PNG bytes, no image library."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">IIBB", data[16:26])


def _raw_codes(path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im).astype(np.int64)


def test_golden_codes_use_the_full_range(tmp_path):
    path = tmp_path / "d.png"
    meta = write_depth_png(path, np.array([[0.0, 1.0], [2.0, 3.0]], np.float32), kind="disparity")
    assert _ihdr(path) == (2, 2, 16, 0)                                       # 16-bit grayscale
    np.testing.assert_array_equal(_raw_codes(path), [[0, 21845], [43690, 65535]])
    assert meta["offset"] == 0.0 and meta["scale"] == pytest.approx(3.0 / 65535)
    assert (meta["kind"], meta["unit"], meta["nodata"], meta["path"]) == ("disparity", "relative disparity",
                                                                          None, str(path))
    with Image.open(path) as im:
        stored = json.loads(im.info[TEXT_KEY])
    assert stored["scale"] == meta["scale"] and stored["format"] == 1
    np.testing.assert_allclose(read_depth_png(path), [[0, 1], [2, 3]], atol=3.0 / 65535 / 2)


@pytest.mark.parametrize("lo, hi", [(0.0, 4.8), (-3.0, 2.0), (1000.0, 1000.5), (0.5, 80.0)])
def test_round_trip_within_half_a_step(tmp_path, lo, hi):
    rng = np.random.default_rng(0)
    a = rng.uniform(lo, hi, (37, 53)).astype(np.float32)
    a[0, 0], a[-1, -1] = lo, hi
    path = tmp_path / "r.png"
    meta = write_depth_png(path, a, kind="metric_depth")
    back = read_depth_png(path)
    assert back.dtype == np.float32 and back.shape == a.shape
    step = (float(a.max()) - float(a.min())) / 65535
    assert np.abs(back.astype(np.float64) - a).max() <= step / 2 + 4 * np.spacing(np.float32(max(abs(lo), abs(hi))))
    assert _raw_codes(path).min() == 0 and _raw_codes(path).max() == 65535
    assert load_depth_png(path).kind == "metric_depth" and meta["unit"] == "m"


def test_reference_prediction_round_trip(tmp_path, reference):
    a = reference["depth_v2_full_res"].astype(np.float32)
    write_depth_png(tmp_path / "ref.png", a)
    err = np.abs(read_depth_png(tmp_path / "ref.png") - a).max()
    assert err <= (a.max() - a.min()) / 65535 / 2 + 1e-6
    assert err > 0                                                           # it is quantised, not copied


def test_constant_arrays_are_exact(tmp_path):
    for value in (0.0, 3.25, -7.5):
        path = tmp_path / f"c{value}.png"
        meta = write_depth_png(path, np.full((4, 5), value, np.float32))
        assert meta["scale"] == 0.0
        np.testing.assert_array_equal(read_depth_png(path), np.full((4, 5), value, np.float32))


def test_nan_convention(tmp_path):
    a = np.array([[np.nan, 0.0], [1.0, np.inf], [0.5, -np.inf]], np.float32)
    path = tmp_path / "n.png"
    meta = write_depth_png(path, a)
    assert meta["nodata"] == 0 and meta["scale"] == pytest.approx(1.0 / 65534)
    np.testing.assert_array_equal(_raw_codes(path), [[0, 1], [65535, 0], [32768, 0]])
    back = read_depth_png(path)
    np.testing.assert_array_equal(np.isnan(back), ~np.isfinite(a))
    np.testing.assert_allclose(back[np.isfinite(a)], [0.0, 1.0, 0.5], atol=0.5 / 65534)
    write_depth_png(tmp_path / "all.png", np.full((2, 3), np.nan))
    assert np.isnan(read_depth_png(tmp_path / "all.png")).all()


def test_third_party_png_is_raw_and_flagged(tmp_path):
    raw = np.array([[0, 1000], [65535, 1234]], np.uint16)
    path = tmp_path / "kinect.png"
    Image.fromarray(raw).save(path)
    loaded = load_depth_png(path)
    assert loaded.calibrated is False and loaded.bit_depth == 16 and loaded.kind is None
    np.testing.assert_array_equal(loaded.array, raw.astype(np.float32))
    with pytest.raises(ImageError, match=r"kinect.png: has no depth-anything-studio .*load_depth_png"):
        read_depth_png(path)
    Image.fromarray(np.array([[3, 250]], np.uint8)).save(tmp_path / "eight.png")
    eight = load_depth_png(tmp_path / "eight.png")
    assert eight.bit_depth == 8 and eight.array.tolist() == [[3.0, 250.0]]


def test_bad_inputs(tmp_path):
    with pytest.raises(ConfigError, match="unknown prediction kind"):
        write_depth_png(tmp_path / "k.png", np.zeros((2, 2)), kind="depth")
    with pytest.raises(ConfigError, match="2-D"):
        write_depth_png(tmp_path / "s.png", np.zeros((2, 2, 3)))
    with pytest.raises(ImageError, match="not found"):
        read_depth_png(tmp_path / "missing.png")
    (tmp_path / "junk.png").write_bytes(b"not a png")
    with pytest.raises(ImageError, match="junk.png: cannot read"):
        read_depth_png(tmp_path / "junk.png")
    Image.new("RGB", (2, 2)).save(tmp_path / "rgb.png")
    with pytest.raises(ImageError, match="single-channel"):
        load_depth_png(tmp_path / "rgb.png")
    from pipeline.errors import StudioError
    with pytest.raises(StudioError, match="cannot write"):
        write_depth_png(tmp_path / "no" / "such" / "dir.png", np.zeros((2, 2)))
