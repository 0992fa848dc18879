"""pipeline.atomic: the one atomic-write mechanism (issue 10.6), and that nothing else renames files into place."""
from __future__ import annotations

import ast
import os
import stat
import threading
from pathlib import Path

import pytest

from pipeline import atomic
from pipeline.atomic import atomic_path, atomic_write

ROOT = Path(__file__).resolve().parents[1]


def _record_fsyncs(monkeypatch) -> list[str]:
    """Patch os.fsync to record which file or folder each call synced (by the fd's path)."""
    synced, real = [], os.fsync

    def fsync(fd):
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    return synced


def test_write_replaces_content_and_leaves_no_temp(tmp_path):
    path = tmp_path / "a.json"
    path.write_text("old")
    assert atomic_write(path, "new ✓") == path
    assert path.read_text(encoding="utf-8") == "new ✓"
    atomic_write(path, b"\x00\x01")
    assert path.read_bytes() == b"\x00\x01"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]


def test_a_failing_writer_leaves_the_old_file_and_no_temp(tmp_path):
    path = tmp_path / "weights.pt"
    path.write_bytes(b"previous")

    class Boom(Exception):
        pass

    with pytest.raises(Boom):
        with atomic_path(path) as tmp:
            tmp.write_bytes(b"half of the new")
            raise Boom
    assert path.read_bytes() == b"previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["weights.pt"]


def test_a_failing_fsync_leaves_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "x.txt"
    path.write_text("old")
    monkeypatch.setattr(os, "fsync", lambda fd: (_ for _ in ()).throw(OSError(28, "No space left on device")))
    with pytest.raises(OSError, match="No space"):
        atomic_write(path, "new")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["x.txt"]


def test_fsyncs_the_file_before_the_rename_and_then_the_folder(tmp_path, monkeypatch):
    synced = _record_fsyncs(monkeypatch)
    renamed = []
    real_replace = os.replace
    monkeypatch.setattr(os, "replace", lambda a, b: (renamed.append(len(synced)), real_replace(a, b)))
    path = tmp_path / "out.png"
    atomic_write(path, b"png")
    assert len(synced) == 2 and renamed == [1]             # the file, the rename, then the folder
    assert Path(synced[0]).parent == tmp_path and Path(synced[0]).name.startswith(".out.")
    assert Path(synced[0]).name.endswith(".tmp.png")       # the suffix kept: PIL picks the format by it
    assert Path(synced[1]) == tmp_path


def test_scratch_files_are_renamed_into_place_without_fsync(tmp_path, monkeypatch):
    synced = _record_fsyncs(monkeypatch)
    path = tmp_path / "request.json"
    path.write_text("old")
    atomic_write(path, "new", durable=False)
    with atomic_path(tmp_path / "c.png", durable=False) as tmp:
        tmp.write_bytes(b"png")
    assert synced == [] and path.read_text() == "new" and (tmp_path / "c.png").read_bytes() == b"png"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.png", "request.json"]      # no temp left
    with pytest.raises(RuntimeError), atomic_path(path, durable=False) as tmp:
        tmp.write_text("half")
        raise RuntimeError("writer failed")
    assert path.read_text() == "new" and len(list(tmp_path.iterdir())) == 2


def test_temp_names_are_unique_under_concurrency(tmp_path, monkeypatch):
    """Many threads writing the same file each get their own temp (the old fixed `.name.tmp` collided);
    the file ends as one writer's whole content."""
    seen, lock, start = [], threading.Lock(), threading.Barrier(16)

    def writer(i: int):
        start.wait()
        with atomic_path(tmp_path / "cloud.ply") as tmp:
            with lock:
                seen.append(tmp)
            tmp.write_bytes(str(i).encode() * 1000)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(seen)) == 16
    data = (tmp_path / "cloud.ply").read_bytes()
    assert data in {str(i).encode() * 1000 for i in range(16)}
    assert [p.name for p in tmp_path.iterdir()] == ["cloud.ply"]


def test_files_get_umask_permissions_not_mkstemps(tmp_path):
    old = os.umask(0o022)
    try:
        path = atomic_write(tmp_path / "a.txt", "x")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_callers_use_the_helper(tmp_path, monkeypatch):
    """The writers that had their own rename now go through pipeline.atomic (seen by its fsyncs)."""
    import numpy as np

    from pipeline.files import depth_png
    from pipeline.geometry import pointcloud
    from pipeline.train.run_folder import RunFolder
    synced = _record_fsyncs(monkeypatch)
    RunFolder(tmp_path / "run").write_config({"steps": 3})
    depth_png.write_depth_png(tmp_path / "d.png", np.ones((4, 5), np.float32))
    rgb = np.zeros((4, 5, 3), np.uint8)
    pointcloud.write_ply(tmp_path / "c.ply", pointcloud.make_point_cloud(rgb, np.ones((4, 5)), "metric_depth"))
    names = [Path(p).name for p in synced]
    assert sum(n.startswith(".train_config.") for n in names) == 1
    assert sum(n.startswith(".d.") for n in names) == 1 and sum(n.startswith(".c.") for n in names) == 1


def test_one_module_renames_files_into_place():
    """grep finds the atomic-write mechanism in one place: no os.replace / os.rename / Path.replace(...)
    / fsync outside pipeline/atomic.py (the store's blob folder and the model cache's folder rename are
    their own mechanisms)."""
    allowed = {"pipeline/atomic.py", "pipeline/runtime/cache.py", "pipeline/store/blobs.py"}
    found = []
    for path in sorted((ROOT / "pipeline").rglob("*.py")) + sorted((ROOT / "studio").rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        if rel in allowed:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr in ("replace", "rename", "fsync", "mkstemp"):
                base = node.value
                if isinstance(base, ast.Name) and base.id in ("os", "tempfile"):
                    found.append(f"{rel}:{node.lineno} {base.id}.{node.attr}")
                elif node.attr in ("replace", "rename") and isinstance(base, ast.Name) and "tmp" in base.id:
                    found.append(f"{rel}:{node.lineno} {base.id}.{node.attr}")
    assert found == []


def test_temp_beside_keeps_stem_prefix_for_stale_cleanup(tmp_path):
    """A shard writer removes a killed run's `.<stem>.*` partials: temp names must start that way."""
    tmp = atomic.temp_beside(tmp_path / "shard-000001.tar")
    assert tmp.name.startswith(".shard-000001.") and tmp.exists()
    atomic.discard(tmp)
    atomic.discard(tmp)                                     # twice is fine
    assert not tmp.exists()
