"""Background jobs: scheduling, crash detection, reporter, and real pseudo-label jobs."""
from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline.config import ModelConfig
from pipeline.jobs import manager as jobs
from pipeline.jobs.reporter import JobReporter
from pipeline.model import DepthAnything
from pipeline.store import Store
from pipeline.weights.loading import save_checkpoint

ROOT = Path(__file__).resolve().parents[1]
THREADS = {"OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2"}


def _png(rgb: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "PNG")
    return buf.getvalue()


def make_store(path: Path, n: int) -> Store:
    store = Store(path)
    rng = np.random.default_rng(1)
    for i in range(n):
        rgb = rng.integers(0, 256, (28, 36 + 2 * i, 3), dtype=np.uint8)
        store.add_image(_png(rgb), f"im{i}.png", width=36 + 2 * i, height=28)
    return store


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    return save_checkpoint(DepthAnything(ModelConfig(encoder="vitt")).eval(),
                           tmp_path_factory.mktemp("ck") / "teacher.safetensors", model_id="vitt-job")


def pl_argv(checkpoint: Path, *extra: str) -> list[str]:
    return ["pseudo-label", "--checkpoint", str(checkpoint), "--input-size", "42", "--device", "cpu", *extra]


@pytest.fixture
def sleepers(sleeping_jobs):
    """Replace the real launch by `sleep 60` processes (fast scheduling tests; tests/conftest.py)."""
    return sleeping_jobs


def _iso(dt: datetime) -> str:
    return dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# ---------------------------------------------------------------------------- in process
def test_process_alive_uses_pid_and_start_time():
    now = datetime.now(timezone.utc)
    assert jobs.process_alive(os.getpid(), _iso(now))
    # this process was created long after a job that "started" a day ago: a recycled pid
    assert not jobs.process_alive(os.getpid(), _iso(now - timedelta(days=1)))
    p = subprocess.Popen(["true"])
    p.wait()
    assert not jobs.process_alive(p.pid, _iso(now)) and not jobs.process_alive(None, None)


def test_one_gpu_job_at_a_time_queue_and_crash_detection(tmp_path, sleepers):
    db = tmp_path / "s.db"
    Store(db)
    a = jobs.start_job(db, "pseudo_label", ["pseudo-label"])
    b = jobs.start_job(db, "train", ["train"])
    c = jobs.start_job(db, "export", ["export"], gpu=False)     # not a GPU job: runs beside
    assert [jobs.job_status(db, j).status for j in (a, b, c)] == ["running", "queued", "running"]
    assert jobs.job_status(db, a).pid == sleepers[a].pid
    sleepers[a].kill()                                            # crash: kill -9
    sleepers[a].wait()
    assert jobs.job_status(db, a).status == "failed"              # shown at once, read from the OS
    _wait_until(lambda: Store(db).get_job(b).status == "running", timeout=10)   # the exit path advanced
    infos = {i.id: i for i in jobs.list_jobs(db)}
    assert infos[a].status == "failed" and "ended without finishing" in infos[a].error
    assert Store(db).get_job(a).status == "failed"                # settled by the exit path, not a read
    assert infos[b].status == "running"                           # the queue moved on
    assert list(infos) == [c, b, a]                               # newest first


@pytest.mark.slow
def test_a_restarted_studio_sees_running_and_crashed_jobs(tmp_path, sleepers):
    """Liveness comes from the OS (pid + start time), not from the process that started it."""
    db = tmp_path / "s.db"
    Store(db)
    a = jobs.start_job(db, "pseudo_label", ["pseudo-label"])
    code = f"from pipeline.jobs import manager as jobs; print(jobs.job_status({str(db)!r}, {a}).status)"
    fresh = lambda: subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,  # noqa: E731
                                   text=True, check=True).stdout.strip()
    assert fresh() == "running"
    os.killpg(sleepers[a].pid, signal.SIGKILL)
    _wait_until(lambda: not jobs.process_alive(sleepers[a].pid, None), timeout=10)
    assert fresh() == "failed"


def test_cancel_queued_and_running_and_resume_is_a_new_job(tmp_path, sleepers):
    db = tmp_path / "s.db"
    Store(db)
    a = jobs.start_job(db, "pseudo_label", ["pseudo-label", "--x"], env={"A": "1"})
    b = jobs.start_job(db, "pseudo_label", ["pseudo-label", "--y"])
    assert jobs.cancel_job(db, b).status == "cancelled"           # queued: never starts
    info = jobs.cancel_job(db, a)
    assert info.status in ("cancelling", "cancelled")             # the sleeper dies at once
    _wait_until(lambda: not jobs.process_alive(sleepers[a].pid, None), timeout=10)   # SIGTERM'd
    assert jobs.job_status(db, a).status == "cancelled"
    new = jobs.resume_job(db, a)
    assert new not in (a, b)
    info = jobs.job_status(db, new)
    assert (info.status, info.argv, info.params["resumed_from"], info.params["env"]) == \
        ("running", ["pseudo-label", "--x"], a, {"A": "1"})
    with pytest.raises(jobs.JobError, match="only failed or cancelled"):
        jobs.resume_job(db, new)
    with pytest.raises(jobs.JobError, match="does not exist"):
        jobs.cancel_job(db, 999)


def test_reporter_throttles_keeps_the_last_and_sees_cancel(tmp_path, monkeypatch):
    db = tmp_path / "s.db"
    store = Store(db)
    job = store.create_job("pseudo_label", ["pseudo-label"])
    store.claim_job(job.id, os.getpid())
    clock = iter(np.arange(0.0, 100.0, 0.1))                     # 0.1 s per call
    monkeypatch.setattr(time, "monotonic", lambda: float(next(clock)))
    rep = JobReporter(db, job.id, min_interval=0.5, handle_sigterm=False)
    for i in range(1, 21):
        rep.progress(i, 20, loss=1.0 / i)
    steps = sorted({s for s, _, _ in store.job_metrics(job.id, "loss")})
    assert steps == [1, 6, 11, 16, 20]                           # every 0.5 s, and the last
    got = store.get_job(job.id)
    assert (got.done, got.total, got.metrics["loss"]) == (20, 20, pytest.approx(0.05))
    assert got.metrics["throughput"] == pytest.approx(19 / 1.9)  # items per second
    info = jobs._info(got, db)
    assert info.throughput == pytest.approx(10.0) and info.fraction == 1.0
    assert not rep.should_stop()
    store.request_cancel(job.id)
    rep.progress(21, 21)                                          # the next write sees 'cancelling'
    assert rep.should_stop()
    rep.log("stopping")
    rep.finish("cancelled")
    got = store.get_job(job.id)
    assert got.status == "cancelled" and got.done == 21
    assert [line for _, _, line in store.job_log(job.id)] == ["stopping"]


def test_reporter_polls_the_status_in_should_stop(tmp_path):
    db = tmp_path / "s.db"
    store = Store(db)
    job = store.create_job("pseudo_label", ["pseudo-label"])
    store.claim_job(job.id, os.getpid())
    rep = JobReporter(db, job.id, min_interval=0.0, handle_sigterm=False)
    assert not rep.should_stop()
    store.request_cancel(job.id)
    assert rep.should_stop()


def test_reporter_sigterm_sets_should_stop_and_exception_fails_the_job(tmp_path):
    db = tmp_path / "s.db"
    store = Store(db)
    job = store.create_job("pseudo_label", ["pseudo-label"])
    store.claim_job(job.id, os.getpid())
    old = signal.getsignal(signal.SIGTERM)
    try:
        with pytest.raises(RuntimeError):
            with JobReporter(db, job.id, min_interval=3600) as rep:
                assert not rep.should_stop()
                os.kill(os.getpid(), signal.SIGTERM)
                assert rep.should_stop()
                raise RuntimeError("boom")
    finally:
        signal.signal(signal.SIGTERM, old)
    got = store.get_job(job.id)
    assert got.status == "failed" and got.error == "RuntimeError: boom"


# ---------------------------------------------------------------------------- real processes
def _wait_until(pred, timeout=120.0):
    end = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.1)


@pytest.mark.slow
def test_real_pseudo_label_job_runs_to_done(tmp_path, checkpoint):
    store = make_store(tmp_path / "s.db", 3)
    job_id = jobs.start_job(store.path, "pseudo_label", pl_argv(checkpoint), env=THREADS)
    info = jobs.wait_for(store.path, job_id, timeout=180)
    assert info.status == "done", info.log_tail
    assert (info.done, info.total, info.result["done"]) == (3, 3, 3)
    assert info.metrics["confidence"] > 0 and any("model vitt-job" in ln for ln in info.log_tail)
    rows = store.db.execute("SELECT image_id, job_id FROM predictions ORDER BY image_id").fetchall()
    assert [tuple(r) for r in rows] == [(i, job_id) for i in store.image_ids()]


@pytest.mark.slow
def test_real_job_cancel_then_kill_9_then_resume_finishes_once(tmp_path, checkpoint):
    n = 6
    store = make_store(tmp_path / "s.db", n)
    count = lambda: store.db.execute("SELECT COUNT(*) FROM predictions").fetchone()[0]  # noqa: E731
    a = jobs.start_job(store.path, "pseudo_label", pl_argv(checkpoint, "--delay", "0.5"), env=THREADS)
    _wait_until(lambda: count() >= 1)
    jobs.cancel_job(store.path, a)
    info = jobs.wait_for(store.path, a, timeout=60)
    assert info.status == "cancelled" and count() < n
    assert info.result["done"] == count() and info.result["cancelled"]

    b = jobs.resume_job(store.path, a)
    _wait_until(lambda: count() >= info.result["done"] + 1)
    pid = jobs.job_status(store.path, b).pid
    os.killpg(pid, signal.SIGKILL)                                  # kill -9, image in flight
    _wait_until(lambda: jobs.job_status(store.path, b).status == "failed", timeout=30)
    assert count() < n

    c = jobs.resume_job(store.path, b)
    assert jobs.wait_for(store.path, c, timeout=180).status == "done"
    rows = store.db.execute("SELECT image_id, COUNT(*) FROM predictions GROUP BY image_id").fetchall()
    assert [tuple(r) for r in rows] == [(i, 1) for i in store.image_ids()]
    assert store.db.execute("SELECT COUNT(*) FROM revisions").fetchone()[0] == n


def test_the_exit_path_settles_a_command_that_died_and_starts_the_next_job(tmp_path):
    """A command that ends without reporting (here: an unknown command, exit status 2) is settled failed by
    its supervisor, which then starts the queued job: no poll is needed for either."""
    db = tmp_path / "s.db"
    store = Store(db)
    a = jobs.start_job(db, "x", ["no-such-command"])
    b = jobs.start_job(db, "x", ["no-such-command-either"])
    assert store.get_job(b).status == "queued"
    _wait_until(lambda: store.get_job(a).status == "failed", timeout=60)
    assert "exit status 2" in store.get_job(a).error and "crashed or killed" in store.get_job(a).error
    _wait_until(lambda: store.get_job(b).status == "failed", timeout=60)        # started, then it died too
    assert store.get_job(b).started_at is not None
    assert "invalid choice: 'no-such-command'" in jobs.log_path(db, a).read_text()


# ---------------------------------------------------------------------------- launcher (torchrun)
def test_launcher_argv_is_kept_in_params_and_reused_by_resume(tmp_path, sleepers):
    db = tmp_path / "s.db"
    Store(db)
    dbs = str(db.resolve())
    plain = jobs.start_job(db, "export", ["export", "--x"], gpu=False)
    a = jobs.start_job(db, "train", ["train", "--steps", "3"], launcher=jobs.torchrun(2))
    store = Store(db)
    assert jobs._command(db, store.get_job(plain)) == [sys.executable, "-m", "pipeline", "export", "--x",
                                                       "--db", dbs, "--job-id", str(plain)]
    want = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", "-m", "pipeline",
            "train", "--steps", "3", "--db", dbs, "--job-id", str(a)]
    assert jobs._command(db, store.get_job(a)) == want
    assert "launcher" not in store.get_job(plain).params
    jobs.cancel_job(db, a)
    _wait_until(lambda: jobs.job_status(db, a).status == "cancelled", timeout=10)
    b = jobs.resume_job(db, a)
    resumed = store.get_job(b)
    assert resumed.params["launcher"] == jobs.torchrun(2) and resumed.params["resumed_from"] == a
    assert jobs._command(db, resumed) == want[:-1] + [str(b)]
    with pytest.raises(jobs.JobError, match="launcher"):
        jobs.start_job(db, "train", ["train"], launcher=["-m", "x", "--db", "y"])
    with pytest.raises(jobs.JobError, match="at least one"):
        jobs.torchrun(0)


def test_signal_job_reaches_descendants_in_their_own_sessions():
    """torchrun starts each rank with start_new_session: killing the launcher's group must reach them too."""
    code = ("import subprocess, time; p = subprocess.Popen(['sleep', '60'], start_new_session=True); "
            "print(p.pid, flush=True); time.sleep(60)")
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, start_new_session=True)
    child = int(parent.stdout.readline())
    try:
        assert os.getpgid(child) == child != os.getpgid(parent.pid)               # another process group
        jobs.signal_job(parent.pid, signal.SIGKILL)
        parent.wait(10)
        _wait_until(lambda: not jobs.process_alive(child, None), timeout=10)
    finally:
        for pid in (child, parent.pid):
            with __import__("contextlib").suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def test_a_torchrun_rank_dies_with_its_launcher():
    """kill -9 of the launcher (the pid the job runner watches) must not leave ranks running."""
    rank = ("from pipeline.cli.train import _die_with_launcher; _die_with_launcher(); import time; "
            "print('ready', flush=True); time.sleep(60)")
    code = (f"import subprocess, sys, time; p = subprocess.Popen([sys.executable, '-c', {rank!r}], "
            "start_new_session=True, stdout=subprocess.PIPE, text=True); p.stdout.readline(); "
            "print(p.pid, flush=True); time.sleep(60)")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TORCHELASTIC_RUN_ID": "test"}
    launcher = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=env,
                                start_new_session=True)
    child = int(launcher.stdout.readline())
    try:
        assert jobs.process_alive(child, None)
        os.kill(launcher.pid, signal.SIGKILL)
        launcher.wait(10)
        _wait_until(lambda: not jobs.process_alive(child, None), timeout=10)
    finally:
        with __import__("contextlib").suppress(ProcessLookupError):
            os.kill(child, signal.SIGKILL)


@pytest.fixture(scope="module")
def ddp_scenes(tmp_path_factory) -> Path:
    from pipeline.train.synthetic import write_scenes
    return write_scenes(tmp_path_factory.mktemp("ddp") / "data", 4, seed=1, height=32, width=32)


def ddp_argv(data: Path, out: Path, steps: int) -> list[str]:
    return ["train", "--data", str(data), "--encoder", "vitt", "--student-init", "random", "--steps", str(steps),
            "--batch-size", "1",
            "--input-size", "28", "--lr", "1e-4", "--save-every", "100", "--feature-weight", "0",
            "--device", "cpu", "--seed", "0", "--out", str(out), "--threads", "1"]


@pytest.mark.slow
def test_real_two_process_gloo_run_through_the_torchrun_launcher(tmp_path, ddp_scenes):
    from pipeline.weights.loading import load_model
    store = Store(tmp_path / "s.db")
    job_id = jobs.start_job(store.path, "train", ddp_argv(ddp_scenes, tmp_path / "run", 3),
                            env={"OMP_NUM_THREADS": "1"}, launcher=jobs.torchrun(2))
    info = jobs.wait_for(store.path, job_id, timeout=300)
    assert info.status == "done", info.log_tail
    assert (info.done, info.total, info.result["step"]) == (3, 3, 3)
    steps = [s for s, _, _ in store.job_metrics(job_id, "loss")]
    assert steps == sorted(set(steps)) and steps[-1] == 3                    # one writer: rank 0
    log = [line for _, _, line in store.job_log(job_id)]
    assert sum("2 process(es)" in line for line in log) == 1                 # rank 0's log only
    ckpts = store.list_checkpoints()
    assert len(ckpts) == 1 and ckpts[0].job_id == job_id
    meta = load_model(ckpts[0].path).meta
    assert meta["world_size"] == 2 and meta["rank_weight_max_diff"] == 0.0


@pytest.mark.slow
def test_cancelling_a_torchrun_job_stops_every_rank(tmp_path, ddp_scenes):
    import psutil
    store = Store(tmp_path / "s.db")
    job_id = jobs.start_job(store.path, "train", ddp_argv(ddp_scenes, tmp_path / "run", 500),
                            env={"OMP_NUM_THREADS": "1"}, launcher=jobs.torchrun(2))
    _wait_until(lambda: jobs.job_status(store.path, job_id).done >= 1, timeout=240)
    launcher = psutil.Process(jobs.job_status(store.path, job_id).pid)     # the job's supervisor
    ranks = [p for p in launcher.children(recursive=True)
             if "pipeline" in " ".join(p.cmdline()) and "torch.distributed.run" not in p.cmdline()]
    assert len(ranks) == 2
    jobs.cancel_job(store.path, job_id)
    # A cancel reaches each rank more than once (signal_job, then torchrun's forward). The flake was
    # a handler that deadlocked when a second SIGTERM came while it ran (see test_stop_signal.py); a
    # burst of them makes that interleaving near-certain instead of 1 run in 6.
    end = time.monotonic() + 0.3
    while time.monotonic() < end:
        for p in ranks:
            with __import__("contextlib").suppress(ProcessLookupError):
                os.kill(p.pid, signal.SIGTERM)
    info = jobs.wait_for(store.path, job_id, timeout=120)
    assert info.status == "cancelled" and 1 <= info.done < 500
    assert info.error is None and info.result["step"] == info.done         # ended by rank 0's reporter, not killed
    _wait_until(lambda: not any(jobs.process_alive(p.pid, None) for p in [launcher, *ranks]), timeout=60)
    assert (tmp_path / "run" / "train_state.pt").is_file()                  # stopped cleanly: resumable
