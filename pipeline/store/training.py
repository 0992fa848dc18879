"""What training reads: the head label of every curated image (`training_items`, in keyset chunks
by `iter_training_items`) and the newest ground truth of every image (`ground_truth_training_items`),
each leaving out the held-out split in the same query when given a share (`holdout`, the rule in
holdout.py); `held_out_ids` is the other side of that split (what the comparison scores).
Arrays are loaded (and hash-checked) by `item.depth()` / `item.masks()`, so the lists are cheap and
picklable for DataLoader workers. Point pairs exclude deleted ones.
"""
from __future__ import annotations

import heapq
from collections.abc import Iterable, Iterator

from .blobs import BlobStore
from .holdout import holdout_where
from .images import check_statuses
from .records import PointPair, TrainingItem
from .revisions import masks_of

LABELLED = ("accepted", "corrected")


def _not_held(holdout: float, column: str) -> tuple[list[str], list]:
    """([condition], params) leaving out the held-out split; nothing at a share of 0."""
    if not holdout or holdout <= 0:
        return [], []
    cond, params = holdout_where(holdout, column, held=False)
    return [cond], params


def training_items(db, blobs: BlobStore, statuses: str | Iterable[str] = LABELLED, *,
                   after_id: int | None = None, limit: int | None = None,
                   holdout: float = 0.0) -> list[TrainingItem]:
    """The head label of every image with one of `statuses`, in image-id order, outside the held-out
    split at share `holdout` (0: every image).

    With `limit` (and `after_id`, the last image id of the previous chunk) one keyset chunk: each
    status is an index range, so a chunk costs the same at any store size.
    """
    st = check_statuses(statuses)
    if limit is None and after_id is None:
        held, hparams = _not_held(holdout, "i.sha256")
        where, params = " AND ".join([f"i.status IN ({', '.join('?' * len(st))})", *held]), [*st, *hparams]
    else:
        ids = _training_ids(db, st, after_id, limit, holdout)
        where, params = f"i.id IN ({', '.join('?' * len(ids))})", ids
    rows = list(db.query(
        f"SELECT i.id AS image_id, i.sha256, i.ext, i.status, r.* FROM images i JOIN revisions r "
        f"ON r.id = i.head_revision_id WHERE {where} ORDER BY i.id", params))
    masks = masks_of(db, [r["id"] for r in rows])
    pairs: dict[int, list[PointPair]] = {}
    for p in db.query(
            f"SELECT p.* FROM point_pairs p JOIN images i ON i.id = p.image_id WHERE p.deleted_at "
            f"IS NULL AND {where} ORDER BY p.id", params):
        pairs.setdefault(p["image_id"], []).append(PointPair.from_row(p))
    return training_records(blobs, rows, masks, pairs)


def training_records(blobs: BlobStore, rows, masks, pairs) -> list[TrainingItem]:
    """TrainingItems of joined (image, revision) rows, their masks and point pairs."""
    return [TrainingItem(r["image_id"], blobs.path(r["sha256"], r["ext"]), r["status"], r["id"],
                         r["kind"], r["model_id"], r["depth_sha256"], masks[r["id"]],
                         pairs.get(r["image_id"], []), blobs, r.get("source") or "human",
                         r.get("valid_sha256")) for r in rows]


def _training_ids(db, st: tuple[str, ...], after_id: int | None, limit: int | None,
                  holdout: float) -> list[int]:
    """The next `limit` labelled image ids after `after_id` with one of the statuses (merged runs)."""
    n = -1 if limit is None else int(limit)
    held, hparams = _not_held(holdout, "sha256")
    extra = "".join(f" AND {c}" for c in held)
    runs = [[r[0] for r in db.execute(
        f"SELECT id FROM images WHERE status = ? AND id > ? AND head_revision_id IS NOT NULL{extra} "
        "ORDER BY id LIMIT ?", [s, int(after_id or 0), *hparams, n])] for s in st]
    ids = list(heapq.merge(*runs))
    return ids if limit is None else ids[:n]


def iter_training_items(db, blobs: BlobStore, statuses: str | Iterable[str] = LABELLED, *,
                        chunk: int = 1000, holdout: float = 0.0) -> Iterator[TrainingItem]:
    """`training_items` one keyset chunk at a time (a store of millions never becomes one list)."""
    after = 0
    while True:
        items = training_items(db, blobs, statuses, after_id=after, limit=chunk, holdout=holdout)
        yield from items
        if len(items) < chunk:
            return
        after = items[-1].image_id


def ground_truth_training_items(db, blobs: BlobStore, *, holdout: float = 0.0) -> list[TrainingItem]:
    """TrainingItem of the newest ground truth of every image that is not rejected, in id order,
    outside the held-out split at share `holdout` (what `train --train-on-ground-truth` trains on
    instead of those images' labels)."""
    held, params = _not_held(holdout, "i.sha256")
    rows = list(db.query(
        "SELECT i.id AS image_id, i.sha256, i.ext, i.status, r.* FROM images i JOIN revisions r ON r.id = "
        "(SELECT max(g.id) FROM revisions g WHERE g.image_id = i.id AND g.source LIKE 'ground_truth:%') "
        "WHERE i.status != 'rejected'" + "".join(f" AND {c}" for c in held) + " ORDER BY i.id", params))
    pairs: dict[int, list[PointPair]] = {}
    for p in db.query("SELECT * FROM point_pairs WHERE deleted_at IS NULL ORDER BY id"):
        pairs.setdefault(p["image_id"], []).append(PointPair.from_row(p))
    return training_records(blobs, rows, {r["id"]: {} for r in rows}, pairs)


def held_out_ids(db, fraction: float) -> list[int]:
    """Ids of the images in the held-out split at share `fraction`, in id order (one index range)."""
    cond, params = holdout_where(fraction, "sha256", held=True)
    return [r[0] for r in db.execute(f"SELECT id FROM images WHERE {cond} ORDER BY id", params).fetchall()]
