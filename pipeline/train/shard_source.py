"""Training items straight from pseudo-label shards (pipeline/shards): for datasets too large to curate.

`shard_items(folder)`: every labelled item of every complete shard of a `pseudo-label
--manifest ... --out folder` run becomes a "pseudo" item (strong perturbations, CutMix and
trimming, as for accepted store pseudo-labels), optionally only those with flip-consistency
confidence >= `min_confidence`, leaving out the held-out split (`in_holdout(content hash)`,
the rule the store source uses). Only the shard manifests are read up front; `load()` reads
the image from the source the shard names (bytes checked against the content hash) and the
label by its tar offset (checked against its own sha256).
`recipe.raw_items` adds them when `TrainConfig.shards` (`--shards DIR`) is given, with the run's
hold-out share and `shard_min_confidence`.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

from ..files.image_io import decode_image
from ..shards.format import ShardError, read_item, shard_manifests
from ..shards.sources import read_source
from .augment import from_numpy
from .data import TrainItem
from .errors import TrainDataError
from .store_source import label_and_mask
from .train_config import in_holdout


def _loader(tar: Path, entry: dict):
    def read():
        try:
            return read_item(tar, entry)
        except ShardError as e:
            raise TrainDataError(str(e)) from None

    def label():
        item = read()
        return item, label_and_mask(item.depth, item.kind, {})

    def load():
        item, (disparity, usable) = label()
        data = read_source(item.source)
        if hashlib.sha256(data).hexdigest() != item.sha256:
            raise TrainDataError(f"{item.source} changed since it was labelled (content hash differs); "
                                 "label it again or drop its shard")
        rgb = decode_image(data, name=item.source).rgb
        return from_numpy(rgb, disparity, usable)

    def size():                                                  # after EXIF orientation, as decoded
        item = read()
        return item.height, item.width

    return load, lambda: bool(label()[1][1].any()), size


def shard_items(folder: str | Path, *, holdout: float = 0.0, min_confidence: float | None = None) -> list[TrainItem]:
    """The labelled items of the complete shards in `folder` as "pseudo" training items."""
    folder = Path(folder)
    try:
        manifests = shard_manifests(folder)
    except ShardError as e:
        raise TrainDataError(str(e)) from None
    items = []
    for m in manifests:
        tar = folder / m["tar"]["file"]
        for entry in m["items"]:
            if min_confidence is not None and entry["confidence"] < min_confidence:
                continue
            if holdout > 0 and in_holdout(entry["sha256"], holdout):
                continue
            load, has_pixels, size = _loader(tar, entry)
            items.append(TrainItem(entry["sha256"][:16], "pseudo", load, revision_id=f"{m['tar']['file']}:{entry['key']}",
                                   sha256=hashlib.sha256(f"{entry['sha256']}:{entry['label_sha256']}".encode()).hexdigest(),
                                   source="shards", extra={"model_id": m["model_id"], "source": entry["source"],
                                                           "confidence": entry["confidence"]},
                                   has_label_pixels=has_pixels,
                                   image_size=size))
    if not items:
        raise TrainDataError(f"no usable labelled images in the shards of {folder}"
                             + (f" with confidence >= {min_confidence}" if min_confidence is not None else ""))
    return items
