"""Depth evaluation that cannot be fooled: fitted scale checked, trivial baselines beside every score.

Protocol (../shared/TRAINING-NOTES.md; Depth Anything's authors never released theirs):
- Depth ground truth (metres or any depth unit): the published protocol. Relative predictions
  (affine-invariant disparity) are aligned by least squares for scale s and shift t minimising
  Σ (s·p + t − 1/gt)² over valid pixels (disparity space); the aligned disparity is clamped from
  below at 1/depth_cap (MiDaS), inverted to depth, and AbsRel = mean |d − d*| / d* and δ1 = share
  of pixels with max(d/d*, d*/d) < 1.25 are computed in depth space. Metric predictions (depth in
  metres) are scored as they are, without alignment, with Depth Anything V2's metric metrics
  (pipeline/evaluation/metric_depth.py: AbsRel, SqRel, RMSE, RMSE-log, log10, SiLog, d1-d3) over the depth
  range [min_depth, depth_cap], which the protocol states. Invalid GT: NaN, inf, <= 0, < min_depth,
  > depth_cap, masked by the data.
- Disparity ground truth (stereo disparity, or a relative label, known only up to scale and
  shift): it is never inverted into a depth. The prediction is aligned to it by least squares in
  disparity space and AbsRel / δ1 are computed in disparity space (over GT disparity > 0).
- The fitted scale is reported per image. A scale <= 0 means the prediction orders depth the
  wrong way round (or not at all): that image is a *failed alignment*, listed as failed and left
  out of the means (FAILURE_RULE); the summary gives the failed share beside the means.
- Two baselines are scored on the same pixels of every image: a constant prediction and the
  image-row prior (disparity growing towards the bottom of the image, what a camera looking at a
  floor sees). They are aligned the same way, with the scale held >= 0 (a prior that would need
  a negative scale degenerates to the constant). A model is "better than both baselines" only by
  VERDICT_RULE; the summary says so either way.
- Point pairs (DA-2K): a pair is right when the point annotated closer has the larger predicted
  disparity (smaller depth for metric predictions); ties are wrong; pooled over all pairs, beside
  the row prior's accuracy (chance is 0.5).
Data folders and exports are read by pipeline/evaluation/data.py.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError, StudioError
from . import metric_depth as mm
from .summary import BASELINES, OUTLIER_RULE, VERDICT_RULE, summarize, verdict  # noqa: F401

DELTA1 = 1.25
DEFAULT_DEPTH_CAP = 80.0      # m: the outdoor convention (KITTI); 10 m is the indoor one (NYU)
DEFAULT_MIN_DEPTH = 1e-3      # m: V2 metric fine-tuning's minimum depth
GT_KINDS = ("depth", "disparity")
PRED_KINDS = ("disparity", "depth")
FAILURE_RULE = ("an image whose fitted scale is <= 0 (the prediction orders depth the wrong way round, or not at "
                "all) is a failed alignment: it is listed as failed and left out of the means")



class EvaluationDataError(StudioError):
    """A data folder, ground-truth or prediction file that cannot be used; names the file."""


@dataclass(frozen=True)
class Protocol:
    """How predictions are scored. `depth_cap=None`: per image, the largest valid GT depth."""

    gt_kind: str = "depth"
    depth_cap: float | None = DEFAULT_DEPTH_CAP
    min_depth: float = DEFAULT_MIN_DEPTH

    def __post_init__(self):
        if self.gt_kind not in GT_KINDS:
            raise ConfigError(f"--gt-kind must be depth or disparity, got {self.gt_kind!r}")
        if self.depth_cap is not None and not self.depth_cap > 0:
            raise ConfigError(f"--depth-cap must be a positive number of metres, got {self.depth_cap!r}")
        if not self.min_depth >= 0:
            raise ConfigError(f"--min-depth must be >= 0, got {self.min_depth!r}")

    def describe(self, pred_kinds: Iterable[str] = ("disparity",)) -> dict:
        kinds = sorted(set(pred_kinds)) or ["disparity"]
        common = {"gt_kind": self.gt_kind, "pred_kind": kinds[0] if len(kinds) == 1 else kinds,
                  "failed_alignment": FAILURE_RULE, "baselines": BASELINE_TEXT, "verdict": VERDICT_RULE,
                  "pair_accuracy": "share of annotated point pairs whose closer point has the larger predicted "
                                   "disparity (smaller depth for metric predictions); ties are wrong (DA-2K)"}
        if self.gt_kind == "disparity":
            return {**common, "space": "disparity",
                    "metrics": "in disparity space: AbsRel = mean |d - d*| / d*, delta1 = share of pixels with "
                               "max(d/d*, d*/d) < 1.25, d = s * prediction + t fitted by least squares to the GT "
                               "disparity d*; per image over GT disparity > 0, then averaged over images. The GT "
                               "is known only up to scale and shift, so it is never inverted into a depth",
                    "alignment": {k: ALIGNMENT_TEXT["disparity_gt"] for k in kinds},
                    "invalid_gt": "NaN, inf, <= 0, masked by the data's masks"}
        cap = self.depth_cap if self.depth_cap is not None else "per-image maximum valid GT depth"
        if "depth" in kinds:                                  # metric predictions: no alignment, a stated range
            common["metric"] = (mm.DepthRange(self.min_depth, self.depth_cap).describe() if self.depth_cap is not None
                                else {"depth_range_m": [self.min_depth, "per-image maximum valid GT depth"]})
        return {**common, "space": "depth",
                "metrics": "AbsRel = mean |d - d*| / d*; delta1 = share of pixels with max(d/d*, d*/d) < 1.25; "
                           "per image over valid GT pixels in depth space, then averaged over images",
                "alignment": {k: ALIGNMENT_TEXT[k] for k in kinds}, "depth_cap": cap, "depth_cap_unit": "m",
                "depth_cap_rule": "aligned disparity clamped from below at 1/depth_cap before inverting to depth; "
                                  "GT deeper than the cap is masked",
                "min_depth": self.min_depth,
                "invalid_gt": "NaN, inf, <= 0, depth < min_depth, depth > depth_cap, masked by the data's masks"}


ALIGNMENT_TEXT = {
    "disparity": "least-squares scale and shift of the predicted disparity against 1/GT depth over valid "
                 "pixels (disparity space), then inverted to depth",
    "depth": "none: metric depth evaluated as predicted",
    "disparity_gt": "least-squares scale and shift of the prediction against the GT disparity (disparity space)",
}
BASELINE_TEXT = ("constant = the same value everywhere; row_prior = disparity growing linearly towards the bottom "
                 "of the image; both aligned like a relative prediction with the scale held >= 0, on the same "
                 "pixels as the model")


# ----------------------------------------------------------------------------- ground truth

def gt_to_depth(gt: np.ndarray, gt_kind: str) -> np.ndarray:
    """Depth GT (H, W) -> float64 depth with NaN where invalid (NaN, inf, <= 0). Disparity GT is
    not converted (it is scored in disparity space); this helper refuses it."""
    if gt_kind != "depth":
        raise ConfigError("disparity ground truth is scored in disparity space, never inverted into a depth")
    gt = np.asarray(gt, dtype=np.float64)
    ok = np.isfinite(gt) & (gt > 0)
    return np.where(ok, gt, np.nan)


def valid_gt(depth: np.ndarray, protocol: Protocol, mask: np.ndarray | None = None) -> np.ndarray:
    """bool (H, W): finite depth in [min_depth, depth_cap] and inside the data's mask."""
    with np.errstate(invalid="ignore"):
        ok = np.isfinite(depth) & (depth > 0) & (depth >= protocol.min_depth)
        if protocol.depth_cap is not None:
            ok &= depth <= protocol.depth_cap
    return ok if mask is None else ok & np.asarray(mask, dtype=bool)


# ----------------------------------------------------------------------------- alignment, metrics

def fit_scale_shift(pred: np.ndarray, target: np.ndarray, mask: np.ndarray) -> tuple[float, float]:
    """Least squares (s, t) minimising Σ (s·pred + t − target)² over mask (closed form, float64).
    A prediction without variance gets s = 0 (the best constant)."""
    p = np.asarray(pred, dtype=np.float64)[mask]
    y = np.asarray(target, dtype=np.float64)[mask]
    if p.size == 0:
        return 1.0, 0.0
    pm, ym = p.mean(), y.mean()
    var = ((p - pm) ** 2).sum()
    s = float(((p - pm) * (y - ym)).sum() / var) if var > 0 else 0.0
    return s, float(ym - s * pm)


def fit_nonnegative(pred: np.ndarray, target: np.ndarray, mask: np.ndarray) -> tuple[float, float]:
    """fit_scale_shift with s >= 0: a negative optimum becomes the best constant (s = 0, t = mean)."""
    s, t = fit_scale_shift(pred, target, mask)
    if s < 0:
        return 0.0, float(np.asarray(target, dtype=np.float64)[mask].mean())
    return s, t


def align_disparity(pred: np.ndarray, gt_depth: np.ndarray, mask: np.ndarray, depth_cap: float,
                    fit=fit_scale_shift) -> tuple[np.ndarray, float, float]:
    """Relative disparity -> depth: LSQ fit to 1/gt on mask, clamp at 1/depth_cap, invert. -> (depth, s, t)."""
    target = np.zeros_like(gt_depth, dtype=np.float64)
    target[mask] = 1.0 / gt_depth[mask]
    s, t = fit(pred, target, mask)
    aligned = np.maximum(s * np.asarray(pred, dtype=np.float64) + t, 1.0 / depth_cap)
    return 1.0 / aligned, s, t


def depth_metrics(pred_depth: np.ndarray, gt_depth: np.ndarray, mask: np.ndarray) -> dict:
    """AbsRel and δ1 over mask (depth space). Non-positive predicted depth counts as a δ1 miss."""
    return ratio_metrics(pred_depth, gt_depth, mask)


def ratio_metrics(pred: np.ndarray, gt: np.ndarray, mask: np.ndarray) -> dict:
    """AbsRel = mean |p − g| / g and δ1 = share with max(p/g, g/p) < 1.25 over mask (g > 0; p <= 0 misses δ1)."""
    d = np.asarray(pred, dtype=np.float64)[mask]
    g = np.asarray(gt, dtype=np.float64)[mask]
    if g.size == 0:
        return {"abs_rel": None, "delta1": None, "n_valid": 0}
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(d > 0, np.maximum(d / g, g / d), np.inf)
    return {"abs_rel": float(np.mean(np.abs(d - g) / g)), "delta1": float(np.mean(ratio < DELTA1)),
            "n_valid": int(g.size)}


def row_prior(shape: tuple[int, int]) -> np.ndarray:
    """(H, W) float64 disparity growing linearly towards the bottom row: (row + 0.5) / H."""
    h, w = shape
    return np.repeat(((np.arange(h) + 0.5) / h)[:, None], w, axis=1)


def baseline_predictions(shape: tuple[int, int]) -> dict[str, np.ndarray]:
    return {"constant": np.ones(shape), "row_prior": row_prior(shape)}


# ----------------------------------------------------------------------------- point pairs

def parse_pairs(annotations: Iterable) -> np.ndarray:
    """DA-2K dicts {"point1": [h, w], "point2": [h, w], "closer_point": "point1"|"point2"} or rows
    (h1, w1, h2, w2, closer∈{1,2}) -> int64 (P, 5) rows (h1, w1, h2, w2, closer)."""
    rows = []
    for a in annotations:
        if isinstance(a, dict):
            closer = {"point1": 1, "point2": 2, 1: 1, 2: 2}.get(a.get("closer_point"))
            if closer is None:
                raise ConfigError(f"point pair {a} has closer_point {a.get('closer_point')!r}; use 'point1' or 'point2'")
            rows.append([*map(int, a["point1"]), *map(int, a["point2"]), closer])
        else:
            rows.append([int(v) for v in a])
    return np.asarray(rows, dtype=np.int64).reshape(-1, 5)


def pair_accuracy(pred: np.ndarray, pairs: np.ndarray, pred_kind: str = "disparity") -> dict:
    """DA-2K: how many pairs the prediction orders right. Pairs outside the image count as wrong."""
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 5)
    h, w = pred.shape
    correct = 0
    for h1, w1, h2, w2, closer in pairs:
        if not (0 <= h1 < h and 0 <= h2 < h and 0 <= w1 < w and 0 <= w2 < w) or closer not in (1, 2):
            continue
        a, b = float(pred[h1, w1]), float(pred[h2, w2])
        if pred_kind == "depth":
            a, b = -a, -b                      # closer = smaller depth
        near, far = (a, b) if closer == 1 else (b, a)
        correct += int(near > far)
    total = len(pairs)
    return {"correct": correct, "total": total, "accuracy": correct / total if total else None}


# ----------------------------------------------------------------------------- one image

def _fit_shape(pred: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Bilinear (align_corners=False) resize of a prediction to the GT's shape when they differ."""
    if pred.shape == tuple(shape):
        return pred
    import torch
    import torch.nn.functional as F
    t = torch.from_numpy(np.ascontiguousarray(pred, dtype=np.float32))[None, None]
    return F.interpolate(t, size=tuple(shape), mode="bilinear", align_corners=False)[0, 0].numpy()


def evaluate_image(pred: np.ndarray, pred_kind: str, protocol: Protocol, gt: np.ndarray | None = None,
                   mask: np.ndarray | None = None, pairs: np.ndarray | None = None) -> dict:
    """Score one prediction (H, W) against dense GT and/or point pairs, with the baselines beside it.
    -> a JSON-ready record (see the module docstring for every rule)."""
    if pred_kind not in PRED_KINDS:
        raise ConfigError(f"prediction kind must be disparity or depth, got {pred_kind!r}")
    if pred_kind == "depth" and protocol.gt_kind == "disparity":
        raise ConfigError("metric depth predictions need depth ground truth (--gt-kind depth); "
                          "disparity GT has no metric scale")
    pred = np.asarray(pred, dtype=np.float64)
    record: dict = {"pred_kind": pred_kind}
    if gt is not None and pred.shape != np.shape(gt):
        record["resized_from"] = list(pred.shape)               # bilinear to the GT's (= image's) size
        pred = _fit_shape(pred, np.shape(gt)).astype(np.float64)
    if gt is not None:
        record.update(_dense_record(pred, pred_kind, protocol, gt, mask))
    if pairs is not None and len(pairs):
        record["pairs"] = pair_accuracy(pred, pairs, pred_kind)     # pair coordinates: image pixels
        record["row_prior_pairs"] = pair_accuracy(row_prior(pred.shape), pairs)
    return record


def _dense_record(pred, pred_kind, protocol, gt, mask) -> dict:
    target = np.asarray(gt, dtype=np.float64)
    if protocol.gt_kind == "disparity":
        with np.errstate(invalid="ignore"):
            valid = np.isfinite(target) & (target > 0)
        valid = valid if mask is None else valid & np.asarray(mask, dtype=bool)
    else:
        target = gt_to_depth(target, "depth")
        valid = valid_gt(target, protocol, mask)
    finite = np.isfinite(pred)
    out: dict = {"space": protocol.gt_kind, "n_nonfinite_pred": int((valid & ~finite).sum())}
    valid &= finite
    if protocol.gt_kind == "disparity":
        def score(p, kind, fit):
            return _disparity_space(p, target, valid, fit)
    else:
        cap = protocol.depth_cap if protocol.depth_cap is not None else \
            (float(target[valid].max()) if valid.any() else 1.0)
        out["depth_cap"] = cap

        depth_range = mm.DepthRange(protocol.min_depth, cap) if cap > protocol.min_depth else None
        metric = pred_kind == "depth" and depth_range is not None

        def score(p, kind, fit):
            return _depth_space(p, kind, target, valid, cap, fit, depth_range if metric else None)
    out.update(score(pred, pred_kind, fit_scale_shift))
    out["alignment_failed"] = bool(out["scale"] is not None and not out["scale"] > 0 and out["n_valid"] > 0)
    out["baselines"] = {name: score(b, "disparity", fit_nonnegative)
                        for name, b in baseline_predictions(pred.shape).items()}
    for b in out["baselines"].values():
        b.pop("n_valid", None)
    return out


def _depth_space(pred, pred_kind, depth, valid, cap, fit, depth_range: mm.DepthRange | None = None) -> dict:
    """Depth-space metrics; relative predictions aligned in disparity space first. With `depth_range`
    (a metric prediction and its baselines) also the metric metrics under "metric", and for the metric
    prediction itself AbsRel / delta1 as pipeline.evaluation.metric_depth defines them."""
    if pred_kind == "depth":
        d, s, t = pred, None, None
    else:
        d, s, t = align_disparity(pred, depth, valid, cap, fit)
    out = {**ratio_metrics(d, depth, valid), "scale": s, "shift": t}
    if depth_range is not None:
        m = mm.image_metrics(d, depth, depth_range, mask=valid)
        out["metric"] = None if m is None else {k: m[k] for k in (*mm.METRICS, "invalid_prediction_share")}
        if pred_kind == "depth" and m is not None:
            out["abs_rel"], out["delta1"] = m["abs_rel"], m["d1"]
    return out


def _disparity_space(pred, disparity, valid, fit) -> dict:
    s, t = fit(pred, np.where(valid, disparity, 0.0), valid)
    return {**ratio_metrics(s * pred + t, disparity, valid), "scale": s, "shift": t}


@dataclass
class EvalItem:
    """One image to score. Loaders are called lazily so large sets stream."""

    name: str                                            # stable id (relative path without suffix)
    load_image: Callable[[], np.ndarray] | None          # -> uint8 RGB (H, W, 3)
    load_gt: Callable[[], np.ndarray] | None = None      # -> float (H, W), invalid NaN/inf/<=0
    load_mask: Callable[[], np.ndarray] | None = None    # -> bool (H, W), True = use
    pairs: np.ndarray | None = None                      # (P, 5)
    gt_kind: str | None = None                           # what the GT holds, when the data says so
    note: str = ""                                       # where the GT came from (provenance)


Predict = Callable[[EvalItem], tuple[np.ndarray, str]]   # item -> (array (H, W), "disparity" | "depth")


def evaluate(items: Iterable[EvalItem], predict: Predict, protocol: Protocol | Mapping[str, Protocol],
             progress: Callable[[int, str], None] | None = None) -> dict:
    """Score every item; -> {"protocol", "summary", "images", "skipped"} (JSON-ready). `protocol`:
    one Protocol, or one per GT kind for items that say what their GT holds (`item.gt_kind`).
    With both kinds, `summary_by_space` has a summary per space beside the overall one."""
    protocols = {protocol.gt_kind: protocol} if isinstance(protocol, Protocol) else dict(protocol)
    default = next(iter(protocols.values()))
    records, skipped, used = [], [], {}
    for i, item in enumerate(items):
        if item.load_gt is None and (item.pairs is None or not len(item.pairs)):
            skipped.append({"name": item.name, "reason": item.note or "no ground truth and no point pairs"})
            continue
        proto = default if not item.gt_kind else protocols.get(item.gt_kind) or \
            Protocol(gt_kind=item.gt_kind, depth_cap=None, min_depth=0.0)
        pred, kind = predict(item)
        gt = item.load_gt() if item.load_gt else None
        mask = item.load_mask() if item.load_mask else None
        rec = {"name": item.name, **evaluate_image(pred, kind, proto, gt, mask, item.pairs)}
        if item.note:
            rec["label"] = item.note
        if gt is not None and rec.get("n_valid", 0) == 0:
            skipped.append({"name": item.name, "reason": "no valid ground-truth pixels"})
        records.append(rec)
        used.setdefault(proto.gt_kind, (proto, set()))[1].add(kind)
        if progress:
            progress(i + 1, item.name)
    described = {k: p.describe(kinds) for k, (p, kinds) in used.items()} or {default.gt_kind: default.describe()}
    out = {"protocol": next(iter(described.values())) if len(described) == 1 else {"by_gt_kind": described},
           "summary": summarize(records), "images": records, "skipped": skipped}
    spaces = {r.get("space") for r in records if r.get("space")}
    if len(spaces) > 1:
        out["summary_by_space"] = {sp: summarize([r for r in records if r.get("space") == sp]) for sp in sorted(spaces)}
    return out


def clean_json(obj):
    """Replace NaN / inf floats with None so the output is strict JSON."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: clean_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [clean_json(v) for v in obj]
    return obj
