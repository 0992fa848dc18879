"""Teacher vs student on held-out curated labels (or the built-in Middlebury sample). No gradio here.

Held-out split: an image is held out when the first 64 bits of its content hash (sha256 of the
image bytes), read as a fraction of 2**64, fall below `fraction`. The split depends on the image
alone, so it is the same on every call, on every machine, and does not move when images are added.
The rule lives in pipeline/train/train_config.py (`in_holdout`): `train --holdout F` leaves the same
images out of training.

Scoring is pipeline.evaluation's protocol, per image (`evaluate_image`) and averaged
(`summarize`): relative (disparity) predictions are aligned to the label by least-squares scale
and shift in disparity space, then AbsRel and δ1 are computed in depth space; metric predictions
are scored as they are. Labels of kind "disparity" (unit-less) have no depth cap (per image, the
largest valid label depth) and no minimum depth; metric labels use the 80 m cap; the Middlebury
sample (true disparity -> metres with its calibration) uses the indoor 10 m cap. Ignore and sky
masks are not scored.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from . import evaluation as ev
from . import render
from .errors import ConfigError
from .train.train_config import in_holdout  # the rule's owner: `train --holdout` uses it too

PANEL_HEIGHT = 160                      # px: each picture of a side-by-side row
MAX_IMAGES_LIMIT = 50                   # a comparison runs inside the request: keep it bounded
LABEL_PROTOCOLS = {                     # store label kind -> how it is scored
    "disparity": ev.Protocol(gt_kind="disparity", depth_cap=None, min_depth=0.0),
    "metric_depth": ev.Protocol(gt_kind="depth", depth_cap=ev.DEFAULT_DEPTH_CAP, min_depth=ev.DEFAULT_MIN_DEPTH),
}
PRED_KINDS = {"disparity": "disparity", "metric_depth": "depth"}   # Prediction.kind -> evaluation kind

Predict = Callable[[np.ndarray], tuple[np.ndarray, str]]   # uint8 (H, W, 3) -> ((H, W) array, Prediction.kind)


@dataclass
class CompareItem:
    """One image with a label to score against."""

    name: str
    image_id: int | None
    load_rgb: Callable[[], np.ndarray]          # -> uint8 (H, W, 3)
    load_gt: Callable[[], np.ndarray]           # -> float (H, W)
    label_kind: str                             # "disparity" | "metric_depth" (as the store says)
    protocol: ev.Protocol
    load_mask: Callable[[], np.ndarray] | None = None   # -> bool (H, W), True = score
    note: str = ""                              # where the label came from


@dataclass
class Comparison:
    models: dict[str, str]                      # role ("teacher", "student") -> model title
    rows: list[dict]                            # one per image: name, metrics per role, note
    summary: dict[str, dict]                    # role -> pipeline.evaluation.summarize(...)
    protocol: dict                              # what the scores mean (stated on the page)
    panels: list[tuple[str, str]] = field(default_factory=list)   # (PNG path, caption) per image
    held_out: int = 0                           # images in the held-out split
    skipped: list[str] = field(default_factory=list)


def _check_fraction(fraction: float) -> float:
    fraction = float(fraction)
    if not 0 < fraction <= 1:
        raise ConfigError(f"held-out share must be in (0, 1], e.g. 0.1 for 10 %, got {fraction!r}")
    return fraction


def store_items(store, fraction: float = 0.1, statuses=("accepted", "corrected")) -> list[CompareItem]:
    """The held-out curated labels of the store (head revision of each image), ordered by image id."""
    from .image_io import decode_image
    fraction = _check_fraction(fraction)
    out = []
    for t in store.training_items(statuses):
        record = store.get_image(t.image_id)
        if not in_holdout(record.sha256, fraction):
            continue
        protocol = LABEL_PROTOCOLS.get(t.kind)
        if protocol is None:
            continue
        out.append(CompareItem(
            name=f"{record.name} (#{record.id})", image_id=record.id,
            load_rgb=lambda p=t.image_path: decode_image(p).rgb, load_gt=t.depth, label_kind=t.kind,
            protocol=protocol, load_mask=lambda t=t: _score_mask(t.masks()),
            note=f"{record.status}, revision {t.revision_id}" + (f", first labelled by {t.model_id}" if t.model_id else "")))
    return out


def _score_mask(masks: dict[str, np.ndarray]) -> np.ndarray | None:
    """Pixels to score: outside the ignore and sky masks. None when there are no masks."""
    parts = [np.asarray(m, dtype=bool) for m in masks.values() if m is not None]
    return ~np.logical_or.reduce(parts) if parts else None


def sample_items() -> list[CompareItem]:
    """The built-in Middlebury 2014 motorcycle image with its true depth (metres, calibrated)."""
    from .sample_data import MOTORCYCLE_DEPTH_CAP, motorcycle_depth
    rgb, depth, calib = motorcycle_depth()
    return [CompareItem(name="Middlebury 2014 motorcycle", image_id=None, load_rgb=lambda: rgb,
                        load_gt=lambda: depth, label_kind="metric_depth",
                        protocol=ev.Protocol(gt_kind="depth", depth_cap=MOTORCYCLE_DEPTH_CAP),
                        note=f"true stereo disparity -> metres ({calib['source']})")]


def score(pred: np.ndarray, pred_kind: str, item: CompareItem, gt: np.ndarray, mask) -> dict:
    """pipeline.evaluation on one prediction (Prediction.kind) against one item's label."""
    kind = PRED_KINDS.get(pred_kind, pred_kind)
    return ev.evaluate_image(pred, kind, item.protocol, gt, mask)


def compare(items: Iterable[CompareItem], predictors: dict[str, Predict], titles: dict[str, str], *,
            out_dir: Path | None = None, cmap: str = render.DEFAULT_CMAP, held_out: int = 0,
            seen: dict[str, set] | None = None, progress: Callable[[float, str], None] | None = None) -> Comparison:
    """Run every model on every item and score it; optionally write a side-by-side PNG per image.

    `seen`: role -> image ids that model was trained on (noted in the rows: not a fair test)."""
    items = list(items)
    records: dict[str, list[dict]] = {role: [] for role in predictors}
    rows, panels, skipped, kinds = [], [], [], set()
    for i, item in enumerate(items):
        if progress:
            progress(i / max(1, len(items)), f"{item.name}")
        rgb, gt = item.load_rgb(), np.asarray(item.load_gt(), dtype=np.float64)
        mask = item.load_mask() if item.load_mask else None
        row: dict = {"image": item.name, "label": item.note}
        preds = {}
        for role, predict in predictors.items():
            array, kind = predict(rgb)
            rec = score(array, kind, item, gt, mask)
            kinds.add(PRED_KINDS.get(kind, kind))
            preds[role] = (array, kind)
            if rec.get("abs_rel") is not None:
                records[role].append(rec)
            row[f"{role}_abs_rel"], row[f"{role}_delta1"] = rec.get("abs_rel"), rec.get("delta1")
            row["valid_pixels"] = rec.get("n_valid", 0)
            if seen and item.image_id is not None and str(item.image_id) in seen.get(role, set()):
                row["label"] += f"; in the {role}'s training data"
        if not row["valid_pixels"]:
            skipped.append(f"{item.name}: no valid label pixels")
        rows.append(row)
        if out_dir is not None:
            path = Path(out_dir) / f"compare_{i:03d}.png"
            side_by_side(rgb, gt, item.label_kind, [preds[r] for r in predictors], cmap).save(path)
            panels.append((str(path), _caption(item, row, list(predictors))))
    if progress:
        progress(1.0, "done")
    protocols = {item.protocol for item in items}
    protocol = {"labels": [p.describe(sorted(kinds) or ["disparity"]) for p in protocols],
                "split": "held-out images: first 64 bits of the image's sha256 / 2^64 < the held-out share"}
    return Comparison(dict(titles), rows, {role: ev.summarize(r) for role, r in records.items()},
                      ev.clean_json(protocol), panels, held_out or len(items), skipped)


def _caption(item: CompareItem, row: dict, roles: list[str]) -> str:
    parts = [f"{item.name}: image | label | " + " | ".join(roles)]
    for role in roles:
        a, d = row.get(f"{role}_abs_rel"), row.get(f"{role}_delta1")
        if a is not None:
            parts.append(f"{role} AbsRel {a:.3f} δ1 {d:.3f}")
    return "; ".join(parts)


def _colour(array: np.ndarray, kind: str, cmap: str) -> np.ndarray:
    """(H, W) -> (H, W, 3) uint8, near = warm for disparity and metric depth alike."""
    a = np.asarray(array, dtype=np.float32)
    a = np.where(np.isfinite(a) & (a > 0 if kind == "metric_depth" else np.isfinite(a)), a, np.nan)
    return render.colorize(a, cmap, invert=kind == "metric_depth")


def side_by_side(rgb: np.ndarray, gt: np.ndarray, label_kind: str, preds: list[tuple[np.ndarray, str]],
                 cmap: str = render.DEFAULT_CMAP, height: int = PANEL_HEIGHT) -> Image.Image:
    """One row: image | label | each prediction, each scaled to `height` pixels, 4 px apart."""
    tiles = [rgb, _colour(gt, label_kind, cmap)] + [_colour(a, k, cmap) for a, k in preds]
    h, w = rgb.shape[:2]
    width = max(1, round(w * height / h))
    out = Image.new("RGB", (len(tiles) * (width + 4) - 4, height), (255, 255, 255))
    for i, tile in enumerate(tiles):
        im = Image.fromarray(np.ascontiguousarray(tile, dtype=np.uint8)).resize((width, height), Image.BILINEAR)
        out.paste(im, (i * (width + 4), 0))
    return out
