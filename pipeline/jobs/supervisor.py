"""`python -m pipeline.jobs.supervisor DB JOB_ID`: the process a background job runs under.

pipeline.jobs.manager starts it (detached, in a session of its own, stdout/stderr into the job's log). It
runs the job's command (`jobs._command`: `python [launcher] -m pipeline ... --db DB --job-id ID`)
as its child in the same process group, waits for it, and when the child has exited, for any
reason, calls `jobs.job_ended`: a record the command left 'running' (it crashed, was killed, ran
out of memory) is settled as failed, and the next queued job starts. This is the job runner's
exit path: the one place besides the studio's actions where the queue advances.

A cancel reaches the whole group (jobs.signal_job): the supervisor ignores SIGTERM/SIGINT (a
handler, not SIG_IGN, so its child does not inherit "ignored") and lets the command decide when it
has stopped. Its child gets SIGTERM if the supervisor itself is killed (Linux: PR_SET_PDEATHSIG).
"""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys


def _ignore(signum, frame) -> None:
    pass


def _term_with_parent() -> None:
    """In the child before exec: SIGTERM when the supervisor dies (Linux only; a no-op elsewhere)."""
    import ctypes
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM), 0, 0, 0)     # PR_SET_PDEATHSIG


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m pipeline.jobs.supervisor DB JOB_ID", file=sys.stderr)
        return 2
    from ..store import Store
    from . import manager as jobs
    db, job_id = argv[0], int(argv[1])
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _ignore)
    job = Store(db).get_job(job_id)
    returncode = None
    try:
        child = subprocess.Popen(jobs._command(db, job), stdin=subprocess.DEVNULL, close_fds=True,
                                 preexec_fn=_term_with_parent if sys.platform.startswith("linux") else None)
        returncode = child.wait()
    except OSError as e:
        print(f"could not start the job's command: {e}", flush=True)
    finally:
        jobs.job_ended(db, job_id, pid=os.getpid(), returncode=returncode)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
