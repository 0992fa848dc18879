"""Procedural scenes with exact depth, for proving on the CPU that training learns something.

A pinhole camera 1.5 m above a floor looks at a back wall; 1-3 upright boxes stand on the
floor. Every surface carries a checker texture in world units (its apparent size shrinks with
distance) and the air adds fog (colours fade towards grey with distance): the two monocular
cues a small network picks up within a few hundred steps. Depth is the exact ray distance
along the optical axis (z), in metres.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

CAMERA_HEIGHT = 1.5
FOG_DISTANCE = 7.0


def _checker(a: np.ndarray, b: np.ndarray, cell: float) -> np.ndarray:
    return ((np.floor(a / cell) + np.floor(b / cell)) % 2).astype(np.float32)


def render_scene(rng: np.random.Generator, height: int = 64, width: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 (H, W, 3) RGB, float32 (H, W) depth in metres) of one random scene."""
    f = width * rng.uniform(0.8, 1.2)
    v, u = np.mgrid[0:height, 0:width].astype(np.float64) + 0.5
    dx, dy = (u - width / 2) / f, -(v - height / 2 + rng.uniform(-0.15, 0.15) * height) / f   # ray per unit z
    wall = rng.uniform(6.0, 12.0)
    depth = np.full((height, width), wall)
    surf = np.zeros((height, width), dtype=np.int64)                       # 0 wall, 1 floor, 2.. boxes
    with np.errstate(divide="ignore", invalid="ignore"):
        z_floor = np.where(dy < 0, -CAMERA_HEIGHT / dy, np.inf)
    hit = z_floor < depth
    depth[hit], surf[hit] = z_floor[hit], 1
    for i in range(int(rng.integers(1, 4))):
        z = rng.uniform(2.0, wall - 1.0)
        x0, w, h = rng.uniform(-2.0, 1.5), rng.uniform(0.5, 1.8), rng.uniform(0.5, 2.5)
        x, y = dx * z, dy * z
        on = (x >= x0) & (x <= x0 + w) & (y >= -CAMERA_HEIGHT) & (y <= -CAMERA_HEIGHT + h) & (z < depth)
        depth[on], surf[on] = z, 2 + i
    x, y = dx * depth, dy * depth
    tex = np.where(surf == 1, _checker(x, depth, 0.5), _checker(x, y, 0.4))
    palette = rng.uniform(0.25, 1.0, size=(5, 3))
    base = palette[surf] * (0.55 + 0.45 * tex[..., None])                  # (H, W, 3)
    fog = np.exp(-depth / FOG_DISTANCE)[..., None]
    rgb = base * fog + 0.75 * (1 - fog) + rng.normal(0, 0.01, size=base.shape)
    return (np.clip(rgb, 0, 1) * 255).round().astype(np.uint8), depth.astype(np.float32)


def make_scenes(n: int, seed: int = 0, height: int = 64, width: int = 64) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [render_scene(rng, height, width) for _ in range(n)]


def write_scenes(folder: str | Path, n: int, seed: int = 0, height: int = 64, width: int = 64) -> Path:
    """Write `scene_XXX.png` + `scene_XXX.npy` (depth, metres) pairs: the folder format of `--data`."""
    from PIL import Image

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for i, (rgb, depth) in enumerate(make_scenes(n, seed, height, width)):
        Image.fromarray(rgb).save(folder / f"scene_{i:03d}.png")
        np.save(folder / f"scene_{i:03d}.npy", depth)
    return folder
