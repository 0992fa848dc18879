"""`JobReporter`: how a command running as a background job reports to the label store.

The runner side (start, cancel, resume, status) is `pipeline.jobs.manager`; this is the other end,
used inside the job's process by `python -m pipeline <command> --job-id N`.
"""
from __future__ import annotations

import os
import signal

from ..store import Store
from . import manager as jobs


class JobReporter:
    """Used by a command running as job `job_id`: progress, logs, metrics, cancel, finish.

        with JobReporter(db, job_id) as rep:       # finishes 'done' / 'failed' / 'cancelled'
            for i, item in enumerate(items):
                if rep.should_stop(): break
                ...
                rep.progress(i + 1, len(items), loss=0.3)

    progress() writes at most every `min_interval` s (and always when done == total, and on
    finish), adding `throughput` (items/s in this process) to the metrics and appending the
    metrics to the history. SIGTERM (sent by cancel_job) sets should_stop(); a second SIGTERM
    kills the process at once.
    """

    def __init__(self, db_path, job_id: int, *, min_interval: float = 0.5, handle_sigterm: bool = True):
        self.store = Store(db_path)
        self.db_path = db_path
        self.job_id = int(job_id)
        self.min_interval = float(min_interval)
        self._stop = False
        self._last_write = float("-inf")
        self._last_check = float("-inf")
        self._pending: tuple | None = None
        self._t0: tuple[float, int] | None = None       # (time, done) at the first progress
        self._finished = False
        jobs._get(self.store, self.job_id)
        if handle_sigterm:
            signal.signal(signal.SIGTERM, self._on_sigterm)

    def _on_sigterm(self, signum, frame) -> None:
        if self._stop:                                   # second request: stop now
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)
        self._stop = True

    def should_stop(self) -> bool:
        """True once cancel was asked: SIGTERM, or the job's status seen as 'cancelling' (read
        at each progress write, and here at most every `min_interval` s)."""
        import time
        now = time.monotonic()
        if not self._stop and now - self._last_check >= self.min_interval:
            self._last_check = now
            self._stop = self.store.get_job(self.job_id).status == "cancelling"
        return self._stop

    def progress(self, done: int, total: int | None = None, *, message: str | None = None,
                 **metrics: float) -> None:
        import time
        now = time.monotonic()
        if self._t0 is None:
            self._t0 = (now, int(done))
        elif now > self._t0[0] and done > self._t0[1]:
            metrics["throughput"] = (done - self._t0[1]) / (now - self._t0[0])
        self._pending = (int(done), total, message, dict(metrics))
        last = total is not None and done >= total
        if last or now - self._last_write >= self.min_interval:
            self._flush(now)

    def _flush(self, now: float | None = None) -> None:
        import time
        if self._pending is None:
            return
        done, total, message, metrics = self._pending
        job = self.store.update_progress(self.job_id, done, total=total, message=message,
                                         metrics=metrics or None)
        if metrics:
            self.store.append_metrics(self.job_id, done, metrics)
        if job.status == "cancelling":
            self._stop = True
        self._pending = None
        self._last_write = time.monotonic() if now is None else now

    def log(self, line: str) -> None:
        """A line in the job's log (the store) and on stdout (the log file)."""
        print(line, flush=True)
        self.store.append_log(self.job_id, str(line))

    def finish(self, status: str = "done", error: str | None = None, result: dict | None = None) -> None:
        """Write the last progress and end the job. The next queued job starts when this process has
        exited (the supervisor's exit path, pipeline.jobs.manager.job_ended), not while it still holds the GPU."""
        if self._finished:
            return
        self._flush()
        job = self.store.get_job(self.job_id)
        if not job.finished:
            self.store.finish_job(self.job_id, status, error=error, result=result)
        self._finished = True

    def __enter__(self) -> JobReporter:
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc is None:
            self.finish("cancelled" if self._stop else "done")
        elif isinstance(exc, KeyboardInterrupt):
            self.finish("cancelled", error="interrupted")
        else:
            self.finish("failed", error=f"{type(exc).__name__}: {exc}")
        return False
