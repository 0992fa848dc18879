"""Test images for the studio tests (shared by tests/studio and tests/e2e): good, odd and bad inputs."""
from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image


@pytest.fixture(scope="session")
def small_rgb() -> np.ndarray:
    """A 60x80 image with structure (a gradient and a bright square)."""
    y, x = np.mgrid[0:60, 0:80]
    rgb = np.stack([x * 3, y * 4, (x + y) * 2], axis=-1).astype(np.uint8)
    rgb[20:40, 30:50] = 250
    return rgb


def png_bytes(array: np.ndarray, **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG", **kw)
    return buf.getvalue()


def bomb_png(width: int, height: int) -> bytes:
    """A valid-looking PNG header claiming width x height 8-bit gray pixels, with a tiny zero IDAT."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 1000)) + chunk(b"IEND", b"")


@pytest.fixture
def bad_inputs(tmp_path, small_rgb) -> dict:
    """Files a visitor might upload that are not usable images: name -> path."""
    files = {}
    (tmp_path / "notes.txt").write_text("this is not an image\n" * 20)
    files["not an image"] = tmp_path / "notes.txt"
    jpg = io.BytesIO()
    Image.fromarray(small_rgb).save(jpg, format="JPEG")
    (tmp_path / "cut.jpg").write_bytes(jpg.getvalue()[: len(jpg.getvalue()) // 3])
    files["truncated jpeg"] = tmp_path / "cut.jpg"
    (tmp_path / "dot.png").write_bytes(png_bytes(np.zeros((1, 1, 3), np.uint8)))
    files["1x1"] = tmp_path / "dot.png"
    (tmp_path / "bomb.png").write_bytes(bomb_png(30000, 30000))
    files["decompression bomb"] = tmp_path / "bomb.png"
    return files


@pytest.fixture
def odd_but_valid_inputs(tmp_path, small_rgb) -> dict:
    """Images in unusual formats that must work: name -> path."""
    gray16 = (np.linspace(0, 65535, 60 * 80).reshape(60, 80)).astype(np.uint16)
    Image.fromarray(gray16).save(tmp_path / "gray16.png")
    Image.fromarray(small_rgb).convert("CMYK").save(tmp_path / "cmyk.jpg", format="JPEG")
    return {"16-bit grayscale png": tmp_path / "gray16.png", "cmyk jpeg": tmp_path / "cmyk.jpg"}
