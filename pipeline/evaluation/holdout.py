"""Teacher vs student, scored only against what neither model produced. No gradio here.

What is scored (the store's `evidence`, pipeline/store/provenance.py): per held-out image, its
imported ground truth (dense), else the pixels of its current label that a person set (a plane,
sky; never an accepted pseudo-label, never a region copied from a model), and its point pairs
(DA-2K pair accuracy). An image with nothing of that is not scored: the result counts it under
`skipped` with the reason, and a comparison with nothing at all says "nothing independent to
score against" instead of a number.

How (pipeline.evaluation.protocol): depth ground truth in metres with the published protocol (alignment in
disparity space, metrics in depth space, 80 m cap; the Middlebury sample 10 m); disparity ground
truth and relative labels in disparity space (never 1/label); fitted scale per image, a scale
<= 0 is a failed alignment; the constant and image-row-prior baselines on the same pixels; the
verdict says whether each model beats both.

Held-out split: the store's `held_out_ids(fraction)`, one query (pipeline/store/holdout.py owns the
rule; `train --holdout` leaves the same images out of training with the same condition). A human-corrected region is a plane fitted to
the values of the label it corrected: rows say which model made that label, since it leans
towards that model.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from .. import render
from ..errors import ConfigError
from ..store.holdout import RULE as SPLIT_RULE
from ..store.holdout import in_holdout  # noqa: F401  (re-exported for callers that ask about one hash)
from . import protocol as ev

PANEL_HEIGHT = 160                      # px: each picture of a side-by-side row
MAX_IMAGES_LIMIT = 50                   # a comparison runs inside the request: keep it bounded
NOTHING = "nothing independent to score against"
LABEL_PROTOCOLS = {                     # store kind -> how it is scored
    "disparity": ev.Protocol(gt_kind="disparity", depth_cap=None, min_depth=0.0),
    "metric_depth": ev.Protocol(gt_kind="depth", depth_cap=ev.DEFAULT_DEPTH_CAP, min_depth=ev.DEFAULT_MIN_DEPTH),
}
PRED_KINDS = {"disparity": "disparity", "metric_depth": "depth"}   # Prediction.kind -> evaluation kind

Predict = Callable[[np.ndarray], tuple[np.ndarray, str]]   # uint8 (H, W, 3) -> ((H, W) array, Prediction.kind)


@dataclass
class CompareItem:
    """One image with independent evidence to score against."""

    name: str
    image_id: int | None
    load_rgb: Callable[[], np.ndarray]          # -> uint8 (H, W, 3)
    load_gt: Callable[[], np.ndarray] | None    # -> float (H, W); None: point pairs only
    label_kind: str                             # "disparity" | "metric_depth"
    protocol: ev.Protocol
    load_mask: Callable[[], np.ndarray] | None = None   # -> bool (H, W), True = score
    note: str = ""                              # what the evidence is and where it came from
    pairs: np.ndarray | None = None             # (P, 5) human point pairs
    evidence: str = "ground truth"              # "ground truth" | "human pixels" | "point pairs"
    made_by: str | None = None                  # the model whose label a human region corrected


@dataclass
class Comparison:
    models: dict[str, str]                      # role ("teacher", "student") -> model title
    rows: list[dict]                            # one per image: name, metrics per role, baselines, note
    summary: dict[str, dict]                    # role -> pipeline.evaluation.protocol.summarize(...)
    protocol: dict                              # what the scores mean (stated on the page)
    panels: list[tuple[str, str]] = field(default_factory=list)   # (PNG path, caption) per image
    held_out: int = 0                           # images in the held-out split
    skipped: list[str] = field(default_factory=list)   # one line per reason, with counts
    evidence: dict[str, int] = field(default_factory=dict)   # scored images by kind of evidence

    @property
    def scored(self) -> bool:
        return bool(self.rows)

    @property
    def message(self) -> str:
        return "" if self.scored else NOTHING


def _check_fraction(fraction: float) -> float:
    fraction = float(fraction)
    if not 0 < fraction <= 1:
        raise ConfigError(f"held-out share must be in (0, 1], e.g. 0.1 for 10 %, got {fraction!r}")
    return fraction


def evidence_items(store, fraction: float = 0.1) -> tuple[list[CompareItem], list[dict]]:
    """(items, skipped) of the held-out images, in image-id order: items hold independent evidence;
    skipped = [{"name", "reason"}] for held-out images with only model labels or none."""
    fraction = _check_fraction(fraction)
    candidates = set(store.evidence_image_ids())
    items, skipped = [], []
    for image_id in store.held_out_ids(fraction):
        item = _item(store, image_id) if image_id in candidates else None
        if item is None:
            skipped.append({"name": f"#{image_id}", "reason": _why_not(store, image_id)})
        else:
            items.append(item)
    return items, skipped


def store_items(store, fraction: float = 0.1) -> list[CompareItem]:
    """The held-out images that hold independent evidence (see `evidence_items`)."""
    return evidence_items(store, fraction)[0]


def _why_not(store, image_id: int) -> str:
    head = store.head(image_id)
    if head is None:
        return "no label and no point pairs"
    if head.is_model:
        return f"only a model's label ({head.source}): a pseudo-label is not ground truth"
    return "its label has no pixel a person set (masks only) and no ground truth or point pairs"


def _item(store, image_id: int) -> CompareItem | None:
    from ..files.image_io import decode_image
    evidence = store.evidence(image_id)
    if evidence.empty:
        return None
    record = store.get_image(image_id)
    pairs = np.asarray([[*p.point1, *p.point2, p.closer] for p in evidence.pairs], np.int64).reshape(-1, 5)
    common = dict(name=f"{record.name} (#{record.id})", image_id=record.id,
                  load_rgb=lambda p=record.path: decode_image(p).rgb, pairs=pairs if len(pairs) else None)
    if evidence.ground_truth is not None:
        gt = evidence.ground_truth
        return CompareItem(**common, load_gt=lambda: store.load_label(gt).depth, label_kind=gt.kind,
                           protocol=LABEL_PROTOCOLS[gt.kind], load_mask=lambda: store.valid_pixels(gt),
                           note=f"ground truth: {gt.source_name} ({_kind_text(gt.kind)})", evidence="ground truth")
    if evidence.human is not None:
        head = evidence.human
        made_by = head.model_id

        def human_mask(head=head):
            label = store.load_label(head)
            masks = [np.asarray(m, bool) for m in label.masks.values()]            # ignore, sky: not scored
            return store.human_pixels(head) & ~np.logical_or.reduce(masks) if masks else store.human_pixels(head)
        started = f", on a label first made by {made_by}" if made_by else ""
        return CompareItem(**common, load_gt=lambda: store.load_label(head).depth, label_kind=head.kind,
                           protocol=LABEL_PROTOCOLS[head.kind], load_mask=human_mask,
                           note=f"pixels a person set in revision {head.number}{started}", evidence="human pixels",
                           made_by=made_by)
    return CompareItem(**common, load_gt=None, label_kind="disparity", protocol=LABEL_PROTOCOLS["disparity"],
                       note=f"{len(pairs)} point pair(s) by people", evidence="point pairs")


def _kind_text(kind: str) -> str:
    return "depth in metres" if kind == "metric_depth" else "disparity"


def sample_items() -> list[CompareItem]:
    """The built-in Middlebury 2014 motorcycle image with its true depth (metres, calibrated)."""
    from ..files.sample_data import MOTORCYCLE_DEPTH_CAP, motorcycle_depth
    rgb, depth, calib = motorcycle_depth()
    return [CompareItem(name="Middlebury 2014 motorcycle", image_id=None, load_rgb=lambda: rgb,
                        load_gt=lambda: depth, label_kind="metric_depth",
                        protocol=ev.Protocol(gt_kind="depth", depth_cap=MOTORCYCLE_DEPTH_CAP),
                        note=f"ground truth: true stereo disparity -> metres ({calib['source']})")]


def skipped_lines(skipped: list[dict], limit: int = 5) -> list[str]:
    """Skipped images grouped by reason: 'N image(s): reason (e.g. #3, #7)'."""
    by: dict[str, list[str]] = {}
    for s in skipped:
        by.setdefault(s["reason"], []).append(s["name"])
    return [f"{len(names)} image(s): {reason} (e.g. {', '.join(names[:limit])})" for reason, names in by.items()]


def score(pred: np.ndarray, pred_kind: str, item: CompareItem, gt, mask) -> dict:
    """pipeline.evaluation.protocol on one prediction (Prediction.kind) against one item's evidence. Evidence known
    only up to scale and shift (disparity) has no metric scale: a metric prediction is compared with it as
    the disparity 1 / metres, aligned like a relative one (so a metric student can face a relative teacher)."""
    kind = PRED_KINDS.get(pred_kind, pred_kind)
    if kind == "depth" and item.protocol.gt_kind == "disparity":
        with np.errstate(divide="ignore", invalid="ignore"):
            pred, kind = np.where(pred > 0, 1.0 / np.asarray(pred, dtype=np.float64), np.nan), "disparity"
    return ev.evaluate_image(pred, kind, item.protocol, gt, mask, item.pairs)


def compare(items: Iterable[CompareItem], predictors: dict[str, Predict], titles: dict[str, str], *,
            out_dir: Path | None = None, cmap: str = render.DEFAULT_CMAP, held_out: int = 0,
            skipped: list[str] | None = None, seen: dict[str, set] | None = None,
            progress: Callable[[float, str], None] | None = None) -> Comparison:
    """Run every model on every item and score it; optionally write a side-by-side PNG per image.

    `seen`: role -> image ids that model was trained on (noted in the rows: not a fair test)."""
    items = list(items)
    records: dict[str, list[dict]] = {role: [] for role in predictors}
    rows, panels, kinds, evidence = [], [], set(), {}
    for i, item in enumerate(items):
        if progress:
            progress(i / max(1, len(items)), f"{item.name}")
        rgb = item.load_rgb()
        gt = np.asarray(item.load_gt(), dtype=np.float64) if item.load_gt else None
        mask = item.load_mask() if item.load_mask else None
        row, preds = _row(item, rgb, gt, mask, predictors, records, kinds, seen)
        rows.append(row)
        evidence[item.evidence] = evidence.get(item.evidence, 0) + 1
        if out_dir is not None:
            path = Path(out_dir) / f"compare_{i:03d}.png"
            shown = gt if gt is not None else np.full(rgb.shape[:2], np.nan)
            side_by_side(rgb, shown, item.label_kind, [preds[r] for r in predictors], cmap).save(path)
            panels.append((str(path), _caption(item, row, list(predictors))))
    if progress:
        progress(1.0, "done")
    protocols = {item.protocol for item in items}
    protocol = {"labels": [p.describe(sorted(kinds) or ["disparity"]) for p in protocols],
                "evidence": "ground truth, the pixels of a label a person set, point pairs by people; never a "
                            "model's pseudo-label",
                "split": SPLIT_RULE}
    return Comparison(dict(titles), rows, {role: ev.summarize(r) for role, r in records.items()},
                      ev.clean_json(protocol), panels, held_out or len(items), list(skipped or []), evidence)


def checkpoint_figure(result: Comparison, role: str, compared_with: str, fraction: float) -> dict | None:
    """What a trained checkpoint stores of a comparison: its scores and what they were measured
    against (never a model's own labels). None when the role has no summary."""
    import time
    s = result.summary.get(role) or {}
    if not s:
        return None
    against = ", ".join(f"{kind}: {n} image(s)" for kind, n in sorted(result.evidence.items()))
    return {"abs_rel": s["abs_rel"], "abs_rel_median": s["abs_rel_median"], "outliers": s["outliers"],
            "delta1": s["delta1"], "images": s["images_scored"],
            "failed_alignments": s["images_failed"], "pair_accuracy": s["pair_accuracy"], "pairs": s["pairs_total"],
            "baselines": s["baselines"], "beats_baselines": s["verdict"]["beats_baselines"],
            "verdict": s["verdict"]["text"], "against": against + " (independent of both models)",
            "held_out_share": fraction, "compared_with": compared_with,
            "protocol": "depth GT: disparity-space alignment, depth-space metrics (80 m cap); disparity GT and "
                        "relative labels: disparity space; scale <= 0 = failed alignment",
            "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def _row(item, rgb, gt, mask, predictors, records, kinds, seen) -> tuple[dict, dict]:
    row: dict = {"image": item.name, "label": item.note, "evidence": item.evidence}
    preds = {}
    for role, predict in predictors.items():
        array, kind = predict(rgb)
        rec = {"name": item.name, **score(array, kind, item, gt, mask)}
        kinds.add(PRED_KINDS.get(kind, kind))
        preds[role] = (array, kind)
        records[role].append(rec)
        row[f"{role}_abs_rel"], row[f"{role}_delta1"] = rec.get("abs_rel"), rec.get("delta1")
        row[f"{role}_scale"], row[f"{role}_failed"] = rec.get("scale"), rec.get("alignment_failed", False)
        row[f"{role}_pairs"] = (rec.get("pairs") or {}).get("accuracy")
        row["valid_pixels"] = rec.get("n_valid", 0)
        for name, b in (rec.get("baselines") or {}).items():
            row[f"{name}_abs_rel"] = b["abs_rel"]
        if seen and item.image_id is not None and str(item.image_id) in seen.get(role, set()):
            row["label"] += f"; in the {role}'s training data"
    return row, preds


def _caption(item: CompareItem, row: dict, roles: list[str]) -> str:
    parts = [f"{item.name}: image | {item.evidence} | " + " | ".join(roles)]
    for role in roles:
        a, d = row.get(f"{role}_abs_rel"), row.get(f"{role}_delta1")
        if a is not None:
            parts.append(f"{role} AbsRel {a:.3f} δ1 {d:.3f}" + (" (alignment failed)" if row.get(f"{role}_failed") else ""))
    return "; ".join(parts)


def _colour(array: np.ndarray, kind: str, cmap: str) -> np.ndarray:
    """(H, W) -> (H, W, 3) uint8, near = warm for disparity and metric depth alike."""
    a = np.asarray(array, dtype=np.float32)
    a = np.where(np.isfinite(a) & (a > 0 if kind == "metric_depth" else np.isfinite(a)), a, np.nan)
    if not np.isfinite(a).any():
        return np.full(a.shape + (3,), 255, np.uint8)
    return render.colorize(a, cmap, kind=kind)


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
