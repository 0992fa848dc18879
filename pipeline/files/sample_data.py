"""The built-in evaluation sample: Middlebury 2014 "Motorcycle" with true disparity.

`skimage.data.stereo_motorcycle()` ships (offline, inside the scikit-image wheel) the left and
right images, 4x down-sampled (500 x 741), and the ground-truth disparity of the left image in
pixels of that down-sampled image. Its docstring says NaN marks missing ground truth; the file
actually marks the 27 226 occluded / unmatched pixels with +inf, so both count as invalid here.

Calibration (skimage's docstring, valid for the down-sampled images): focal 994.978 px,
principal point (311.193, 254.877) px, doffs (x-difference of the two principal points)
31.086 px, baseline 193.001 mm. Middlebury's conversion: Z = baseline · f / (d + doffs).
Images: Scharstein et al., GCPR 2014 (vision.middlebury.edu/stereo/data/scenes2014/).
"""
from __future__ import annotations

import numpy as np

from ..errors import StudioError

MOTORCYCLE_CALIBRATION: dict = {
    "name": "middlebury2014-motorcycle",
    "focal_px": 994.978,
    "cx_px": 311.193,
    "cy_px": 254.877,
    "doffs_px": 31.086,
    "baseline_m": 0.193001,
    "downsample": 4,
    "source": "skimage.data.stereo_motorcycle (Middlebury 2014, Scharstein et al. GCPR 2014)",
}
# The scene lies 2.1-5.0 m from the camera: the indoor depth cap (MiDaS / NYU convention) fits.
MOTORCYCLE_DEPTH_CAP = 10.0


def motorcycle_sample() -> tuple[np.ndarray, np.ndarray, dict]:
    """(left RGB uint8 (500, 741, 3), GT disparity float32 (500, 741) in px with NaN invalid, calibration)."""
    try:
        from skimage.data import stereo_motorcycle
        left, _right, disp = stereo_motorcycle()
    except Exception as e:  # noqa: BLE001 - a missing data file or a failed fetch: say what to do
        raise StudioError(f"the Middlebury motorcycle sample could not be loaded from scikit-image ({e}); "
                          "reinstall scikit-image (its wheel ships the file)") from e
    disp = np.asarray(disp, dtype=np.float32).copy()
    disp[~np.isfinite(disp) | (disp <= 0)] = np.nan
    return np.ascontiguousarray(left, dtype=np.uint8), disp, dict(MOTORCYCLE_CALIBRATION)


def disparity_to_depth(disparity: np.ndarray, calibration: dict = MOTORCYCLE_CALIBRATION) -> np.ndarray:
    """Stereo disparity in px -> depth in metres, Z = baseline · f / (d + doffs); invalid -> NaN."""
    d = np.asarray(disparity, dtype=np.float64)
    denom = d + calibration.get("doffs_px", 0.0)
    valid = np.isfinite(d) & (denom > 0)
    depth = np.full(d.shape, np.nan)
    depth[valid] = calibration["baseline_m"] * calibration["focal_px"] / denom[valid]
    return depth.astype(np.float32)


def motorcycle_depth() -> tuple[np.ndarray, np.ndarray, dict]:
    """(left RGB, GT depth in metres float32 with NaN invalid, calibration)."""
    rgb, disp, calib = motorcycle_sample()
    return rgb, disparity_to_depth(disp, calib), calib
