"""Training items from the label store: the newest accepted or corrected revision of each image.

The store (pipeline/store, docs/STORE.md) owns the schema; this module only turns what
`Store.training_items()` returns into `TrainItem`s. Pool: an image whose label a person
corrected (status "corrected") goes to "labelled" (flip only, no trimming); a teacher's
pseudo-label accepted unchanged (status "accepted") goes to "pseudo" (strong perturbations,
CutMix, trimming). Imported ground truth is used only with `train_on_ground_truth` (labelled).
Ignore masks make pixels invalid; sky is disparity 0 (V1). With a held-out share, the images of
the held-out split are left out by the store's query (`training_items(holdout=...)`, the rule in
pipeline/store/holdout.py).

Metric runs (`metric=True`) take only labels in metres (revisions of kind `metric_depth`: a metric
model's accepted pseudo-label, a label calibrated to metres by a person, metric ground truth) as
depth in metres; sky and ignored pixels are invalid there (a sky has no finite depth).

`snapshot_items` rebuilds the store items of a run's data snapshot from their revisions (revisions
are never overwritten), for `train --resume --keep-data` after labels changed.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from ..files.image_io import decode_image
from .augment import from_numpy
from .data import TrainItem, depth_to_disparity, disparity_over_max, header_size, metric_label
from .errors import TrainDataError


def _pairs_array(pairs) -> np.ndarray | None:
    """Store PointPairs ((h, w) points, closer 1 | 2) -> (P, 5) rows (h1, w1, h2, w2, closer)."""
    if not pairs:
        return None
    return np.asarray([[*p.point1, *p.point2, int(p.closer)] for p in pairs], dtype=np.int64).reshape(-1, 5)


def label_and_mask(depth: np.ndarray, kind: str, masks: dict[str, np.ndarray],
                   metric: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """A stored label -> (disparity in [0, 1] with NaN unknown, usable-pixel mask). Sky = disparity 0.
    metric: (depth in metres, usable mask) of a metric_depth label; sky is not usable."""
    if metric:
        if kind != "metric_depth":
            raise TrainDataError(f"a {kind} label has no metric scale; a metric run needs labels in metres")
        label = metric_label(depth)
        usable = np.isfinite(label)
        for name in ("sky", "ignore"):
            if masks.get(name) is not None:
                usable &= ~np.asarray(masks[name], dtype=bool)
        return label, usable
    label = depth_to_disparity(depth) if kind == "metric_depth" else disparity_over_max(depth)
    usable = np.isfinite(label)
    if masks.get("sky") is not None:
        sky = np.asarray(masks["sky"], dtype=bool)
        label = np.where(sky, 0.0, label).astype(np.float32)
        usable |= sky
    if masks.get("ignore") is not None:                       # ignore wins over sky
        usable &= ~np.asarray(masks["ignore"], dtype=bool)
    return label, usable


def item_from_record(rec, ground_truth: bool = False, metric: bool = False) -> TrainItem:
    """A store TrainingItem -> TrainItem. Corrected labels and ground truth are 'labelled'; accepted
    pseudo-labels 'pseudo' (metric runs: every item is 'labelled', as in V2's metric fine-tuning).
    Ground truth's validity mask hides the pixels without a measurement."""
    pool = "labelled" if ground_truth or metric or rec.status == "corrected" else "pseudo"
    digest = hashlib.sha256(repr((Path(rec.image_path).name, rec.depth_sha256,
                                  sorted(rec.mask_sha256.items()),
                                  [(p.point1, p.point2, p.closer) for p in rec.point_pairs])).encode()).hexdigest()

    def labels():
        label, usable = label_and_mask(rec.depth(), rec.kind, rec.masks(), metric)
        valid = rec.valid()
        return label, usable if valid is None else usable & valid

    def load():
        rgb = decode_image(rec.image_path).rgb
        label, usable = labels()
        if label.shape != rgb.shape[:2]:
            raise TrainDataError(f"store image {rec.image_id}: label {label.shape} and image {rgb.shape[:2]} "
                                 f"differ in size; re-run pseudo-labelling for it")
        return from_numpy(rgb, label, usable, _pairs_array(rec.point_pairs))

    def has_label_pixels() -> bool:
        return bool(labels()[1].any())

    return TrainItem(str(rec.image_id), pool, load, revision_id=int(rec.revision_id), sha256=digest,
                     source="store-ground-truth" if ground_truth else "store",
                     extra={"status": rec.status, "model_id": rec.model_id, "label_source": rec.source},
                     has_label_pixels=has_label_pixels, image_size=lambda: header_size(rec.image_path))


def open_store(db_path: str | Path):
    db_path = Path(db_path)
    if not db_path.is_file():
        raise TrainDataError(f"label store {db_path} not found; import and label images first, or give --data")
    from ..store import Store
    return Store(db_path)


def store_items(db_path: str | Path, holdout: float = 0.0, ground_truth: bool = False,
                metric: bool = False) -> list[TrainItem]:
    """Newest accepted / corrected revision of each image in the store at `db_path`, leaving out the
    images in the held-out split when `holdout` > 0 (left out by the store's query, not here).

    ground_truth: images with imported ground truth (and not rejected) train on it instead of their
    label (labelled pool). Off by default: ground truth is the comparison's evidence, and an image a
    model trained on its ground truth would flatter that model (the comparison's rows say so).
    metric: only labels in metres (kind metric_depth)."""
    store = open_store(db_path)
    records = [(r, False) for r in store.training_items(("accepted", "corrected"), holdout=holdout)]
    if ground_truth:
        truth = {r.image_id: r for r in store.ground_truth_training_items(holdout=holdout)}
        records = [(r, False) for r, _ in records if r.image_id not in truth] + [(r, True) for r in truth.values()]
        records.sort(key=lambda x: x[0].image_id)
    if metric:
        records = [(r, g) for r, g in records if r.kind == "metric_depth"]
    return [item_from_record(r, g, metric) for r, g in records]


STORE_SOURCES = ("store", "store-ground-truth")


def snapshot_items(db_path: str | Path, rows: list[dict], metric: bool = False) -> list[TrainItem]:
    """The store items of a data snapshot (`data_snapshot(...)["items"]` rows) rebuilt from their revisions.
    TrainDataError when one cannot be rebuilt as it was (deleted, or its masks / point pairs changed)."""
    from ..store.records import TrainingItem
    store = open_store(db_path)
    out = []
    for row in rows:
        if row.get("source") not in STORE_SOURCES:
            continue
        try:
            rev = store.get_revision(int(row["revision_id"]))
            image = store.get_image(rev.image_id)
        except LookupError:
            raise TrainDataError(f"store image {row.get('image_id')} (revision {row.get('revision_id')}) of the "
                                 "run's data is gone; start a new run from its checkpoint instead") from None
        status = "corrected" if row.get("pool") == "labelled" else "accepted"
        rec = TrainingItem(rev.image_id, image.path, status, rev.id, rev.kind, rev.model_id, rev.depth_sha256,
                           dict(rev.masks), store.point_pairs(rev.image_id), store.blobs, rev.source, rev.valid_sha256)
        item = item_from_record(rec, row["source"] == "store-ground-truth", metric)
        if item.sha256 != row.get("sha256"):
            raise TrainDataError(f"store image {rev.image_id}'s point pairs changed since the run's data snapshot; "
                                 "it cannot continue on that snapshot: start a new run from its checkpoint instead")
        out.append(item)
    return out
