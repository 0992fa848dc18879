"""torchrun: two CPU ranks write what one process writes; a rank killed with SIGKILL is recovered
by rerunning the command or by torchrun's own --max-restarts; the store then holds each image once."""
from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from shard_helpers import INPUT_SIZE, ROOT, cli_env, make_images, write_manifest

from pipeline.shards import import_shards, iter_items, shard_manifests
from pipeline.store import Store

pytestmark = pytest.mark.slow          # each starts torchrun and two ranks that import torch: 10-30 s


def command(manifest: Path, checkpoint: Path, out: Path, *extra: str, restarts: int | None = None) -> list[str]:
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2"]
    launcher += [] if restarts is None else [f"--max-restarts={restarts}"]
    return [*launcher, "-m", "pipeline", "pseudo-label", "--manifest", str(manifest), "--checkpoint", str(checkpoint),
            "--out", str(out), "--input-size", str(INPUT_SIZE), "--workers", "1", "--shard-size", "2",
            "--batch-size", "1", *extra]


@contextlib.contextmanager
def launched(cmd: list[str]) -> Iterator[subprocess.Popen]:
    """The command in its own session; on the way out (a failed assertion, a timeout) it and
    every process it started (the ranks, their DataLoader workers) are killed."""
    proc = subprocess.Popen(cmd, cwd=ROOT, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()


def run(cmd: list[str], timeout: float = 300) -> subprocess.CompletedProcess:
    with launched(cmd) as proc:
        out, err = proc.communicate(timeout=timeout)
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def labels(out: Path) -> dict[str, tuple[np.ndarray, float]]:
    return {i.source: (i.depth, i.confidence) for m in shard_manifests(out) for i in iter_items(out, m)}


@pytest.fixture
def manifest(tmp_path) -> Path:
    lines = make_images(tmp_path / "images", 10)
    return write_manifest(tmp_path / "images" / "list.txt", lines + lines[:2])     # 12 entries, 10 unique


def test_two_ranks_write_the_labels_one_process_writes(tmp_path, manifest, checkpoint):
    one = run([sys.executable, "-m", "pipeline", "pseudo-label", "--manifest", str(manifest), "--checkpoint",
               str(checkpoint), "--out", str(tmp_path / "one"), "--input-size", str(INPUT_SIZE), "--workers", "1",
               "--shard-size", "2", "--batch-size", "1", "--dtype", "float32"])
    two = run(command(manifest, checkpoint, tmp_path / "two", "--dtype", "float32"))
    assert one.returncode == 0 and two.returncode == 0, (one.stderr[-2000:], two.stderr[-2000:])
    summary = json.loads(two.stdout.strip().splitlines()[-1])
    assert (summary["done"], summary["complete_shards"], len(summary["ranks"])) == (12, 6, 2)
    assert [r["images"] for r in summary["ranks"]] == [6, 6] and all(r["images_per_s"] > 0 for r in summary["ranks"])
    assert {m["shard"]: m["rank"] for m in shard_manifests(tmp_path / "two")} == {k: k % 2 for k in range(6)}
    a, b = labels(tmp_path / "one"), labels(tmp_path / "two")
    assert a.keys() == b.keys() and len(a) == 10
    for source, (depth, conf) in a.items():
        assert np.abs(b[source][0] - depth).max() <= 1e-5 and abs(b[source][1] - conf) <= 1e-5


def kill_a_rank_mid_shard(proc: subprocess.Popen, out: Path, rank: int = 1, world: int = 2) -> int:
    """SIGKILL rank `rank` while it writes its second shard (its first is complete); returns its pid."""
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        for tmp in out.glob(".shard-*.tmp.tar"):                           # pipeline.atomic.temp_beside
            m = re.match(r"\.shard-(\d+)\.(\d+)-[0-9a-f]+\.tmp\.tar", tmp.name)
            if m and int(m.group(1)) % world == rank and int(m.group(1)) >= world:
                os.kill(int(m.group(2)), signal.SIGKILL)
                return int(m.group(2))
        time.sleep(0.05)
    raise AssertionError(f"no shard of rank {rank} was started: {proc.communicate()}")


def check_store(tmp_path: Path, out: Path) -> None:
    store = Store(tmp_path / "studio.db")
    report = import_shards(store, out)
    assert (report.images_added, report.labels_added, report.already, report.failed) == (10, 10, 2, [])
    db = store.db
    assert db.execute("SELECT count(*), count(DISTINCT sha256) FROM images").fetchone() == (10, 10)
    assert db.execute("SELECT count(*), count(DISTINCT image_id) FROM revisions "
                      "WHERE tool = 'pseudo_label'").fetchone() == (10, 10)
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok" and store.verify() == []


def test_a_rank_killed_mid_run_is_finished_by_a_rerun(tmp_path, manifest, checkpoint):
    out = tmp_path / "out"
    with launched(command(manifest, checkpoint, out, "--delay", "0.4")) as proc:
        kill_a_rank_mid_shard(proc, out)
        _, err = proc.communicate(timeout=240)
    assert proc.returncode != 0, err[-2000:]                                  # torchrun gave up
    done_first = {m["shard"]: m["tar"]["sha256"] for m in shard_manifests(out)}
    assert 1 <= len(done_first) < 6 and 3 not in done_first                 # rank 1 died writing shard 3
    rerun = run(command(manifest, checkpoint, out))
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    summary = json.loads(rerun.stdout.strip().splitlines()[-1])
    assert (summary["complete_shards"], summary["done"], summary["failed"]) == (6, 12, 0)
    assert sum(r["shards_skipped"] for r in summary["ranks"]) == len(done_first)
    after = {m["shard"]: m["tar"]["sha256"] for m in shard_manifests(out)}
    assert all(after[k] == v for k, v in done_first.items()) and not list(out.glob(".*.tmp*"))
    sources = [e["source"] for m in shard_manifests(out) for e in m["items"]]
    assert len(sources) == 12 and sorted(e["index"] for m in shard_manifests(out) for e in m["items"]) == list(range(12))
    check_store(tmp_path, out)


def test_torchrun_max_restarts_recovers_a_killed_rank_by_itself(tmp_path, manifest, checkpoint):
    out = tmp_path / "out"
    with launched(command(manifest, checkpoint, out, "--delay", "0.4", restarts=1)) as proc:
        kill_a_rank_mid_shard(proc, out)
        stdout, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    summary = json.loads(stdout.strip().splitlines()[-1])
    assert (summary["complete_shards"], summary["done"]) == (6, 12)
    assert summary["ranks"][1]["shards_skipped"] >= 1          # the restarted rank resumed, not started over
    assert not list(out.glob(".*.tmp*"))
    check_store(tmp_path, out)
