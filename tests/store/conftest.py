"""Fixtures for the label-store tests: a fresh store in tmp_path and small real images."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from pipeline.store import Store


def png_bytes(width: int = 8, height: int = 6, seed: int = 0, fmt: str = "PNG") -> bytes:
    """A small, valid image whose bytes differ per seed."""
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(buf, format=fmt)
    return buf.getvalue()


@pytest.fixture
def store(tmp_path) -> Store:
    return Store(tmp_path / "studio.db")


@pytest.fixture
def image(store):
    """An image (8 x 6) in the store, no label yet."""
    record, _ = store.add_image(png_bytes(), "cat.png", width=8, height=6, author="alice")
    return record


def depth(value: float = 1.0, shape=(6, 8)) -> np.ndarray:
    """A float32 label with distinct values: value + 0.01 * pixel index."""
    return (value + 0.01 * np.arange(shape[0] * shape[1], dtype=np.float32).reshape(shape)).astype(np.float32)


@pytest.fixture
def make_png():
    return png_bytes


@pytest.fixture
def make_depth():
    return depth
