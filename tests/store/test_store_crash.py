"""kill -9 in the middle of writing: the store stays consistent and a rerun completes it once."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np

from pipeline.store import Store

ROOT = Path(__file__).resolve().parents[2]
# `import pipeline` pulls in torch (pipeline/__init__.py imports the model), ~20 s on a busy
# machine; the writer only needs the store, so it registers the package without running it.
WRITER = textwrap.dedent("""
    import sys, time, types, numpy as np
    pkg = types.ModuleType("pipeline"); pkg.__path__ = [sys.argv[2]]; sys.modules["pipeline"] = pkg
    from pipeline.store import Store
    store = Store(sys.argv[1])
    arr = np.random.default_rng(0).random((48, 64), dtype=np.float32)
    for image_id in store.images_without_prediction("teacher"):
        store.add_prediction(image_id, "teacher", "disparity", arr + image_id, confidence=0.5)
        print(image_id, flush=True)
        time.sleep(float(sys.argv[3]) if len(sys.argv) > 3 else 0)   # paced: the kill lands mid-way on a busy box
""")


def test_kill_during_pseudo_labelling_loses_nothing_committed(tmp_path):
    store = Store(tmp_path / "s.db")
    for i in range(120):
        store.add_image(f"img {i}".encode(), f"{i}.jpg", width=64, height=48)
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(store.path), str(ROOT / "pipeline"), "0.02"], cwd=ROOT,
                            stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    done = [proc.stdout.readline() for _ in range(20)]          # let it write a while
    time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert len(done) == 20
    reopened = Store(store.path)
    assert reopened.verify() == []
    assert len(reopened.blobs.temp_files()) <= 1             # at most the file in flight
    stray = reopened.files_dir / "ab" / ".cdef.npy.1.x.tmp"   # and a sweep removes such leftovers
    stray.parent.mkdir(exist_ok=True)
    stray.write_bytes(b"half")
    assert reopened.sweep_temp_files(older_than_s=3600) == 0
    assert reopened.sweep_temp_files(older_than_s=0) >= 1 and reopened.blobs.temp_files() == []
    finished = [i for i in reopened.image_ids() if reopened.pseudo_label_done(i, "teacher")]
    assert 20 <= len(finished) < 120
    for i in finished:                                            # each finished image is whole
        rev = reopened.head(i)
        assert (rev.number, rev.model_id, reopened.get_image(i).confidence) == (1, "teacher", 0.5)
    # run again: only the rest is done, nothing twice
    left = reopened.images_without_prediction("teacher")
    assert sorted(left + finished) == reopened.image_ids()
    rerun = subprocess.run([sys.executable, "-c", WRITER, str(store.path), str(ROOT / "pipeline")], cwd=ROOT, capture_output=True,
                           text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}, check=True)
    assert [int(x) for x in rerun.stdout.split()] == left
    counts = reopened.db.execute("SELECT count(*), count(DISTINCT image_id) FROM predictions").fetchone()
    assert counts == (120, 120)
    assert reopened.db.execute("SELECT count(*) FROM revisions").fetchone()[0] == 120
    last = reopened.head(left[-1])
    assert np.array_equal(reopened.load_label(last).depth,
                          np.random.default_rng(0).random((48, 64), dtype=np.float32) + left[-1])
