"""Background jobs: detached `python -m pipeline ...` processes recorded in the label store.

The studio (or any caller) never runs long work inside a request. It calls
    job_id = start_job(db_path, "pseudo_label", ["pseudo-label", "--checkpoint", ck])
which records the job (store `jobs` table) and, when the scheduling rule allows, spawns its
supervisor (pipeline/jobs/supervisor.py) in a new session (own process group), stdout+stderr
appended to `<db stem>-jobs/<ID>.log`. The supervisor runs
    python -m pipeline <argv...> --db DB --job-id ID
as its child and waits for it. Inside that process the command reports through
`pipeline.jobs.reporter.JobReporter(db_path, job_id)`. With `launcher=torchrun(N)` (kept in the
job's params, so a resume reuses it) the child is
    python -m torch.distributed.run --standalone --nproc-per-node=N -m pipeline <argv...> --db DB --job-id ID
the job's pid is the supervisor's; only rank 0 reports (the command's business). Cancel signals the
supervisor's group (the child is in it) and the groups of all its descendants (torchrun starts each
rank in its own session).

Scheduling: ONE GPU job runs at a time (every job is a GPU job unless started with
gpu=False). A GPU job started while another runs is QUEUED (status 'queued'). The queue advances
in one place, `advance`, called when a job ends (the supervisor's exit path, `job_ended`) and by
the actions that change jobs: start, cancel, resume, and the studio's start (a sweep).
A lock file beside the database makes the check-and-launch atomic across threads and processes.

Reads never write: `job_status` / `list_jobs` / `job_metrics` change nothing. A job whose process
is gone while its record says 'running' is *shown* as 'failed' ("the process ended without
finishing ...", 'cancelling' ones as 'cancelled'), read from the OS (pid + process start time, so
a recycled pid does not count); the record is settled by the next `advance` (its supervisor's
exit path normally does it at once). `resume_job` queues a NEW job with the same argv (the
command skips work already done) and returns its id; the old row keeps its history.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import psutil

from ..errors import StudioError
from ..store import Store
from ..store.errors import JobStateError
from ..store.records import Job

PROJECT_ROOT = Path(__file__).resolve().parents[1]
ACTIVE = ("running", "cancelling")
START_SLACK_S = 5.0            # a process created this much after the job started is another one
LOG_TAIL_LINES = 20


class JobError(StudioError):
    """A job request that cannot be carried out (unknown id, not resumable, ...)."""


# ---------------------------------------------------------------------------- paths, time
def log_path(db_path: str | os.PathLike, job_id: int) -> Path:
    db = Path(db_path).expanduser().resolve()
    return db.parent / f"{db.stem}-jobs" / f"{int(job_id)}.log"


def _lock_path(db_path) -> Path:
    db = Path(db_path).expanduser().resolve()
    return db.parent / f".{db.name}.jobs.lock"


def _ts(text: str | None) -> float | None:
    """Store timestamp ('2026-11-23T22:52:46.123456Z') -> POSIX seconds."""
    if not text:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


@contextlib.contextmanager
def _scheduler_lock(db_path):
    path = _lock_path(db_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


# ---------------------------------------------------------------------------- liveness
def process_alive(pid: int | None, started_at: str | None) -> bool:
    """True when `pid` is a live (non-zombie) process created no later than the job started."""
    if not pid:
        return False
    _reap(pid)
    try:
        proc = psutil.Process(int(pid))
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        started = _ts(started_at)
        return started is None or proc.create_time() <= started + START_SLACK_S
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


def _reap(pid: int) -> None:
    """Collect our own exited child so it does not linger as a zombie (no-op otherwise)."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(int(pid), os.WNOHANG)


# ---------------------------------------------------------------------------- status records
@dataclass(frozen=True)
class JobInfo:
    """What the UI shows for one job: the store's record (`pipeline.store.Job`, the one owner of the
    job's fields and their names) and what is read beside it: the status as the OS sees it (a job
    whose process is gone shows failed/cancelled before the record is settled), the log's tail and
    the rate. The record's fields read through under their one name (`info.done`, `info.total`, ...)."""
    record: Job
    status: str                 # queued | running | cancelling | cancelled | failed | done
    error: str | None
    log_tail: list[str]
    throughput: float | None    # items per second
    eta_s: float | None         # seconds left at that rate

    # the record's fields, read through under their one name
    id = property(lambda self: self.record.id)
    kind = property(lambda self: self.record.kind)
    argv = property(lambda self: self.record.argv)
    params = property(lambda self: self.record.params)
    pid = property(lambda self: self.record.pid)
    done = property(lambda self: self.record.done)
    total = property(lambda self: self.record.total)
    message = property(lambda self: self.record.message)
    metrics = property(lambda self: self.record.metrics)
    result = property(lambda self: self.record.result)
    author = property(lambda self: self.record.author)
    created_at = property(lambda self: self.record.created_at)
    started_at = property(lambda self: self.record.started_at)
    finished_at = property(lambda self: self.record.finished_at)
    heartbeat_at = property(lambda self: self.record.heartbeat_at)

    @property
    def finished(self) -> bool:
        return self.status in ("cancelled", "failed", "done")

    @property
    def fraction(self) -> float | None:
        return None if not self.record.total else min(1.0, self.record.done / self.record.total)


def _tail(path: Path, n: int = LOG_TAIL_LINES, max_bytes: int = 64 * 1024) -> list[str]:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - max_bytes))
            text = f.read().decode("utf-8", "replace")
    except FileNotFoundError:
        return []
    lines = [ln.rstrip() for ln in text.replace("\r", "\n").split("\n")]
    return [ln for ln in lines if ln][-n:]


def _info(job: Job, db_path) -> JobInfo:
    """The job as the UI shows it (read-only: a job whose process is gone shows its outcome)."""
    status, error = job.status, job.error
    if status in ACTIVE and not process_alive(job.pid, job.started_at):
        status, error = _dead_outcome(status)
    rate = job.metrics.get("throughput")
    if rate is None and job.done and job.started_at:
        end = _ts(job.finished_at or job.heartbeat_at) or _ts(job.started_at)
        elapsed = end - _ts(job.started_at)
        rate = job.done / elapsed if elapsed > 0 else None
    eta = None
    if rate and job.total is not None and status in ACTIVE + ("queued",):
        eta = max(0, job.total - job.done) / rate
    return JobInfo(job, status, error, _tail(log_path(db_path, job.id)), rate, eta)


# ---------------------------------------------------------------------------- launching
def torchrun(nproc: int) -> list[str]:
    """Interpreter arguments that run a job as `nproc` DDP processes on this machine (torchrun)."""
    nproc = int(nproc)
    if nproc < 1:
        raise JobError(f"torchrun needs at least one process per node, got {nproc}")
    return ["-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}"]


def _check_launcher(launcher) -> list[str] | None:
    if not launcher:
        return None
    launcher = [str(a) for a in launcher]
    if any(a in ("--db", "--job-id") for a in launcher):
        raise JobError(f"a launcher is the interpreter arguments before `-m pipeline` (e.g. jobs.torchrun(2)); "
                       f"got {launcher}")
    return launcher


def _command(db_path, job: Job) -> list[str]:
    """python [launcher...] -m pipeline <argv...> --db DB --job-id ID"""
    db = str(Path(db_path).expanduser().resolve())
    launcher = job.params.get("launcher") or []
    return [sys.executable, *launcher, "-m", "pipeline", *job.argv, "--db", db, "--job-id", str(job.id)]


def _spawn(db_path, job: Job) -> int:
    """Start the job's supervisor detached (new session); it runs `_command` and reports the exit.
    Returns the supervisor's pid (the job's pid)."""
    env = dict(os.environ)
    env.update(job.params.get("env") or {})
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PROJECT_ROOT), env.get("PYTHONPATH")) if p)
    env.setdefault("PYTHONUNBUFFERED", "1")
    log = log_path(db_path, job.id)
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        supervisor = [sys.executable, "-m", "pipeline.jobs.supervisor", str(Path(db_path).expanduser().resolve()),
                      str(job.id)]
        proc = subprocess.Popen(supervisor, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, env=env, start_new_session=True,
                                close_fds=True)
    return proc.pid


CRASHED = "the process ended without finishing{detail} (crashed or killed); see its log, then resume it to continue"
ENDED_CANCELLING = "the process ended while cancelling"


def _dead_outcome(status: str) -> tuple[str, str]:
    """(status, error) of an active job whose process is gone."""
    return ("cancelled", ENDED_CANCELLING) if status == "cancelling" else ("failed", CRASHED.format(detail=""))


def _settle(store: Store, job_id: int, pid: int | None, detail: str = "") -> None:
    """A running/cancelling job whose process ended without finishing it: failed (crashed) or cancelled."""
    current = store.get_job(job_id)            # re-read: it may have finished meanwhile
    if current.status not in ACTIVE or (pid is not None and current.pid != pid):
        return
    status, error = _dead_outcome(current.status)
    if status == "failed":
        error = CRASHED.format(detail=detail)
    with contextlib.suppress(JobStateError):
        store.finish_job(job_id, status, error=error)


def _advance_locked(store: Store, db_path) -> list[int]:
    """Settle active jobs whose process is gone, then launch queued jobs the GPU rule allows."""
    started: list[int] = []
    alive = []
    for job in store.list_jobs(statuses=ACTIVE, limit=1000):
        if process_alive(job.pid, job.started_at):
            alive.append(job)
        else:
            _settle(store, job.id, job.pid)
    gpu_busy = any(j.params.get("gpu", True) for j in alive)
    for job in reversed(store.list_jobs(statuses=("queued",), limit=1000)):   # oldest first
        gpu = job.params.get("gpu", True)
        if gpu and gpu_busy:
            continue
        try:
            pid = _spawn(db_path, job)
        except OSError as e:
            store.finish_job(job.id, "failed", error=f"could not start the process: {e}")
            continue
        with contextlib.suppress(JobStateError):     # a very short job may already be done
            store.claim_job(job.id, pid)
        started.append(job.id)
        gpu_busy = gpu_busy or gpu
    return started


def advance(db_path) -> list[int]:
    """The one place the queue moves: settle jobs whose process is gone, launch what may start.
    Returns the ids started. Called by start/cancel/resume, a job's exit path and the studio's start."""
    store = Store(db_path)
    with _scheduler_lock(db_path):
        return _advance_locked(store, db_path)


def job_ended(db_path, job_id: int, *, pid: int | None = None, returncode: int | None = None) -> list[int]:
    """A job's process has exited (its supervisor calls this): a record still 'running' is settled
    as failed ('cancelling': cancelled), then the queue advances. `pid`: settle only when the record
    still names that process. Returns the ids started."""
    store = Store(db_path)
    detail = f" (exit status {returncode})" if returncode else ""
    with _scheduler_lock(db_path):
        _settle(store, int(job_id), pid, detail)
        return _advance_locked(store, db_path)


# ---------------------------------------------------------------------------- public API
def start_job(db_path, kind: str, argv: list[str], *, env: dict | None = None, gpu: bool = True,
              params: dict | None = None, author: str = "system", launcher: list[str] | None = None) -> int:
    """Record a job and start it now, or queue it behind the running GPU job. Returns its id.

    `argv` is the command line after `python -m pipeline` WITHOUT --db/--job-id (added here).
    `env`: extra environment variables for the process.
    `launcher`: interpreter arguments before `-m pipeline`, e.g. `torchrun(4)` (None: plain python).
    """
    argv = [str(a) for a in argv]
    if not argv or any(a in ("--db", "--job-id") for a in argv):
        raise JobError(f"a job's argv is a pipeline command without --db/--job-id (added for you); got {argv}")
    p = {k: v for k, v in (params or {}).items() if k != "launcher"}
    p.update({"gpu": bool(gpu), "env": {str(k): str(v) for k, v in (env or {}).items()}})
    launcher = _check_launcher(launcher)
    if launcher:
        p["launcher"] = launcher
    job = Store(db_path).create_job(kind, argv, params=p, author=author)
    advance(db_path)
    return job.id


def _get(store: Store, job_id: int) -> Job:
    try:
        return store.get_job(int(job_id))
    except LookupError:
        raise JobError(f"job {job_id} does not exist; list the jobs to see their ids") from None


def cancel_job(db_path, job_id: int, *, force: bool = False, author: str = "system") -> JobInfo:
    """Ask a job to stop: queued -> cancelled; running -> cancelling + SIGTERM to its group.

    The command finishes the item in hand and ends as 'cancelled'. force=True sends SIGKILL and
    records the job cancelled at once (the item in flight is lost). Then the queue advances.
    """
    store = Store(db_path)
    job = _get(store, job_id)
    job = store.request_cancel(job.id, author=author)
    if job.status == "cancelling" and process_alive(job.pid, job.started_at):
        signal_job(int(job.pid), signal.SIGKILL if force else signal.SIGTERM)
        if force:
            with contextlib.suppress(JobStateError):
                store.finish_job(job.id, "cancelled", error="killed by a forced cancel")
    advance(db_path)
    return job_status(db_path, job.id)


def signal_job(pid: int, sig: int) -> None:
    """Send `sig` to the job's process group and to the groups of all its descendants.

    torchrun starts each rank in a session of its own, so the launcher's group alone does not reach
    them: SIGTERM would (the launcher forwards it), SIGKILL would leave the ranks running."""
    groups = [int(pid)]
    with contextlib.suppress(psutil.Error):
        for child in psutil.Process(int(pid)).children(recursive=True):
            with contextlib.suppress(OSError):
                groups.append(os.getpgid(child.pid))
    for group in dict.fromkeys(groups):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(group, sig)


def resume_job(db_path, job_id: int, *, author: str = "system") -> int:
    """Queue a new job with a failed/cancelled job's kind and argv; return the new id."""
    store = Store(db_path)
    advance(db_path)                           # settles a job whose process is gone
    job = _get(store, job_id)
    if job.status not in ("failed", "cancelled"):
        raise JobError(f"job {job.id} is {job.status}; only failed or cancelled jobs can be resumed")
    params = {k: v for k, v in job.params.items() if k not in ("gpu", "env", "launcher")}
    params["resumed_from"] = job.id
    return start_job(db_path, job.kind, job.argv, env=job.params.get("env"), gpu=job.params.get("gpu", True),
                     params=params, author=author, launcher=job.params.get("launcher"))


def job_status(db_path, job_id: int) -> JobInfo:
    """One job as the UI shows it (reads only)."""
    store = Store(db_path)
    return _info(_get(store, job_id), db_path)


def list_jobs(db_path, *, kind: str | None = None, limit: int = 50) -> list[JobInfo]:
    """Newest first (reads only)."""
    return [_info(j, db_path) for j in Store(db_path).list_jobs(kind=kind, limit=limit)]


def job_metrics(db_path, job_id: int, name: str | None = None) -> list[tuple[int, str, float]]:
    """The metric history [(step, name, value)] (loss curves)."""
    return Store(db_path).job_metrics(int(job_id), name)


def wait_for(db_path, job_id: int, *, timeout: float = 60.0, poll: float = 0.2) -> JobInfo:
    """Poll until the job has finished (tests and scripts); JobError on timeout."""
    import time
    end = time.monotonic() + timeout
    while True:
        info = job_status(db_path, job_id)
        if info.finished:
            return info
        if time.monotonic() > end:
            raise JobError(f"job {job_id} still {info.status} after {timeout:.0f} s")
        time.sleep(poll)
