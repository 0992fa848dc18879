"""decode_image: every accepted source and mode gives known uint8 RGB values; bad input -> ImageError."""
from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from pipeline.errors import ImageError, StudioError
from pipeline.files.image_io import MAX_PIXELS, DecodedImage, decode_image


@pytest.fixture()
def rgb() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (30, 50, 3), dtype=np.uint8)


def _png_bytes(im: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "PNG", **kw)
    return buf.getvalue()


def _jpeg_with_exif(im: Image.Image, exif: Image.Exif) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "JPEG", exif=exif, quality=95)
    return buf.getvalue()


def test_path_bytes_pil_and_array_agree(rgb, tmp_path):
    path = tmp_path / "x.png"
    Image.fromarray(rgb).save(path)
    for src in (path, str(path), path.read_bytes(), Image.open(path), rgb):
        d = decode_image(src)
        assert d.rgb.dtype == np.uint8 and d.rgb.shape == (30, 50, 3)
        np.testing.assert_array_equal(d.rgb, rgb)
    assert decode_image(path).name == str(path)
    assert decode_image(path).original_mode == "RGB"


def test_rgba_composited_on_white():
    px = np.array([[[200, 100, 0, 255], [200, 100, 0, 0]], [[200, 100, 0, 128], [0, 0, 0, 51]]], np.uint8)
    px = np.tile(px, (2, 2, 1))                                              # (4, 4, 4)
    expected = np.array([[[200, 100, 0], [255, 255, 255]],
                         [[np.rint(200 * 128 / 255 + 255 * 127 / 255), np.rint(100 * 128 / 255 + 255 * 127 / 255),
                           np.rint(255 * 127 / 255)], [204, 204, 204]]], np.uint8)
    expected = np.tile(expected, (2, 2, 1))
    np.testing.assert_array_equal(decode_image(Image.fromarray(px, "RGBA")).rgb, expected)
    np.testing.assert_array_equal(decode_image(px).rgb, expected)            # 4-channel array: same rule
    np.testing.assert_array_equal(decode_image(_png_bytes(Image.fromarray(px, "RGBA"))).rgb, expected)


def test_gray_la_and_palette_with_transparency():
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    np.testing.assert_array_equal(decode_image(Image.fromarray(gray, "L")).rgb, np.stack([gray] * 3, -1))
    la = Image.merge("LA", [Image.fromarray(gray), Image.fromarray(np.zeros_like(gray))])
    assert (decode_image(la).rgb == 255).all()                               # fully transparent -> white
    pal = Image.new("P", (4, 3))
    pal.putpalette([10, 20, 30, 40, 50, 60] + [0] * 762)
    pal.putdata([0, 1] * 6)
    pal.info["transparency"] = 1                                             # palette index 1 transparent
    out = decode_image(_png_bytes(pal, transparency=1)).rgb
    np.testing.assert_array_equal(out[0, 0], [10, 20, 30])
    np.testing.assert_array_equal(out[0, 1], [255, 255, 255])


def test_sixteen_bit_scaled_by_value_range_not_truncated():
    v = np.array([[1000, 2000], [3000, 5000]], np.uint16)
    expected = np.rint((v.astype(float) - 1000) * 255 / 4000).astype(np.uint8)  # [[0, 64], [128, 255]]
    im = Image.fromarray(v)
    assert im.mode == "I;16"
    d = decode_image(_png_bytes(im))
    assert d.original_mode == "I;16"
    np.testing.assert_array_equal(d.rgb[..., 0], expected)
    np.testing.assert_array_equal(d.rgb[..., 2], expected)
    np.testing.assert_array_equal(decode_image(v).rgb[..., 1], expected)     # uint16 array: same rule
    np.testing.assert_array_equal(decode_image(Image.fromarray(v.astype(np.int32), "I")).rgb[..., 0], expected)
    const = np.full((3, 3), 257 * 100, np.uint16)                            # constant: nominal 16-bit scale
    assert (decode_image(const).rgb == 100).all()


def test_float_inputs():
    f01 = np.array([[0.0, 0.5], [1.0, 0.25]], np.float32)
    np.testing.assert_array_equal(decode_image(f01).rgb[..., 0], [[0, 128], [255, 64]])
    f = np.array([[-1.0, 0.0], [1.0, 3.0]], np.float32)                      # outside [0, 1]: stretched
    np.testing.assert_array_equal(decode_image(f).rgb[..., 0], np.rint((f + 1) * 255 / 4).astype(np.uint8))
    np.testing.assert_array_equal(decode_image(Image.fromarray(f, "F")).rgb[..., 0],
                                  np.rint((f + 1) * 255 / 4).astype(np.uint8))
    rgbf = np.random.default_rng(1).random((5, 6, 3))
    np.testing.assert_array_equal(decode_image(rgbf).rgb, np.rint(rgbf * 255).astype(np.uint8))


def test_cmyk_converts_like_pil(rgb):
    cmyk = Image.fromarray(rgb).convert("CMYK")
    d = decode_image(cmyk)
    assert d.original_mode == "CMYK"
    np.testing.assert_array_equal(d.rgb, np.asarray(cmyk.convert("RGB")))
    assert np.abs(d.rgb.astype(int) - rgb).max() <= 1                        # PIL's CMYK is lossless here


def test_exif_orientation_and_35mm_focal(rgb):
    exif = Image.Exif()
    exif[0x0112] = 6                                                          # rotate 90 CW on display
    exif.get_ifd(0x8769)[0xA405] = 28                                         # 28 mm equivalent
    d = decode_image(_jpeg_with_exif(Image.fromarray(rgb), exif))
    assert d.rgb.shape == (50, 30, 3)
    plain = decode_image(_jpeg_with_exif(Image.fromarray(rgb), Image.Exif())).rgb
    np.testing.assert_array_equal(d.rgb, np.rot90(plain, k=-1))              # same JPEG data, rotated
    assert d.focal_px == pytest.approx(28 / 36 * 50)


def test_focal_from_focal_plane_resolution_rescaled_to_file_size(rgb):
    exif = Image.Exif()
    ifd = exif.get_ifd(0x8769)
    ifd[0x920A] = 4.0          # 4 mm lens
    ifd[0xA20E] = 250.0        # 250 px per cm on the sensor
    ifd[0xA210] = 3            # unit: cm
    ifd[0xA002] = 100          # sensor image was 100 px wide; the file is 50
    d = decode_image(_jpeg_with_exif(Image.fromarray(rgb), exif))
    assert d.focal_px == pytest.approx(4.0 * 25.0 * 50 / 100)
    assert decode_image(rgb).focal_px is None


@pytest.mark.parametrize("src, message", [
    (b"", "empty"),
    (b"this is not an image at all", "not an image"),
    (np.zeros((0, 5, 3), np.uint8), "empty"),
    (np.zeros((1, 1, 3), np.uint8), "1x1"),
    (np.zeros((4, 4, 5), np.uint8), "shape"),
    (np.array([[0.1, np.nan], [0.2, 0.3]]), "NaN"),
    (np.array([[0.1, np.inf], [0.2, 0.3]]), "NaN or infinite"),
    (np.zeros((3, 3), np.complex64), "unsupported pixel type"),
])
def test_bad_inputs_raise_image_error(src, message):
    with pytest.raises(ImageError, match=message):
        decode_image(src)


def test_bad_files_name_the_file(tmp_path, rgb):
    jpg = tmp_path / "cut.jpg"
    Image.fromarray(rgb).save(jpg, quality=95)
    jpg.write_bytes(jpg.read_bytes()[: jpg.stat().st_size // 2])
    for path, message in [(jpg, "corrupt or truncated"), (tmp_path / "missing.png", "not found"),
                          (tmp_path, "folder")]:
        with pytest.raises(ImageError, match=message) as err:
            decode_image(path)
        assert str(path) in str(err.value)
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(ImageError, match="empty.png: the file is empty"):
        decode_image(empty)
    one = tmp_path / "one.png"
    Image.new("RGB", (1, 1)).save(one)
    with pytest.raises(ImageError, match=r"one.png: the image is 1x1 pixels"):
        decode_image(one)


def test_pixel_cap_checked_from_the_header_before_decoding(tmp_path):
    path = tmp_path / "big.png"
    Image.new("L", (400, 300)).save(path)
    with pytest.raises(ImageError, match=r"400x300 pixels and exceeds the limit of 100,000 pixels"):
        decode_image(path, max_pixels=100_000)
    assert decode_image(path, max_pixels=120_000).rgb.shape == (300, 400, 3)
    with pytest.raises(ImageError, match="exceeds the limit"):
        decode_image(np.zeros((400, 300), np.uint8), max_pixels=100_000)
    assert MAX_PIXELS == 50_000_000
    assert issubclass(ImageError, StudioError)


def test_two_by_two_is_the_smallest_accepted():
    d = decode_image(np.full((2, 2), 7, np.uint8))
    assert isinstance(d, DecodedImage) and (d.rgb == 7).all()
    assert decode_image(d) is d


def _png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims width x height (a decompression bomb's header)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)               # 8-bit grayscale
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def test_decompression_bombs_are_refused_from_the_header():
    with pytest.raises(ImageError, match=r"bomb.png: is 8000x8000 pixels and exceeds the limit of 50,000,000"):
        decode_image(_png_claiming(8000, 8000), name="bomb.png")              # 64 MP: over our 50 MP cap
    with pytest.raises(ImageError, match=r"exceeds the limit of 50,000,000 pixels"):
        decode_image(_png_claiming(30000, 30000))                             # 900 MP: PIL's own guard first
    with pytest.raises(ImageError, match="corrupt or truncated"):
        decode_image(_png_claiming(100, 100))                                 # within the cap: data too short


@pytest.mark.timeout(20)
def test_a_fifo_is_refused_without_blocking(tmp_path):
    import os
    os.mkfifo(tmp_path / "pipe.png")
    with pytest.raises(ImageError, match="not a regular file"):
        decode_image(tmp_path / "pipe.png")
