"""Depth evaluation with the published protocol: AbsRel, δ1, alignment, DA-2K pair accuracy.

Protocol (../shared/TRAINING-NOTES.md; Depth Anything's authors never released theirs):
- Ground truth: depth (metres, or any unit) or disparity (its inverse, up to scale). Invalid
  GT: NaN, inf, <= 0, depth < min_depth, and depth > depth_cap when a cap is given; masks
  from the data (ignore regions) are respected.
- Relative predictions (affine-invariant disparity) are aligned by least squares for scale s
  and shift t minimising Σ (s·p + t − 1/gt)² over valid pixels (disparity space); the aligned
  disparity is clamped from below at 1/depth_cap (MiDaS; no negative or infinite depth), then
  inverted to depth. Metric predictions (depth in metres) are evaluated as they are.
- AbsRel = mean |d − d*| / d*, δ1 = share of pixels with max(d/d*, d*/d) < 1.25, per image
  over valid pixels, then averaged over the images that have valid pixels.
- Point pairs (DA-2K): a pair is right when the point annotated closer has the larger
  predicted disparity (smaller depth for metric predictions); ties count as wrong. Accuracy is
  pooled over all pairs.
Data: `find_items(dir)` reads a folder of images with same-named ground truth (the layout of
`pipeline.dataset_layout`, which training reads too) or the store's export (manifest.jsonl).
"""
from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import dataset_layout as layout
from .errors import ConfigError, StudioError

DELTA1 = 1.25
DEFAULT_DEPTH_CAP = 80.0      # m: the outdoor convention (KITTI); 10 m is the indoor one (NYU)
DEFAULT_MIN_DEPTH = 1e-3      # m: V2 metric fine-tuning's minimum depth
GT_KINDS = ("depth", "disparity")
PRED_KINDS = ("disparity", "depth")


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
        cap = self.depth_cap if self.depth_cap is not None else "per-image maximum valid GT depth"
        unit = "m" if self.gt_kind == "depth" else "1/GT disparity units"
        return {
            "metrics": "AbsRel = mean |d - d*| / d*; delta1 = share of pixels with max(d/d*, d*/d) < 1.25; "
                       "per image over valid GT pixels in depth space, then averaged over images",
            "gt_kind": self.gt_kind,
            "pred_kind": kinds[0] if len(kinds) == 1 else kinds,
            "alignment": {k: ALIGNMENT_TEXT[k] for k in kinds},
            "depth_cap": cap,
            "depth_cap_unit": unit,
            "depth_cap_rule": "aligned disparity clamped from below at 1/depth_cap before inverting to depth; "
                              "GT deeper than the cap is masked",
            "min_depth": self.min_depth,
            "invalid_gt": "NaN, inf, <= 0, depth < min_depth, depth > depth_cap, masked by the data's masks",
            "gt_depth_from_disparity": "depth* = 1 / GT disparity" if self.gt_kind == "disparity" else None,
            "pair_accuracy": "share of annotated point pairs whose closer point has the larger predicted "
                             "disparity (smaller depth for metric predictions); ties are wrong (DA-2K)",
        }


ALIGNMENT_TEXT = {
    "disparity": "least-squares scale and shift of the predicted disparity against 1/GT depth over valid "
                 "pixels (disparity space), then inverted to depth",
    "depth": "none: metric depth evaluated as predicted",
}


# ----------------------------------------------------------------------------- ground truth

def gt_to_depth(gt: np.ndarray, gt_kind: str) -> np.ndarray:
    """GT (H, W) -> float64 depth with NaN where invalid (NaN, inf, <= 0)."""
    gt = np.asarray(gt, dtype=np.float64)
    ok = np.isfinite(gt) & (gt > 0)
    out = np.full(gt.shape, np.nan)
    out[ok] = gt[ok] if gt_kind == "depth" else 1.0 / gt[ok]
    return out


def valid_gt(depth: np.ndarray, protocol: Protocol, mask: np.ndarray | None = None) -> np.ndarray:
    """bool (H, W): finite depth in [min_depth, depth_cap] and inside the data's mask."""
    with np.errstate(invalid="ignore"):
        ok = np.isfinite(depth) & (depth > 0) & (depth >= protocol.min_depth)
        if protocol.depth_cap is not None:
            ok &= depth <= protocol.depth_cap
    return ok if mask is None else ok & np.asarray(mask, dtype=bool)


# ----------------------------------------------------------------------------- alignment, metrics

def fit_scale_shift(pred: np.ndarray, target: np.ndarray, mask: np.ndarray) -> tuple[float, float]:
    """Least squares (s, t) minimising Σ (s·pred + t − target)² over mask (closed form, float64)."""
    p = np.asarray(pred, dtype=np.float64)[mask]
    y = np.asarray(target, dtype=np.float64)[mask]
    if p.size == 0:
        return 1.0, 0.0
    pm, ym = p.mean(), y.mean()
    var = ((p - pm) ** 2).sum()
    s = float(((p - pm) * (y - ym)).sum() / var) if var > 0 else 0.0
    return s, float(ym - s * pm)


def align_disparity(pred: np.ndarray, gt_depth: np.ndarray, mask: np.ndarray,
                    depth_cap: float) -> tuple[np.ndarray, float, float]:
    """Relative disparity -> depth: LSQ fit to 1/gt on mask, clamp at 1/depth_cap, invert. -> (depth, s, t)."""
    target = np.zeros_like(gt_depth, dtype=np.float64)
    target[mask] = 1.0 / gt_depth[mask]
    s, t = fit_scale_shift(pred, target, mask)
    aligned = np.maximum(s * np.asarray(pred, dtype=np.float64) + t, 1.0 / depth_cap)
    return 1.0 / aligned, s, t


def depth_metrics(pred_depth: np.ndarray, gt_depth: np.ndarray, mask: np.ndarray) -> dict:
    """AbsRel and δ1 over mask (depth space). Non-positive predicted depth counts as a δ1 miss."""
    d = np.asarray(pred_depth, dtype=np.float64)[mask]
    g = np.asarray(gt_depth, dtype=np.float64)[mask]
    if g.size == 0:
        return {"abs_rel": None, "delta1": None, "n_valid": 0}
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(d > 0, np.maximum(d / g, g / d), np.inf)
    return {"abs_rel": float(np.mean(np.abs(d - g) / g)), "delta1": float(np.mean(ratio < DELTA1)),
            "n_valid": int(g.size)}


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


# ----------------------------------------------------------------------------- one image, a dataset

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
    """Score one prediction (H, W) against dense GT and/or point pairs. -> a JSON-ready record."""
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
    return record


def _dense_record(pred, pred_kind, protocol, gt, mask) -> dict:
    depth = gt_to_depth(gt, protocol.gt_kind)
    valid = valid_gt(depth, protocol, mask)
    finite = np.isfinite(pred)
    out: dict = {"n_nonfinite_pred": int((valid & ~finite).sum())}
    valid &= finite
    if pred_kind == "depth":
        out.update(depth_metrics(pred, depth, valid))
        return out
    cap = protocol.depth_cap
    if cap is None:
        cap = float(depth[valid].max()) if valid.any() else 1.0
    aligned, s, t = align_disparity(pred, depth, valid, cap)
    out.update(depth_metrics(aligned, depth, valid))
    out.update({"scale": s, "shift": t, "depth_cap": cap})
    return out


def summarize(records: list[dict]) -> dict:
    """Means of per-image AbsRel / δ1 over images with valid pixels; pair accuracy pooled over pairs."""
    dense = [r for r in records if r.get("abs_rel") is not None]
    correct = sum(r["pairs"]["correct"] for r in records if "pairs" in r)
    total = sum(r["pairs"]["total"] for r in records if "pairs" in r)
    return {
        "abs_rel": float(np.mean([r["abs_rel"] for r in dense])) if dense else None,
        "delta1": float(np.mean([r["delta1"] for r in dense])) if dense else None,
        "images_scored": len(dense),
        "pixels_scored": int(sum(r["n_valid"] for r in dense)),
        "pair_accuracy": correct / total if total else None,
        "pairs_correct": correct,
        "pairs_total": total,
    }


@dataclass
class EvalItem:
    """One image to score. Loaders are called lazily so large sets stream."""

    name: str                                            # stable id (relative path without suffix)
    load_image: Callable[[], np.ndarray] | None          # -> uint8 RGB (H, W, 3)
    load_gt: Callable[[], np.ndarray] | None = None      # -> float (H, W), invalid NaN/inf/<=0
    load_mask: Callable[[], np.ndarray] | None = None    # -> bool (H, W), True = use
    pairs: np.ndarray | None = None                      # (P, 5)
    gt_kind: str | None = None                           # what the GT holds, when the data says so


Predict = Callable[[EvalItem], tuple[np.ndarray, str]]   # item -> (array (H, W), "disparity" | "depth")


def evaluate(items: Iterable[EvalItem], predict: Predict, protocol: Protocol,
             progress: Callable[[int, str], None] | None = None) -> dict:
    """Score every item; -> {"protocol", "summary", "images", "skipped"} (JSON-ready)."""
    records, skipped, kinds = [], [], []
    for i, item in enumerate(items):
        if item.load_gt is None and (item.pairs is None or not len(item.pairs)):
            skipped.append({"name": item.name, "reason": "no ground truth and no point pairs"})
            continue
        pred, kind = predict(item)
        gt = item.load_gt() if item.load_gt else None
        mask = item.load_mask() if item.load_mask else None
        rec = {"name": item.name, **evaluate_image(pred, kind, protocol, gt, mask, item.pairs)}
        if gt is not None and rec.get("n_valid", 0) == 0:
            skipped.append({"name": item.name, "reason": "no valid ground-truth pixels"})
        records.append(rec)
        kinds.append(kind)
        if progress:
            progress(i + 1, item.name)
    return {"protocol": protocol.describe(kinds), "summary": summarize(records), "images": records,
            "skipped": skipped}


def clean_json(obj):
    """Replace NaN / inf floats with None so the output is strict JSON."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: clean_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [clean_json(v) for v in obj]
    return obj


# ----------------------------------------------------------------------------- data layouts

PAIR_FILES = ("pairs.json", "annotations.json", "point_pairs.json")   # {image name, relative path or key: [DA-2K pairs]}


def read_array(path: Path, scale: float = 1.0) -> np.ndarray:
    """GT / prediction file -> float64 (H, W), NaN where invalid, times `scale`; the formats are
    pipeline.dataset_layout's (`.npy` without pickles, 16-bit PNG calibrated or raw with 0 invalid)."""
    try:
        return layout.read_ground_truth(path).values * scale
    except layout.GroundTruthFileError as e:
        raise EvaluationDataError(str(e)) from None


def read_mask(path: Path) -> np.ndarray:
    """A mask file (.npy or 8/16-bit PNG) -> bool (H, W), True where nonzero."""
    try:
        return layout.read_mask(path)
    except layout.GroundTruthFileError as e:
        raise EvaluationDataError(str(e)) from None


def _pair_table(root: Path) -> dict[str, list]:
    for name in PAIR_FILES:
        if (root / name).is_file():
            try:
                return json.loads((root / name).read_text())
            except (OSError, ValueError) as e:
                raise EvaluationDataError(f"cannot read point pairs {root / name}: {e}") from e
    return {}


def _item_pairs(image: Path, root: Path, table: dict) -> np.ndarray | None:
    rel = image.relative_to(root).as_posix()
    found = next((table[k] for k in (rel, image.name, image.stem) if k in table), None)
    side = image.with_name(f"{image.stem}_pairs.json")
    if found is None and side.is_file():
        found = json.loads(side.read_text())
    return None if found is None else parse_pairs(found)


def folder_items(root: Path, gt_scale: float = 1.0) -> list[EvalItem]:
    """Images of a folder (root/ or root/images/) with their ground truth and masks as found by
    pipeline.dataset_layout (the layout training reads), plus point pairs (a_pairs.json or a
    pairs.json / DA-2K annotations.json table keyed by relative path, name or stem; nested
    images it names are included)."""
    from .image_io import decode_image
    images = set(layout.image_files(root))
    table = _pair_table(root)
    images |= {root / k for k in table if (root / k).is_file()}
    items = []
    for img in sorted(images):
        gt, mask = layout.find_ground_truth(img), layout.find_mask(img)
        items.append(EvalItem(
            name=img.relative_to(root).with_suffix("").as_posix(),
            load_image=lambda p=img: decode_image(p).rgb,
            load_gt=None if gt is None else (lambda p=gt: read_array(p, gt_scale)),
            load_mask=None if mask is None else (lambda p=mask: read_mask(p)),
            pairs=_item_pairs(img, root, table)))
    return items


def find_items(root: str | Path, gt_scale: float = 1.0) -> list[EvalItem]:
    """The evaluation items of a data folder: the store's export (manifest.jsonl) or a plain folder."""
    root = Path(root)
    if not root.is_dir():
        raise EvaluationDataError(f"data folder {root} does not exist; pass a folder of images with ground truth")
    if (root / "manifest.jsonl").is_file():
        items = export_items(root, gt_scale)
    else:
        items = folder_items(root, gt_scale)
    if not items:
        raise EvaluationDataError(f"no images found in {root} or {root / 'images'}: put .jpg / .png images "
                                  "there with same-named ground truth (see pipeline.dataset_layout)")
    return items


EXPORT_GT_KINDS = {"disparity": "disparity", "metric_depth": "depth"}   # manifest "kind" -> GT kind


def _export_mask(root: Path, masks: dict) -> Callable[[], np.ndarray] | None:
    """Export masks ('ignore', 'sky': 255 = in the mask) -> a loader of the pixels to score (neither)."""
    files = [root / m["file"] for m in masks.values() if isinstance(m, dict) and m.get("file")]
    if not files:
        return None
    return lambda: ~np.logical_or.reduce([read_mask(f) for f in files])


def export_items(root: Path, gt_scale: float = 1.0) -> list[EvalItem]:
    """The store's export (pipeline.dataset_export): manifest.jsonl rows with the image, the exact
    label (labels/KEY.npy), its kind, masks (ignore and sky pixels are not scored: sky has no
    finite depth) and point pairs (inline, or point_pairs.json keyed by KEY). Items are named KEY."""
    from .image_io import decode_image
    items, table = [], _pair_table(root)
    for n, line in enumerate((root / "manifest.jsonl").read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            image = root / row["image"]
        except (ValueError, KeyError, TypeError) as e:
            raise EvaluationDataError(f"{root / 'manifest.jsonl'} line {n} is not an export row ({e}); "
                                      "give the folder `python -m pipeline export` wrote") from None
        key = str(row.get("key") or Path(row["image"]).stem)
        label = row.get("label")
        pairs = row.get("point_pairs") or table.get(key)
        items.append(EvalItem(
            name=key, load_image=lambda p=image: decode_image(p).rgb,
            load_gt=None if not label else (lambda p=root / label: read_array(p, gt_scale)),
            load_mask=_export_mask(root, row.get("masks") or {}),
            pairs=parse_pairs(pairs) if pairs else None, gt_kind=EXPORT_GT_KINDS.get(row.get("kind"))))
    return items
