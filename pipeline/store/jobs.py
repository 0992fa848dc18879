"""Job records: what pipeline/jobs/manager.py (the process runner) reads and writes.

Life cycle:  queued --claim_job--> running --finish_job--> done | failed | cancelled
             running --request_cancel--> cancelling --finish_job(cancelled)--> cancelled
             queued --request_cancel--> cancelled (never started)
             failed | cancelled --claim_job(resume=True)--> running (a resumed run)
`update_progress` is also the heartbeat and returns the job, so the runner sees 'cancelling'.
"""
from __future__ import annotations

import json
from collections.abc import Iterable, Mapping

from . import audit
from .db import utc_now, write
from .errors import InvalidValueError, JobStateError, NotFoundError
from .records import Job
from .schema import JOB_STATUSES

FINISHED = ("cancelled", "failed", "done")


def _dump(value) -> str | None:
    return None if value is None else json.dumps(value, sort_keys=True)


def create_job(db, kind: str, argv: list[str], *, total: int | None = None,
               params: dict | None = None, author: str = "system") -> Job:
    with write(db):
        cur = db.conn.execute(
            "INSERT INTO jobs (kind, status, argv, params, total, author, created_at) "
            "VALUES (?, 'queued', ?, ?, ?, ?, ?)",
            (kind, json.dumps([str(a) for a in argv]), _dump(params), total, author, utc_now()))
        job_id = cur.lastrowid
        audit.record(db, author, "job.create", "job", job_id, {"kind": kind})
    return get_job(db, job_id)


def get_job(db, job_id: int) -> Job:
    rows = list(db.query("SELECT * FROM jobs WHERE id = ?", [int(job_id)]))
    if not rows:
        raise NotFoundError(f"job {job_id} is not in the store; list jobs to see what exists")
    return Job.from_row(rows[0])


def list_jobs(db, *, kind: str | None = None, statuses: Iterable[str] | None = None,
              limit: int = 50) -> list[Job]:
    """Newest first."""
    where, params = [], []
    if kind is not None:
        where.append("kind = ?")
        params.append(kind)
    if statuses:
        st = list(statuses)
        bad = [s for s in st if s not in JOB_STATUSES]
        if bad:
            raise InvalidValueError(f"unknown job status {bad[0]!r}; use {', '.join(JOB_STATUSES)}")
        where.append(f"status IN ({', '.join('?' * len(st))})")
        params += st
    sql = "SELECT * FROM jobs" + (" WHERE " + " AND ".join(where) if where else "")
    return [Job.from_row(r) for r in db.query(sql + " ORDER BY id DESC LIMIT ?", [*params, int(limit)])]


def _transition(db, job_id: int, allowed: tuple[str, ...], sets: dict, action: str,
                author: str) -> Job:
    with write(db):
        job = get_job(db, job_id)
        if job.status not in allowed:
            raise JobStateError(f"job {job_id} is {job.status}; it must be {' or '.join(allowed)} "
                                f"to {action.split('.')[-1]}")
        cols = ", ".join(f"{k} = ?" for k in sets)
        db.conn.execute(f"UPDATE jobs SET {cols} WHERE id = ?", [*sets.values(), int(job_id)])
        audit.record(db, author, action, "job", int(job_id), {"from": job.status, "to": sets.get("status")})
    return get_job(db, job_id)


def claim_job(db, job_id: int, pid: int, *, resume: bool = False) -> Job:
    """Mark a queued job running in process `pid` (resume=True also restarts failed/cancelled)."""
    now = utc_now()
    allowed = ("queued", "failed", "cancelled") if resume else ("queued",)
    return _transition(db, job_id, allowed, {"status": "running", "pid": int(pid), "started_at": now,
                                              "heartbeat_at": now, "finished_at": None, "error": None},
                            "job.start", f"pid:{pid}")


def update_progress(db, job_id: int, done: int, *, total: int | None = None,
                    message: str | None = None, metrics: Mapping | None = None) -> Job:
    """Progress + heartbeat in one small write. Returns the job (check `.status`)."""
    sets = {"done": int(done), "heartbeat_at": utc_now()}
    if total is not None:
        sets["total"] = int(total)
    if message is not None:
        sets["message"] = message
    if metrics is not None:
        sets["metrics"] = _dump(dict(metrics))
    with write(db):
        cols = ", ".join(f"{k} = ?" for k in sets)
        db.conn.execute(f"UPDATE jobs SET {cols} WHERE id = ?", [*sets.values(), int(job_id)])
    return get_job(db, job_id)


def heartbeat(db, job_id: int) -> Job:
    with write(db):
        db.conn.execute("UPDATE jobs SET heartbeat_at = ? WHERE id = ?", (utc_now(), int(job_id)))
    return get_job(db, job_id)


def append_log(db, job_id: int, lines: str | Iterable[str]) -> None:
    lines = [lines] if isinstance(lines, str) else list(lines)
    now = utc_now()
    with write(db):
        db.conn.executemany("INSERT INTO job_logs (job_id, at, line) VALUES (?, ?, ?)",
                            [(int(job_id), now, str(line)) for line in lines])


def job_log(db, job_id: int, *, after_id: int = 0, limit: int = 1000) -> list[tuple[int, str, str]]:
    """[(log id, at, line)] after `after_id` (poll with the last id you saw)."""
    rows = db.execute("SELECT id, at, line FROM job_logs WHERE job_id = ? AND id > ? "
                           "ORDER BY id LIMIT ?", [int(job_id), int(after_id), int(limit)])
    return [tuple(r) for r in rows.fetchall()]


def append_metrics(db, job_id: int, step: int, values: Mapping[str, float]) -> None:
    """Metric history rows for one step; also becomes the job's latest `metrics`."""
    now = utc_now()
    with write(db):
        db.conn.executemany("INSERT INTO job_metrics (job_id, step, name, value, at) VALUES (?, ?, ?, ?, ?)",
                            [(int(job_id), int(step), k, float(v), now) for k, v in values.items()])
        job = get_job(db, job_id)
        latest = {**job.metrics, **{k: float(v) for k, v in values.items()}, "step": int(step)}
        db.conn.execute("UPDATE jobs SET metrics = ?, heartbeat_at = ? WHERE id = ?",
                        (_dump(latest), now, int(job_id)))


def job_metrics(db, job_id: int, name: str | None = None) -> list[tuple[int, str, float]]:
    """[(step, name, value)] in step order."""
    sql, params = "SELECT step, name, value FROM job_metrics WHERE job_id = ?", [int(job_id)]
    if name is not None:
        sql, params = sql + " AND name = ?", params + [name]
    return [tuple(r) for r in db.execute(sql + " ORDER BY step, id", params).fetchall()]


def request_cancel(db, job_id: int, *, author: str = "system") -> Job:
    """Queued -> cancelled at once; running -> cancelling (the runner stops and finishes it)."""
    job = get_job(db, job_id)
    if job.status == "queued":
        return _transition(db, job_id, ("queued",), {"status": "cancelled", "finished_at": utc_now()},
                                "job.cancel", author)
    if job.status in ("cancelling",) + FINISHED:
        return job
    return _transition(db, job_id, ("running",), {"status": "cancelling"}, "job.cancel", author)


def finish_job(db, job_id: int, status: str, *, error: str | None = None,
               result: dict | None = None) -> Job:
    """End a running/cancelling job as 'done', 'failed' or 'cancelled'."""
    if status not in FINISHED:
        raise InvalidValueError(f"a job finishes as {', '.join(FINISHED)}; got {status!r}")
    sets = {"status": status, "finished_at": utc_now(), "error": error}
    if result is not None:
        sets["result"] = _dump(result)
    return _transition(db, job_id, ("running", "cancelling", "queued"), sets, f"job.{status}", "runner")
