"""Garbage collection of the store's files: unreferenced ones go, referenced and young ones stay,
safe against writers at the same moment and against kill -9 in the middle."""
from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.store import ANY_HEAD, StaleRevisionError, Store
from pipeline.store import blobs as blobs_module

ROOT = Path(__file__).resolve().parents[2]
HOUR = 3600.0


def depth(value: float = 1.0, shape=(6, 8)) -> np.ndarray:
    return (value + 0.01 * np.arange(shape[0] * shape[1], dtype=np.float32).reshape(shape)).astype(np.float32)


def png_bytes(seed: int = 0) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (6, 8, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def _age(path: Path, seconds: float = 2 * HOUR) -> None:
    t = time.time() - seconds
    os.utime(path, (t, t))


def _age_all(store: Store) -> None:
    for _, _, p in store.blobs.blob_files():
        _age(p)
    store.db.conn.execute("UPDATE arrays SET created_at = '2000-01-01T00:00:00.000000Z'")
    store.db.conn.commit()


def _stale_garbage(store: Store, image_id: int) -> Path:
    """A correction refused as stale after its array was written: that array is garbage."""
    opened = store.head(image_id).id
    store.save_revision(image_id, depth(2.0), expected_head=opened, tool="smooth", author="bob")
    garbage = depth(3.0)
    with pytest.raises(StaleRevisionError):
        store.save_revision(image_id, garbage, expected_head=opened, tool="plane", author="ann")
    path = store.blobs.path(blobs_module.sha256_bytes(blobs_module.encode_array(garbage)), ".npy")
    assert path.exists()
    return path


@pytest.fixture
def labelled(store, image):
    store.save_revision(image.id, depth(1.0), expected_head=None, tool="import", author="alice", kind="disparity",
                        masks={"ignore": np.eye(6, 8, dtype=bool)})
    return image


def test_unreferenced_files_go_and_everything_referenced_stays(store, labelled):
    garbage = _stale_garbage(store, labelled.id)
    orphan = store.blobs.path(store.blobs.put_array(np.zeros((2, 2), np.float32)).sha256, ".npy")
    kept = {p for _, _, p in store.blobs.blob_files()} - {garbage, orphan}
    _age_all(store)
    report = store.collect_garbage()
    assert (report.removed_files, report.kept_young, report.removed_rows) == (2, 0, 0)
    assert not garbage.exists() and not orphan.exists()
    assert {p for _, _, p in store.blobs.blob_files()} == kept
    assert store.verify() == []
    assert store.load_label(store.head(labelled.id)).depth[0, 0] == pytest.approx(2.0)
    assert store.collect_garbage().removed_files == 0                     # nothing left to do


def test_a_file_written_but_not_yet_referenced_survives(store, labelled):
    """A writer puts its file, then commits its row: in between, the file is young and kept."""
    head = store.head(labelled.id).id
    arr = depth(5.0)
    stored = store.blobs.put_array(arr)                                   # the writer's first half
    report = store.collect_garbage()
    assert report.kept_young == 1 and store.blobs.path(stored.sha256, ".npy").exists()
    store.save_revision(labelled.id, arr, expected_head=head, tool="smooth", author="ann")   # second half
    assert store.verify() == []


def test_writing_an_existing_old_file_again_makes_it_young(store, labelled):
    """Deduplication: the writer finds the file already there; its time is refreshed, so the
    collector cannot remove it between the writer's check and its commit."""
    path = _stale_garbage(store, labelled.id)
    _age_all(store)
    store.blobs.put_array(depth(3.0))                                     # the same bytes again
    assert time.time() - path.stat().st_mtime < HOUR
    assert store.collect_garbage().removed_files == 0 and path.exists()


@pytest.mark.parametrize("writer", ["touches just before the move", "writes just after the move"])
def test_a_writer_at_the_moment_of_removal_keeps_its_file(store, labelled, monkeypatch, writer):
    path = _stale_garbage(store, labelled.id)
    _age_all(store)
    arr = depth(3.0)

    def at_the_moment(moved: Path):
        if writer.startswith("touches"):
            os.utime(moved.with_name(f".{moved.name}.gc"))               # its utime landed before the rename
        else:
            store.blobs.put_array(arr)                                    # finds no file: writes it again
    monkeypatch.setattr(blobs_module, "_after_move", at_the_moment)
    store.collect_garbage()
    assert path.exists() and store.blobs.trash_files() == []
    store.save_revision(labelled.id, arr, expected_head=ANY_HEAD, tool="plane", author="ann")
    assert store.verify() == []


def test_array_rows_nothing_refers_to_are_removed_with_their_files(store, labelled):
    other, _ = store.add_image(png_bytes(seed=7), "dog.png", width=8, height=6)
    store.save_revision(other.id, depth(9.0), expected_head=None, tool="import", author="alice",
                        kind="disparity")
    with store.write() as db:                                             # as a later "delete image" would
        db.conn.execute("DELETE FROM images WHERE id = ?", [labelled.id])
    _age_all(store)
    report = store.collect_garbage()
    assert report.removed_rows == 2                                       # the label and its mask
    assert store.verify() == [] and store.load_label(store.head(other.id)).depth[0, 0] == pytest.approx(9.0)
    head = store.head(other.id)
    kept = {head.depth_sha256, head.human_sha256}                          # its label, the pixels alice set
    assert {sha for sha, ext, _ in store.blobs.blob_files() if ext == ".npy"} == kept
    assert len(list(store.blobs.blob_files())) == 3                       # dog.png too


def test_a_table_added_later_that_refers_to_arrays_is_counted(store, labelled):
    arr = store.blobs.put_array(np.ones((6, 8), np.float32))
    with store.write() as db:
        db.conn.execute("CREATE TABLE ground_truth (id INTEGER PRIMARY KEY, "
                        "array_sha256 TEXT REFERENCES arrays(sha256))")
        db.conn.execute("INSERT INTO arrays (sha256, dtype, shape, nbytes, created_at) VALUES (?, 'float32', "
                        "'[6, 8]', ?, '2000-01-01T00:00:00.000000Z')", [arr.sha256, arr.nbytes])
        db.conn.execute("INSERT INTO ground_truth (array_sha256) VALUES (?)", [arr.sha256])
    _age_all(store)
    assert store.collect_garbage().removed_files == 0 and store.verify() == []


def test_dry_run_and_a_second_collector_change_nothing(store, labelled):
    path = _stale_garbage(store, labelled.id)
    _age_all(store)
    assert store.collect_garbage(dry_run=True).removed_files == 1 and path.exists()
    from pipeline.store.gc import _exclusive
    with _exclusive(store.blobs) as mine:
        assert mine
        assert "another garbage collection" in store.collect_garbage().summary()
    assert path.exists()


def test_concurrent_writers_lose_nothing(store, labelled):
    """Writers saving (and being refused as stale) while collections run with a short grace period."""
    stop, errors = threading.Event(), []

    def write(seed: int):
        rng = np.random.default_rng(seed)
        try:
            while not stop.is_set():
                head = store.head(labelled.id).id
                arr = (rng.random((6, 8)) + 1).astype(np.float32)
                try:
                    store.save_revision(labelled.id, arr, expected_head=head, tool="smooth", author=f"w{seed}")
                except StaleRevisionError:
                    pass
        except Exception as e:                                            # pragma: no cover - the failure
            errors.append(e)
    writers = [threading.Thread(target=write, args=(s,)) for s in range(2)]
    for w in writers:
        w.start()
    try:
        for _ in range(15):
            store.collect_garbage(grace_s=0.5)
            time.sleep(0.1)
    finally:
        stop.set()
        for w in writers:
            w.join()
    assert errors == []
    assert store.verify() == []
    for rev in store.history(labelled.id).revisions:
        store.load_label(rev)                                             # every revision's arrays are there


COLLECTOR = textwrap.dedent("""
    import sys, time, types
    pkg = types.ModuleType("pipeline"); pkg.__path__ = [sys.argv[2]]; sys.modules["pipeline"] = pkg
    from pipeline.store import Store, blobs
    def pause(path):
        print("moved", path, flush=True)
        time.sleep(60)
    blobs._after_move = pause
    Store(sys.argv[1]).collect_garbage()
""")


def test_kill_9_in_the_middle_leaves_a_store_the_next_collection_finishes(store, labelled):
    garbage = [_stale_garbage(store, labelled.id)]
    garbage.append(store.blobs.path(store.blobs.put_array(np.zeros((3, 3), np.float32)).sha256, ".npy"))
    _age_all(store)
    proc = subprocess.Popen([sys.executable, "-c", COLLECTOR, str(store.path), str(ROOT / "pipeline")], cwd=ROOT,
                            stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    line = proc.stdout.readline()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert line.startswith("moved")
    reopened = Store(store.path)
    assert len(reopened.blobs.trash_files()) == 1 and reopened.verify() == []
    report = reopened.collect_garbage()
    assert report.restored == 1 and report.removed_files == 2
    assert reopened.blobs.trash_files() == [] and not any(p.exists() for p in garbage)
    assert reopened.verify() == []


def test_a_referenced_file_left_in_the_trash_is_restored_by_the_first_read(store, labelled):
    """The worst interleaving: a collector killed after moving a file a writer had just touched
    and then referred to. The read that misses the file finds it in the trash."""
    rev = store.head(labelled.id)
    path = store.blobs.path(rev.depth_sha256, ".npy")
    os.rename(path, path.with_name(f".{path.name}.gc"))
    assert store.load_label(rev).depth[0, 0] == pytest.approx(1.0)
    assert path.exists() and store.blobs.trash_files() == []


def test_the_gc_command(store, labelled, capsys):
    from pipeline import cli
    path = _stale_garbage(store, labelled.id)
    assert cli.main(["gc", "--db", str(store.path), "--dry-run", "--grace-minutes", "0"]) == 0
    assert "removed 1 unreferenced file(s)" in capsys.readouterr().out and path.exists()
    assert cli.main(["gc", "--db", str(store.path), "--grace-minutes", "0"]) == 0
    assert not path.exists() and store.verify() == []
    assert cli.main(["gc", "--db", str(store.path), "--grace-minutes", "-1"]) == 2
    assert "grace" in capsys.readouterr().err


def test_the_studios_periodic_pass_collects_and_stops(store, labelled):
    from pipeline.store.gc import PeriodicCollector
    path = _stale_garbage(store, labelled.id)
    _age_all(store)
    collector = PeriodicCollector(store, every_s=0.05, first_after_s=0).start()
    try:
        deadline = time.monotonic() + 30
        while collector.passes < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        collector.stop()
    assert collector.passes >= 2 and not path.exists() and store.verify() == []
    assert not collector._thread.is_alive()


def test_a_later_table_that_keeps_a_sha256_without_a_foreign_key_keeps_its_file(store, labelled):
    """Defence for tables added by later migrations: any column named ...sha256 counts."""
    arr = store.blobs.put_array(np.full((6, 8), 4, np.float32))           # no arrays row at all
    with store.write() as db:
        db.conn.execute("CREATE TABLE sensor_depth (id INTEGER PRIMARY KEY, depth_sha256 TEXT)")
        db.conn.execute("INSERT INTO sensor_depth (depth_sha256) VALUES (?)", [arr.sha256])
    _age_all(store)
    assert store.collect_garbage().removed_files == 0
    assert store.blobs.read_array(arr.sha256)[0, 0] == 4
