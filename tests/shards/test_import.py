"""import-shards: the same labels as the single-machine store job, once per image, checksums enforced."""
from __future__ import annotations

import json

import numpy as np
import pytest
from shard_helpers import INPUT_SIZE, MODEL_ID, make_images, write_manifest

from pipeline.cli import main
from pipeline.intake.images import import_paths
from pipeline.intake.pseudo_label import run_pseudo_label
from pipeline.shards import import_shards, shard_manifests
from pipeline.store import Store


def label(manifest, checkpoint, out, *extra) -> None:
    assert main(["pseudo-label", "--manifest", str(manifest), "--checkpoint", str(checkpoint), "--out", str(out),
                 "--input-size", str(INPUT_SIZE), "--workers", "0", "--shard-size", "3", *extra]) == 0


def labels_by_sha(store: Store) -> dict[str, tuple]:
    """sha256 -> (head depth, confidence, (number, tool, author, model_id, status))."""
    out = {}
    for image_id in store.image_ids():
        rec, head = store.get_image(image_id), store.head(image_id)
        out[rec.sha256] = (store.load_label(head).depth, rec.confidence,
                           (head.number, head.tool, head.author, head.model_id, rec.status))
    return out


@pytest.fixture
def images(tmp_path):
    lines = make_images(tmp_path / "images", 7)
    return write_manifest(tmp_path / "images" / "list.txt", lines + lines[:2])    # two inputs twice


def test_imported_shards_equal_the_store_jobs_labels(tmp_path, images, checkpoint, predictor, capsys):
    job = Store(tmp_path / "job.db")                                  # the single-machine job
    import_paths(job, [tmp_path / "images"])
    assert run_pseudo_label(job, predictor).done == 7
    want = labels_by_sha(job)
    label(images, checkpoint, tmp_path / "f32", "--dtype", "float32", "--batch-size", "1")
    label(images, checkpoint, tmp_path / "u16", "--batch-size", "4")
    capsys.readouterr()
    assert main(["import-shards", str(tmp_path / "f32"), "--db", str(tmp_path / "f32.db")]) == 0
    assert json.loads(capsys.readouterr().out) == {"shards": 3, "images_added": 7, "labels_added": 7,
                                                   "already": 2, "failed": 0, "bad_shards": 0}
    got = labels_by_sha(Store(tmp_path / "f32.db"))
    assert got.keys() == want.keys()
    for sha, (depth, conf, rev) in got.items():
        assert np.array_equal(depth, want[sha][0]) and conf == want[sha][1]
        assert rev == want[sha][2] == (1, "pseudo_label", f"model:{MODEL_ID}", MODEL_ID, "pending")
    u16 = Store(tmp_path / "u16.db")
    import_shards(u16, tmp_path / "u16")
    for sha, (depth, conf, rev) in labels_by_sha(u16).items():
        ref = want[sha][0]
        assert np.abs(depth - ref).max() <= (ref.max() - ref.min()) / 65535 / 2 + 1e-5
        assert conf == pytest.approx(want[sha][1], abs=1e-5) and rev == want[sha][2]


def test_import_is_idempotent_one_image_and_one_revision_per_unique_input(tmp_path, images, checkpoint):
    label(images, checkpoint, tmp_path / "out")
    store = Store(tmp_path / "s.db")
    existing = import_paths(store, [tmp_path / "images" / "im003.png"]).added[0]       # imported before
    first = import_shards(store, tmp_path / "out", chunk=2)
    assert (first.images_added, first.labels_added, first.already, first.failed) == (6, 7, 2, [])
    again = import_shards(store, tmp_path / "out")
    assert (again.images_added, again.labels_added, again.already) == (0, 0, 9)
    db = store.db
    assert db.execute("SELECT count(*), count(DISTINCT sha256) FROM images").fetchone() == (7, 7)
    assert db.execute("SELECT count(*) FROM revisions WHERE tool = 'pseudo_label'").fetchone()[0] == 7
    assert db.execute("SELECT count(*) FROM predictions").fetchone()[0] == 7
    assert store.head(existing.id).tool == "pseudo_label"
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok" and store.verify() == []
    assert store.count_by_status()["pending"] == 7


def test_damaged_shards_and_changed_images_are_reported_not_imported(tmp_path, images, checkpoint, capsys):
    label(images, checkpoint, tmp_path / "out")
    tar = tmp_path / "out" / "shard-000001.tar"
    raw = bytearray(tar.read_bytes())
    raw[600] ^= 0xFF
    tar.write_bytes(bytes(raw))
    (tmp_path / "images" / "im000.png").write_bytes((tmp_path / "images" / "im001.png").read_bytes())
    capsys.readouterr()
    assert main(["import-shards", str(tmp_path / "out"), "--db", str(tmp_path / "s.db")]) == 1
    err = capsys.readouterr().err
    assert "damaged shard shard-000001.tar" in err and "checksum" in err
    assert "im000.png: the file changed since it was labelled" in err
    store = Store(tmp_path / "s.db")
    m0 = shard_manifests(tmp_path / "out")[0]
    assert {store.get_image(i).name for i in store.image_ids()} == \
        {e["source"].rsplit("/", 1)[1] for e in m0["items"][1:]} | {"im006.png"}
    assert store.db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
