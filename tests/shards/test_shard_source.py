"""Training straight from shards (pipeline/train/shard_source.py): items, labels, filters, damage."""
from __future__ import annotations

import numpy as np
import pytest
from shard_helpers import INPUT_SIZE, make_images, write_manifest

from pipeline.cli import main
from pipeline.image_io import decode_image
from pipeline.shards import iter_items, shard_manifests
from pipeline.train.data import normalise_disparity
from pipeline.train.errors import TrainDataError
from pipeline.train.shard_source import shard_items
from pipeline.train.train_config import in_holdout


@pytest.fixture
def shards(tmp_path, checkpoint):
    manifest = write_manifest(tmp_path / "images" / "list.txt", make_images(tmp_path / "images", 8))
    assert main(["pseudo-label", "--manifest", str(manifest), "--checkpoint", str(checkpoint), "--out",
                 str(tmp_path / "out"), "--input-size", str(INPUT_SIZE), "--workers", "0", "--shard-size", "3"]) == 0
    return tmp_path / "out"


def test_shard_items_load_the_image_and_its_label(shards):
    items = shard_items(shards)
    stored = {i.sha256[:16]: i for m in shard_manifests(shards) for i in iter_items(shards, m)}
    assert len(items) == 8 and {i.pool for i in items} == {"pseudo"} and {i.source for i in items} == {"shards"}
    for item in items:
        ref = stored[item.image_id]
        sample = item.load()
        rgb = decode_image(ref.source).rgb
        assert np.allclose(sample.image.permute(1, 2, 0).numpy() * 255, rgb, atol=1e-3)
        assert np.allclose(sample.label.numpy(), normalise_disparity(ref.depth), equal_nan=True)
        assert sample.mask.numpy().all() and item.has_label_pixels()
        assert item.extra["confidence"] == ref.confidence and item.extra["source"] == ref.source
    assert len({i.sha256 for i in items}) == 8


def test_confidence_and_holdout_filters(shards):
    items = shard_items(shards)
    confidences = sorted(i.extra["confidence"] for i in items)
    assert len(shard_items(shards, min_confidence=confidences[4])) == 4
    entries = [e for m in shard_manifests(shards) for e in m["items"]]
    kept = {i.image_id for i in shard_items(shards, holdout=0.5)}
    assert kept == {e["sha256"][:16] for e in entries if not in_holdout(e["sha256"], 0.5)} and 0 < len(kept) < 8
    with pytest.raises(TrainDataError, match="no usable labelled images"):
        shard_items(shards, min_confidence=2.0)
    with pytest.raises(TrainDataError, match="does not exist"):
        shard_items(shards / "nope")


def test_changed_images_and_damaged_labels_are_refused_by_name(shards):
    items = {i.extra["source"].rsplit("/", 1)[1]: i for i in shard_items(shards)}
    src = shards.parent / "images"
    (src / "im000.png").write_bytes((src / "im001.png").read_bytes())
    with pytest.raises(TrainDataError, match="im000.png changed since it was labelled"):
        items["im000.png"].load()
    m = shard_manifests(shards)[0]
    offset, _ = m["items"][2]["members"]["depth"]
    tar = shards / m["tar"]["file"]
    raw = bytearray(tar.read_bytes())
    raw[offset + 40] ^= 0xFF
    tar.write_bytes(bytes(raw))
    with pytest.raises(TrainDataError, match="does not match its checksum"):
        items["im002.png"].load()
