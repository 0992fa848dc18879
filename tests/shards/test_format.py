"""Shard format and manifest: label encodings, the shard plan, atomic shards, checksums, sources."""
from __future__ import annotations

import json

import numpy as np
import pytest

from pipeline.files import depth_png
from pipeline.shards.format import (
    ShardError,
    ShardWriter,
    decode_label,
    encode_label,
    iter_items,
    read_shard_manifest,
    shard_is_complete,
    shard_manifests,
    verify_shard,
)
from pipeline.shards.labeller import plan
from pipeline.shards.sources import display_name, read_manifest, read_source


def label(h=30, w=36, seed=0) -> np.ndarray:
    return (np.random.default_rng(seed).random((h, w)) * 3 + 0.5).astype(np.float32)


def meta_of(array: np.ndarray, dtype: str, extra: dict) -> dict:
    return {"dtype": dtype, "height": array.shape[0], "width": array.shape[1], **extra}


def test_uint16_labels_follow_depth_png_rule_and_float_labels_are_exact():
    a = label()
    suffix, data, extra = encode_label(a, "uint16")
    back = decode_label(data, meta_of(a, "uint16", extra), "x")
    codes, meta = depth_png.encode(a)
    assert suffix == "depth.png" and extra == {k: meta[k] for k in ("offset", "scale", "nodata")}
    assert np.array_equal(back, depth_png.decode(codes, meta["offset"], meta["scale"], meta["nodata"]))
    assert np.abs(back - a).max() <= meta["scale"] / 2 + 1e-6          # within half a 16-bit step
    for dtype in ("float32", "float16"):
        suffix, data, extra = encode_label(a, dtype)
        back = decode_label(data, meta_of(a, dtype, extra), "x")
        assert suffix == "depth.npy" and back.dtype == np.float32
        assert np.array_equal(back, a.astype(dtype).astype(np.float32))
    holes = a.copy()
    holes[0, :3] = np.nan
    _, data, extra = encode_label(holes, "uint16")
    back = decode_label(data, meta_of(a, "uint16", extra), "x")
    assert np.isnan(back[0, :3]).all() and np.isfinite(back[1:]).all()
    with pytest.raises(ShardError, match="does not match the image"):
        decode_label(data, {**meta_of(a, "uint16", extra), "width": 35}, "item 7")


@pytest.mark.parametrize("entries,size", [(1, 1), (10, 3), (12, 4), (1001, 1000)])
def test_the_plan_gives_every_entry_exactly_one_shard_whatever_the_world_size(entries, size):
    whole = plan(entries, size)
    for world in (1, 2, 3, 8):
        parts = [plan(entries, size, r, world) for r in range(world)]
        assert sorted(s for p in parts for s in p) == whole                  # same shards, split by rank
    covered = [i for _, first, n in whole for i in range(first, first + n)]
    assert covered == list(range(entries))


def write_shard(folder, shard=0, n=3, dtype="float32") -> dict:
    w = ShardWriter(folder, shard, shard * n, n, {"model_id": "m", "kind": "disparity", "dtype": dtype})
    for i in range(n - 1):
        a = label(seed=i)
        suffix, data, extra = encode_label(a, dtype)
        w.add({"index": shard * n + i, "source": f"/x/{i}.png", "sha256": f"{i:064d}", "nbytes": 5, "width": 36,
               "height": 30, "model_id": "m", "kind": "disparity", "confidence": 0.5 + i / 10, "dtype": dtype,
               **extra}, suffix, data)
    w.fail(shard * n + n - 1, "/x/bad.png", "not an image")
    return read_shard_manifest(w.close(rank=0))


def test_a_shard_appears_only_when_complete_and_reads_back(tmp_path):
    w = ShardWriter(tmp_path, 4, 0, 2, {"model_id": "m"})
    assert not shard_is_complete(tmp_path, 4) and len(list(tmp_path.glob(".shard-000004.*.tmp.tar"))) == 1
    w.abort()
    assert list(tmp_path.iterdir()) == []                                       # nothing left behind
    m = write_shard(tmp_path)
    assert shard_is_complete(tmp_path, 0) and [p.name for p in sorted(tmp_path.iterdir())] == \
        ["shard-000000.jsonl", "shard-000000.tar"]
    assert shard_manifests(tmp_path) == [m] and m["failed"] == [{"index": 2, "source": "/x/bad.png",
                                                                 "reason": "not an image"}]
    lines = (tmp_path / "shard-000000.jsonl").read_text().splitlines()
    header = json.loads(lines[0])                                # line 1: the shard, without its items
    assert (header["done"], header["count"], "items" not in header, len(lines)) == (2, 3, True, 3)
    assert shard_manifests(tmp_path, items=False) == [header]
    items = list(iter_items(tmp_path, m))
    assert [(i.index, i.source, i.confidence) for i in items] == [(0, "/x/0.png", 0.5), (1, "/x/1.png", 0.6)]
    assert all(np.array_equal(i.depth, label(seed=k)) for k, i in enumerate(items))
    import tarfile
    with tarfile.open(tmp_path / "shard-000000.tar") as t:                      # plain webdataset-style tar
        assert t.getnames() == ["000000000.json", "000000000.depth.npy", "000000001.json", "000000001.depth.npy"]
    again = tmp_path / "again"
    again.mkdir()
    assert write_shard(again)["tar"] == m["tar"]                                # same labels, same bytes


def test_damaged_or_truncated_shards_are_refused(tmp_path):
    m = write_shard(tmp_path)
    tar = tmp_path / "shard-000000.tar"
    raw = bytearray(tar.read_bytes())
    raw[700] ^= 1
    tar.write_bytes(bytes(raw))
    with pytest.raises(ShardError, match="does not match the checksum"):
        verify_shard(tmp_path, m)
    with pytest.raises(ShardError, match="does not match the checksum"):
        list(iter_items(tmp_path, m))
    tar.write_bytes(bytes(raw[:1024]))
    assert not shard_is_complete(tmp_path, 0)                                   # a rerun redoes it


def test_manifest_lines_paths_and_urls(tmp_path):
    (tmp_path / "sub").mkdir()
    path = tmp_path / "sub" / "list.txt"
    path.write_text("# comment\n\n a.jpg \n../b.png\ns3://bucket/c.jpg\nfile:///tmp/d.png\n")
    m = read_manifest(path)
    entries = [str(tmp_path / "sub" / "a.jpg"), str(tmp_path / "b.png"), "s3://bucket/c.jpg", "file:///tmp/d.png"]
    assert (m.count, m.entries) == (4, dict(enumerate(entries)))
    assert [display_name(e) for e in entries] == ["a.jpg", "b.png", "c.jpg", "d.png"]
    odd = read_manifest(path, keep=lambda i: i % 2 == 1)              # a rank keeps its own share only
    assert (odd.count, odd.digest, odd.entries) == (4, m.digest, {1: entries[1], 3: entries[3]})
    path.write_text("\n".join(reversed(["a.jpg", "../b.png", "s3://bucket/c.jpg", "file:///tmp/d.png"])))
    assert read_manifest(path).digest != m.digest
    (tmp_path / "empty.txt").write_text("# nothing\n")
    with pytest.raises(ShardError, match="lists no images"):
        read_manifest(tmp_path / "empty.txt")
    with pytest.raises(ShardError, match="not found"):
        read_manifest(tmp_path / "missing.txt")


def test_urls_are_read_through_fsspec(tmp_path):
    fsspec = pytest.importorskip("fsspec")
    (tmp_path / "a.bin").write_bytes(b"local bytes")
    assert read_source(f"file://{tmp_path}/a.bin") == b"local bytes"
    with fsspec.open("memory://shards-test/b.bin", "wb") as f:
        f.write(b"in memory")
    assert read_source("memory://shards-test/b.bin") == b"in memory"
    with pytest.raises(FileNotFoundError):
        read_source("memory://shards-test/none.bin")
