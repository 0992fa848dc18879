"""Training straight from shards (pipeline/train/shard_source.py): items, labels, filters, damage."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from shard_helpers import INPUT_SIZE, make_images, write_manifest

from pipeline.cli import main
from pipeline.files.image_io import decode_image
from pipeline.shards import iter_items, shard_manifests
from pipeline.train.data import disparity_over_max
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
        assert np.allclose(sample.label.numpy(), disparity_over_max(ref.depth), equal_nan=True)
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


# ----------------------------------------------------------------------------- training from --shards
def _labels_by_image(items, name_of) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    out = {}
    for it in items:
        sample = it.load()
        out[name_of(it)] = (sample.label.numpy(), sample.mask.numpy())
    return out


def test_training_from_shards_reads_the_labels_the_store_import_would(tmp_path, shards):
    """`TrainConfig.shards` puts the shards' items in the run's data; image for image they load the same
    label and mask as the same shards imported into the store and accepted there."""
    from pipeline.shards import import_shards
    from pipeline.store import Store
    from pipeline.train.recipe import gather_items
    from pipeline.train.train_config import TrainConfig

    store = Store(tmp_path / "studio.db")
    assert import_shards(store, shards).labels_added == 8
    ids = [r.image_id for r in store.training_items(("pending", "accepted", "corrected"))]
    store.set_statuses(ids, "accepted", author="test")
    common = dict(out_dir=str(tmp_path / "run"), encoder="vitt", input_size=28, device="cpu")
    from_shards = gather_items(TrainConfig(shards=str(shards), **common))
    from_store = gather_items(TrainConfig(db=str(tmp_path / "studio.db"), **common))
    assert {it.source for it in from_shards} == {"shards"} and {it.pool for it in from_shards} == {"pseudo"}
    a = _labels_by_image(from_shards, lambda it: Path(it.extra["source"]).name)
    b = _labels_by_image(from_store, lambda it: store.get_image(int(it.image_id)).name)
    assert a.keys() == b.keys() and len(a) == 8
    for name, (label, mask) in a.items():
        np.testing.assert_allclose(label, b[name][0], atol=1e-6)
        np.testing.assert_array_equal(mask, b[name][1])
    both = gather_items(TrainConfig(shards=str(shards), db=str(tmp_path / "studio.db"), **common))
    assert len(both) == 16                                          # beside the store's items, not instead


def test_a_tiny_run_trains_from_shards_and_records_them(tmp_path, shards):
    from pipeline.train.recipe import train
    from pipeline.train.train_config import TrainConfig
    cfg = TrainConfig(out_dir=str(tmp_path / "run"), shards=str(shards), encoder="vitt", steps=2, batch_size=2,
                      input_size=28, save_every=2, device="cpu", student_init="random", feature_target="init",
                      shard_min_confidence=None)
    result = train(cfg, log=lambda *a, **k: None)
    assert result.status == "finished" and result.step == 2 and all(np.isfinite(result.losses))
    from pipeline.weights.loading import project_metadata
    rows = project_metadata(result.checkpoint)["meta"]["data"]["items"]
    assert len(rows) == 8 and {r["source"] for r in rows} == {"shards"}


def test_train_help_shows_shards(capsys):
    with pytest.raises(SystemExit) as done:
        main(["train", "--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert "--shards" in out and "--shard-min-confidence" in out


def test_a_metric_run_refuses_shards(tmp_path):
    from pipeline.errors import ConfigError
    from pipeline.train.train_config import TrainConfig
    with pytest.raises(ConfigError, match="drop --shards"):
        TrainConfig(out_dir=str(tmp_path), shards=str(tmp_path), metric=True)
