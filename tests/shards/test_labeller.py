"""Sharded labelling in one process (the CLI without torchrun): labels, resume, failures, refusals."""
from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
from shard_helpers import INPUT_SIZE, MODEL_ID, make_images, write_manifest

from pipeline.cli import main
from pipeline.files.image_io import decode_image
from pipeline.intake.pseudo_label import confidence_of, flip_pair
from pipeline.shards import iter_items, shard_manifests
from pipeline.shards.labeller import LabelOptions, RankContext, RankStats, ShardError, wait_for_ranks, write_rank_stats


def label_cli(manifest, checkpoint, out, *extra) -> int:
    return main(["pseudo-label", "--manifest", str(manifest), "--checkpoint", str(checkpoint), "--out", str(out),
                 "--input-size", str(INPUT_SIZE), "--workers", "0", "--shard-size", "3", *extra])


def items_by_source(out) -> dict:
    return {i.source: i for m in shard_manifests(out) for i in iter_items(out, m)}


@pytest.fixture
def manifest(tmp_path):
    return write_manifest(tmp_path / "images" / "list.txt", make_images(tmp_path / "images", 7))


def test_shards_hold_the_predictors_flip_labels(tmp_path, manifest, checkpoint, predictor, capsys):
    assert label_cli(manifest, checkpoint, tmp_path / "f32", "--dtype", "float32", "--batch-size", "1") == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["entries"], summary["shards"], summary["complete_shards"], summary["done"],
            summary["failed"]) == (7, 3, 3, 7, 0)
    assert [len(m["items"]) for m in shard_manifests(tmp_path / "f32")] == [3, 3, 1]
    f32 = items_by_source(tmp_path / "f32")
    for source, item in f32.items():                          # what the store job computes, image by image
        data = open(source, "rb").read()
        rgb = decode_image(data).rgb
        pair = flip_pair(predictor, rgb)
        assert (item.sha256, item.nbytes, (item.height, item.width)) == (hashlib.sha256(data).hexdigest(),
                                                                         len(data), rgb.shape[:2])
        assert (item.model_id, item.kind, item.dtype) == (MODEL_ID, "disparity", "float32")
        # to float rounding: OpenVINO answers a shape's 3rd call on with a static model
        np.testing.assert_allclose(item.depth, pair[0], rtol=0, atol=1e-5 * float(np.ptp(pair[0])))
        assert item.confidence == pytest.approx(confidence_of(pair), abs=1e-6)
    assert label_cli(manifest, checkpoint, tmp_path / "u16", "--batch-size", "3") == 0    # 16-bit, batches of 3
    for source, item in items_by_source(tmp_path / "u16").items():
        ref = f32[source]
        step = (ref.depth.max() - ref.depth.min()) / 65535
        assert np.abs(item.depth - ref.depth).max() <= step / 2 + 1e-5
        assert item.confidence == pytest.approx(ref.confidence, abs=1e-5)


def test_decoding_workers_write_the_same_shards(tmp_path, manifest, checkpoint, capsys):
    assert label_cli(manifest, checkpoint, tmp_path / "w0") == 0
    assert label_cli(manifest, checkpoint, tmp_path / "w2", "--workers", "2") == 0
    rank = json.loads(capsys.readouterr().out.splitlines()[-1])["ranks"][0]
    assert rank["images"] == 7 and rank["shards_done"] == 3 and rank["data_wait_s"] >= 0
    assert 0 < rank["predict_s"] <= rank["seconds"]
    assert [m["tar"] for m in shard_manifests(tmp_path / "w0")] == [m["tar"] for m in shard_manifests(tmp_path / "w2")]


def test_a_rerun_skips_complete_shards_and_redoes_partial_ones(tmp_path, manifest, checkpoint, capsys):
    out = tmp_path / "out"
    assert label_cli(manifest, checkpoint, out) == 0
    before = {p.name: p.stat().st_mtime_ns for p in out.glob("shard-*")}
    first = shard_manifests(out)
    (out / "shard-000001.jsonl").unlink()                              # killed between tar and manifest
    (out / ".shard-000001.tar.99999.tmp").write_bytes(b"half a tar")  # and a half-written one
    (out / "shard-000002.tar").write_bytes(b"truncated")              # a tar that lost its tail
    capsys.readouterr()
    assert label_cli(manifest, checkpoint, out) == 0
    rank = json.loads(capsys.readouterr().out)["ranks"][0]
    assert (rank["shards_skipped"], rank["shards_done"], rank["images"]) == (1, 2, 4)
    after = {p.name: p.stat().st_mtime_ns for p in out.glob("shard-*")}
    assert after["shard-000000.tar"] == before["shard-000000.tar"]    # untouched
    assert after["shard-000001.tar"] != before["shard-000001.tar"]
    assert not list(out.glob(".*.tmp*"))
    assert [m["tar"] for m in shard_manifests(out)] == [m["tar"] for m in first]   # same labels again
    sources = [e["source"] for m in shard_manifests(out) for e in m["items"]]
    assert len(sources) == len(set(sources)) == 7                     # no item twice


def test_unreadable_images_are_reported_and_the_rest_labelled(tmp_path, checkpoint, capsys):
    lines = make_images(tmp_path / "images", 4)
    (tmp_path / "images" / "broken.png").write_bytes(b"not an image at all")
    lines[1:1] = ["missing.png"]
    lines.append("broken.png")
    manifest = write_manifest(tmp_path / "images" / "list.txt", lines)
    assert label_cli(manifest, checkpoint, tmp_path / "out") == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["done"], summary["failed"], summary["missing_shards"]) == (4, 2, [])
    failures = [json.loads(line) for line in (tmp_path / "out" / "failures.jsonl").read_text().splitlines()]
    assert [(f["index"], f["shard"], f["source"].rsplit("/", 1)[1]) for f in failures] == \
        [(1, 0, "missing.png"), (5, 1, "broken.png")]
    assert "FileNotFoundError" in failures[0]["reason"] and "not an image" in failures[1]["reason"]


def test_a_folder_of_another_run_and_bad_options_are_refused(tmp_path, manifest, checkpoint, capsys):
    assert label_cli(manifest, checkpoint, tmp_path / "out", "--dtype", "float32") == 0
    assert label_cli(manifest, checkpoint, tmp_path / "out", "--dtype", "float16") == 2
    assert "holds shards of another run (dtype 'float32' there, 'float16' now)" in capsys.readouterr().err
    assert main(["pseudo-label", "--manifest", str(manifest), "--checkpoint", str(checkpoint)]) == 2
    assert "--manifest needs --out" in capsys.readouterr().err
    assert main(["pseudo-label", "--db", str(tmp_path / "x.db"), "--out", str(tmp_path / "o")]) == 2
    assert "--out is the shard folder" in capsys.readouterr().err
    assert label_cli(manifest, checkpoint, tmp_path / "out", "--limit", "2") == 2
    assert "--limit and --job-id are for --db runs" in capsys.readouterr().err
    with pytest.raises(ShardError, match="shard size and batch size"):
        LabelOptions(shard_size=0)


def test_rank_0_waits_for_every_report_of_this_attempt(tmp_path):
    env = {"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0", "TORCHELASTIC_RUN_ID": "r7",
           "TORCHELASTIC_RESTART_COUNT": "1"}
    ctx = RankContext.from_env(env)
    assert (ctx.rank, ctx.world, ctx.attempt, RankContext.from_env({}).attempt) == (0, 2, "r7:1", "local:0")
    assert ctx.device("cpu") == "cpu"
    write_rank_stats(tmp_path, RankStats(0, 2, "cpu", "r7:1", images=3))
    write_rank_stats(tmp_path, RankStats(1, 2, "cpu", "r7:0", images=9))          # left by the killed attempt
    import threading
    later = threading.Timer(0.3, write_rank_stats, (tmp_path, RankStats(1, 2, "cpu", "r7:1", images=4)))
    later.start()
    reports = wait_for_ranks(tmp_path, ctx, poll_s=0.05)
    later.join()
    assert [(r["rank"], r["images"], r["attempt"]) for r in reports] == [(0, 3, "r7:1"), (1, 4, "r7:1")]
