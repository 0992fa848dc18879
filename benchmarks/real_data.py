"""Real images with real ground truth that this project did not make, for bench_self_training.py
and its slow test.

- Middlebury 2014 "Motorcycle" (Scharstein et al., GCPR 2014): inside the scikit-image wheel
  (`skimage.data.stereo_motorcycle`), true disparity -> depth in metres with its calibration
  (pipeline.files.sample_data).
- Middlebury 2006 "Aloe" (Scharstein and Pal, CVPR 2007; Hirschmüller and Scharstein, CVPR 2007):
  `aloeL.jpg` + `aloeGT.png` (disparity, 0 = unknown) in Debian's `opencv-doc` package under
  examples/data. Fetched with `apt-get download opencv-doc` and unpacked with `dpkg -x` into a
  cache folder (no install, no root). No apt: `Unavailable` says so, and callers skip.
- Unlabelled real photographs: scikit-image's (astronaut, chelsea, coffee, rocket, camera) and
  OpenCV's samples (UNLABELLED_OPENCV). Left out: drawings, renders, logos, text, and the other
  views of the two ground-truth scenes (motorcycle right, aloeR), which would leak them.
"""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
from PIL import Image

DEFAULT_CACHE = Path.home() / ".cache" / "depth-anything-studio" / "opencv-doc"
SAMPLES = "usr/share/doc/opencv-doc/examples/data"
UNLABELLED_SKIMAGE = ("astronaut", "chelsea", "coffee", "rocket", "camera")
UNLABELLED_OPENCV = ("aero1.jpg", "aero3.jpg", "apple.jpg", "baboon.jpg", "basketball1.png", "board.jpg",
                     "box.png", "box_in_scene.png", "building.jpg", "butterfly.jpg", "chicky_512.png",
                     "ela_original.jpg", "fruits.jpg", "graf1.png", "home.jpg", "leuvenA.jpg", "leuvenB.jpg",
                     "licenseplate_motion.jpg", "messi5.jpg", "orange.jpg", "rubberwhale1.png", "squirrel_cls.jpg",
                     "stuff.jpg", "sudoku.png")


class Unavailable(RuntimeError):
    """The Debian samples cannot be fetched here (no apt-get / dpkg, no network); the message says why."""


def opencv_samples(cache: str | Path = DEFAULT_CACHE) -> Path:
    """The OpenCV sample folder, fetched once into `cache` (apt-get download + dpkg -x)."""
    cache = Path(cache)
    data = cache / SAMPLES
    if (data / "aloeGT.png").is_file():
        return data
    for tool in ("apt-get", "dpkg"):
        if shutil.which(tool) is None:
            raise Unavailable(f"`{tool}` is not available: the Aloe pair comes from Debian's opencv-doc package "
                              f"(apt-get download opencv-doc && dpkg -x opencv-doc_*.deb {cache})")
    cache.mkdir(parents=True, exist_ok=True)
    try:
        subprocess.run(["apt-get", "download", "opencv-doc"], cwd=cache, check=True, capture_output=True,
                       text=True, timeout=600)
        deb = max(cache.glob("opencv-doc_*.deb"), key=lambda p: p.stat().st_mtime)
        subprocess.run(["dpkg", "-x", str(deb), str(cache)], check=True, capture_output=True, text=True, timeout=600)
    except (subprocess.SubprocessError, ValueError, OSError) as e:
        detail = getattr(e, "stderr", "") or str(e)
        raise Unavailable(f"could not fetch opencv-doc with apt-get ({detail.strip().splitlines()[-1:]}); "
                          "run `apt-get update` first or fetch it where there is network") from e
    if not (data / "aloeGT.png").is_file():
        raise Unavailable(f"opencv-doc was unpacked into {cache} but {SAMPLES}/aloeGT.png is missing")
    return data


def motorcycle() -> tuple[np.ndarray, np.ndarray]:
    """(RGB uint8 (500, 741, 3), depth in metres float32, NaN = unknown)."""
    from pipeline.files.sample_data import motorcycle_depth
    rgb, depth, _ = motorcycle_depth()
    return rgb, depth


def aloe(samples: Path) -> tuple[np.ndarray, np.ndarray]:
    """(RGB uint8 (1110, 1282, 3), disparity float32 (px of the full-size pair), NaN = unknown)."""
    rgb = np.asarray(Image.open(samples / "aloeL.jpg").convert("RGB"))
    disp = np.asarray(Image.open(samples / "aloeGT.png"), dtype=np.float32).copy()
    disp[disp <= 0] = np.nan
    return rgb, disp


def unlabelled_photos(samples: Path | None) -> list[tuple[str, np.ndarray]]:
    """(name, RGB uint8) of the real photographs used as unlabelled images."""
    import skimage.data
    out = []
    for name in UNLABELLED_SKIMAGE:
        img = np.asarray(getattr(skimage.data, name)())
        out.append((f"skimage-{name}", np.repeat(img[..., None], 3, 2) if img.ndim == 2 else img[..., :3]))
    for name in UNLABELLED_OPENCV if samples is not None else ():
        out.append((f"opencv-{Path(name).stem}", np.asarray(Image.open(samples / name).convert("RGB"))))
    return out


def write_ground_truth_folders(root: Path, samples: Path | None) -> dict[str, Path]:
    """{"depth": folder, "disparity": folder} in the dataset layout (pipeline.files.dataset_layout) for
    `import-ground-truth`: motorcycle.png + motorcycle_depth.npy (metres); aloe.png +
    aloe_disparity.npy (px)."""
    folders = {"depth": root / "gt-depth", "disparity": root / "gt-disparity"}
    for f in folders.values():
        f.mkdir(parents=True, exist_ok=True)
    rgb, depth = motorcycle()
    Image.fromarray(rgb).save(folders["depth"] / "motorcycle.png")
    np.save(folders["depth"] / "motorcycle_depth.npy", depth)
    if samples is not None:
        rgb, disp = aloe(samples)
        Image.fromarray(rgb).save(folders["disparity"] / "aloe.png")
        np.save(folders["disparity"] / "aloe_disparity.npy", disp)
    return folders
