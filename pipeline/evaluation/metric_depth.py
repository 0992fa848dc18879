"""Metric-depth evaluation metrics: pure functions on depth in metres, NO alignment.

The protocol of Depth Anything V2's metric fine-tuning code (metric_depth/util/metric.py, train.py):
- valid pixels: ground truth finite and within [min_depth, max_depth] (0.001 m and 20 m indoors /
  80 m outdoors), and inside the data's mask if any; images with fewer than 10 valid pixels are skipped;
- the prediction is used as it is (no scale, no shift, no clamp). A pixel whose prediction is not a
  positive finite number has no logarithm: it is left out and its share reported as
  `invalid_prediction_share`, so a failure cannot hide;
- per image, over the valid pixels, with e = d - d* (d predicted, d* ground truth) and g = ln d - ln d*:
    abs_rel  = mean |e| / d*                 sq_rel   = mean e^2 / d*
    rmse     = sqrt(mean e^2)  (m)           rmse_log = sqrt(mean g^2)
    log10    = mean |log10 d - log10 d*|     silog    = sqrt(mean g^2 - 0.5 * (mean g)^2)   (lambda 0.5, not x100)
    d1, d2, d3 = share of pixels with max(d / d*, d* / d) < 1.25, 1.25^2, 1.25^3;
- a set's score is the plain mean of the per-image scores (as the official code averages per sample).
"""
from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError

DELTA = 1.25
MIN_VALID_PIXELS = 10
METRICS = ("abs_rel", "sq_rel", "rmse", "rmse_log", "log10", "silog", "d1", "d2", "d3")
LOWER_IS_BETTER = {m: not m.startswith("d") for m in METRICS}


@dataclass(frozen=True)
class DepthRange:
    """The ground-truth depths that count, in metres."""
    min_depth: float = 1e-3
    max_depth: float = 80.0

    def __post_init__(self):
        if not (math.isfinite(self.min_depth) and self.min_depth >= 0):
            raise ConfigError(f"the minimum depth must be >= 0 m, got {self.min_depth!r}")
        if not (math.isfinite(self.max_depth) and self.max_depth > self.min_depth):
            raise ConfigError(f"the maximum depth must be a number of metres above the minimum ({self.min_depth}), "
                              f"got {self.max_depth!r}")

    def describe(self) -> dict:
        return {
            "metrics": "abs_rel, sq_rel, rmse (m), rmse_log, log10, silog (lambda 0.5, not x100), d1/d2/d3 "
                       "(thresholds 1.25, 1.25^2, 1.25^3); per image over valid pixels, then averaged over images",
            "alignment": "none: metric depth evaluated as predicted",
            "depth_range_m": [self.min_depth, self.max_depth],
            "valid_gt": f"finite ground truth within [{self.min_depth:g}, {self.max_depth:g}] m, inside the data's "
                        f"mask; images with fewer than {MIN_VALID_PIXELS} valid pixels are skipped",
            "invalid_prediction": "pixels whose prediction is not a positive finite number are left out and "
                                  "counted in invalid_prediction_share",
        }


def valid_mask(gt: np.ndarray, depth_range: DepthRange, mask: np.ndarray | None = None) -> np.ndarray:
    """bool (H, W): finite ground truth within the depth range (and inside `mask`)."""
    gt = np.asarray(gt, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        ok = np.isfinite(gt) & (gt >= depth_range.min_depth) & (gt <= depth_range.max_depth) & (gt > 0)
    return ok if mask is None else ok & np.asarray(mask, dtype=bool)


def errors(pred: np.ndarray, gt: np.ndarray) -> dict[str, float]:
    """All metrics over matching 1-D arrays of positive depths (already masked), float64."""
    pred, gt = np.asarray(pred, dtype=np.float64), np.asarray(gt, dtype=np.float64)
    e, g = pred - gt, np.log(pred) - np.log(gt)
    ratio = np.maximum(pred / gt, gt / pred)
    return {
        "abs_rel": float(np.mean(np.abs(e) / gt)),
        "sq_rel": float(np.mean(e * e / gt)),
        "rmse": float(np.sqrt(np.mean(e * e))),
        "rmse_log": float(np.sqrt(np.mean(g * g))),
        "log10": float(np.mean(np.abs(np.log10(pred) - np.log10(gt)))),
        "silog": float(np.sqrt(max(np.mean(g * g) - 0.5 * np.mean(g) ** 2, 0.0))),
        "d1": float(np.mean(ratio < DELTA)),
        "d2": float(np.mean(ratio < DELTA ** 2)),
        "d3": float(np.mean(ratio < DELTA ** 3)),
    }


def image_metrics(pred: np.ndarray, gt: np.ndarray, depth_range: DepthRange = DepthRange(),
                  mask: np.ndarray | None = None) -> dict | None:
    """One image's metrics (plus pixel counts), or None when it has too few valid pixels to score."""
    pred, gt = np.asarray(pred, dtype=np.float64), np.asarray(gt, dtype=np.float64)
    if pred.shape != gt.shape:
        raise ConfigError(f"the prediction is {pred.shape} but the ground truth is {gt.shape}; resize the "
                          "prediction to the ground truth first")
    valid = valid_mask(gt, depth_range, mask)
    usable = valid & np.isfinite(pred) & (pred > 0)
    n_valid, n = int(valid.sum()), int(usable.sum())
    if n_valid < MIN_VALID_PIXELS or n == 0:
        return None
    return {**errors(pred[usable], gt[usable]), "valid_pixels": n_valid,
            "invalid_prediction_share": (n_valid - n) / n_valid}


def mean_metrics(per_image: Iterable[dict | None]) -> dict:
    """The set's scores: the mean of each metric over the scored images; how many were skipped."""
    per_image = list(per_image)
    scored = [m for m in per_image if m is not None]
    skipped = len(per_image) - len(scored)
    if not scored:
        return {"images": 0, "skipped_images": skipped, **{k: None for k in METRICS}}
    out = {k: float(np.mean([m[k] for m in scored])) for k in METRICS}
    out["invalid_prediction_share"] = float(np.mean([m["invalid_prediction_share"] for m in scored]))
    return {"images": len(scored), "skipped_images": skipped, **out}
