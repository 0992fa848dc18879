"""Training items from the label store: the newest accepted or corrected revision of each image.

The store (pipeline/store, docs/STORE.md) owns the schema; this module only turns what
`training_items()` returns into `TrainItem`s. Pool: a revision a person corrected or drew goes
to "labelled" (flip only, no trimming); a teacher's pseudo-label accepted unchanged goes to
"pseudo" (strong perturbations, CutMix, trimming). Ignore masks make pixels invalid; sky is
disparity 0 (V1).
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from ..image_io import decode_image
from .augment import from_numpy
from .data import TrainItem, normalise_disparity
from .errors import TrainDataError

PSEUDO_KINDS = {"pseudo", "pseudo_label", "pseudo-label", "prediction", "teacher"}


def _get(obj, *names, default=None):
    for n in names:
        if isinstance(obj, dict) and n in obj:
            return obj[n]
        if hasattr(obj, n):
            return getattr(obj, n)
    return default


def _pairs_array(pairs) -> np.ndarray | None:
    if pairs is None or len(pairs) == 0:
        return None
    rows = []
    for p in pairs:
        if isinstance(p, dict):
            p1, p2 = p.get("point1") or p.get("p1"), p.get("point2") or p.get("p2")
            closer = p.get("closer_point", p.get("closer"))
            closer = {"point1": 1, "point2": 2, 1: 1, 2: 2}.get(closer, 0)
            rows.append([int(p1[0]), int(p1[1]), int(p2[0]), int(p2[1]), closer])
        else:
            rows.append([int(v) for v in p][:5])
    return np.asarray(rows, dtype=np.int64).reshape(-1, 5)


def _item_from_record(rec) -> TrainItem:
    image_id = _get(rec, "image_id", "id")
    revision_id = _get(rec, "revision_id", "revision")
    kind = str(_get(rec, "kind", "source", "origin", default="corrected")).lower()
    pool = "pseudo" if kind in PSEUDO_KINDS else "labelled"
    sha = str(_get(rec, "sha256", "hash", "label_sha256", default="") or "")

    def load():
        rgb = _get(rec, "rgb", "image")
        if rgb is None or isinstance(rgb, (str, Path)):
            rgb = decode_image(_get(rec, "image_path", "path") if rgb is None else rgb).rgb
        label = normalise_disparity(np.asarray(_get(rec, "label", "disparity", "array"), dtype=np.float32))
        mask = np.isfinite(label)
        ignore = _get(rec, "ignore_mask", "ignore")
        if ignore is not None:
            mask &= ~np.asarray(ignore, dtype=bool)
        sky = _get(rec, "sky_mask", "sky")
        if sky is not None:
            sky = np.asarray(sky, dtype=bool)
            label = np.where(sky, 0.0, label).astype(np.float32)
            mask |= sky
        valid = _get(rec, "mask", "valid_mask")
        if valid is not None:
            mask &= np.asarray(valid, dtype=bool)
        if label.shape != rgb.shape[:2]:
            raise TrainDataError(f"store image {image_id}: label {label.shape} and image {rgb.shape[:2]} differ in size")
        return from_numpy(rgb, label, mask, _pairs_array(_get(rec, "pairs", "point_pairs")))

    if not sha:
        sha = hashlib.sha256(f"{image_id}:{revision_id}".encode()).hexdigest()
    return TrainItem(str(image_id), pool, load, revision_id=revision_id, sha256=sha, source="store")


def store_items(db_path: str | Path) -> list[TrainItem]:
    """Newest accepted / corrected revision of each image in the store at `db_path`."""
    db_path = Path(db_path)
    if not db_path.is_file():
        raise TrainDataError(f"label store {db_path} not found; import and label images first, or give --data")
    from .. import store
    opened = store.open_store(db_path) if hasattr(store, "open_store") else store.LabelStore(db_path)
    records = list(opened.training_items())
    return [_item_from_record(r) for r in records]


def register_checkpoint(db_path: str | Path, path: Path, *, model_id: str, meta: dict) -> None:
    """Record a finished checkpoint in the store so it appears in the model picker."""
    from .. import store
    opened = store.open_store(db_path) if hasattr(store, "open_store") else store.LabelStore(db_path)
    opened.register_checkpoint(str(path), model_id=model_id, meta=meta)
