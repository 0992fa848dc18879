"""Helpers for the sharded-labelling tests (imported by name: pytest puts this folder on sys.path)."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
INPUT_SIZE = 42
MODEL_ID = "vitt-teacher"


def make_images(folder: Path, n: int, seed: int = 0) -> list[str]:
    """n small PNGs of three heights (so batches mix network sizes); returns manifest lines."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    lines = []
    for i in range(n):
        rgb = rng.integers(0, 256, (28 + 2 * (i % 3), 36, 3), dtype=np.uint8)
        Image.fromarray(rgb).save(folder / f"im{i:03d}.png")
        lines.append(f"im{i:03d}.png")
    return lines


def write_manifest(path: Path, lines: list[str]) -> Path:
    path.write_text("# test images\n" + "\n".join(lines) + "\n")
    return path


def cli_env() -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
