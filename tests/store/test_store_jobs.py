"""Job records (life cycle, progress, cancel, logs, metrics), checkpoints registry, audit."""
from __future__ import annotations

import pytest

from pipeline.store import Checkpoint, InvalidValueError, Job, JobStateError, NotFoundError


def test_job_life_cycle_with_progress_logs_and_metrics(store):
    job = store.create_job("pseudo_label", ["python", "-m", "pipeline", "pseudo-label", "--db", "x.db"],
                           total=3, params={"model": "m"}, author="ann")
    assert job == Job(job.id, "pseudo_label", "queued", ["python", "-m", "pipeline", "pseudo-label", "--db", "x.db"],
                      {"model": "m"}, None, 0, 3, None, {}, {}, None, "ann", job.created_at, None, None, None)
    running = store.claim_job(job.id, pid=4242)
    assert (running.status, running.pid, running.started_at is not None) == ("running", 4242, True)
    with pytest.raises(JobStateError, match=f"job {job.id} is running; it must be queued"):
        store.claim_job(job.id, pid=1)
    p = store.update_progress(job.id, 2, message="2/3 images")
    assert (p.done, p.total, p.message, p.status) == (2, 3, "2/3 images", "running")
    store.append_log(job.id, "first")
    store.append_log(job.id, ["second", "third"])
    log = store.job_log(job.id)
    assert [line for _, _, line in log] == ["first", "second", "third"]
    assert [line for _, _, line in store.job_log(job.id, after_id=log[0][0])] == ["second", "third"]
    store.append_metrics(job.id, 10, {"loss": 0.5, "lr": 1e-4})
    store.append_metrics(job.id, 20, {"loss": 0.25})
    assert store.job_metrics(job.id, "loss") == [(10, "loss", 0.5), (20, "loss", 0.25)]
    assert store.get_job(job.id).metrics == {"loss": 0.25, "lr": 1e-4, "step": 20}
    done = store.finish_job(job.id, "done", result={"labelled": 3})
    assert (done.status, done.result, done.finished, done.error) == ("done", {"labelled": 3}, True, None)
    assert [e.action for e in store.audit_log(entity="job", entity_id=job.id)] == ["job.done", "job.start", "job.create"]


def test_cancel_queued_and_running_and_resume(store):
    queued = store.create_job("train", ["x"])
    assert store.request_cancel(queued.id).status == "cancelled"
    job = store.create_job("train", ["x"])
    store.claim_job(job.id, pid=1)
    assert store.request_cancel(job.id).status == "cancelling"
    assert store.update_progress(job.id, 1).status == "cancelling"        # the runner sees it
    assert store.request_cancel(job.id).status == "cancelling"            # idempotent
    assert store.finish_job(job.id, "cancelled").status == "cancelled"
    with pytest.raises(JobStateError):
        store.claim_job(job.id, pid=2)
    resumed = store.claim_job(job.id, pid=2, resume=True)
    assert (resumed.status, resumed.pid, resumed.finished_at) == ("running", 2, None)
    failed = store.finish_job(job.id, "failed", error="CUDA out of memory")
    assert (failed.status, failed.error) == ("failed", "CUDA out of memory")
    with pytest.raises(InvalidValueError):
        store.finish_job(job.id, "running")
    assert [j.id for j in store.list_jobs()] == [job.id, queued.id]
    assert [j.id for j in store.list_jobs(statuses=["failed"])] == [job.id]
    assert store.list_jobs(kind="pseudo_label") == []
    with pytest.raises(NotFoundError):
        store.get_job(999)


def test_checkpoint_registry(store, tmp_path):
    job = store.create_job("train", ["x"])
    path = tmp_path / "student.safetensors"
    ck = store.register_checkpoint(path, "student-1", {"encoder": "vitt"}, metrics={"absrel": 0.2}, job_id=job.id)
    assert ck == Checkpoint(ck.id, str(path.resolve()), "student-1", {"encoder": "vitt"}, {"absrel": 0.2},
                            job.id, None, ck.created_at)
    upd = store.update_checkpoint_metrics(ck.id, {"delta1": 0.9})
    assert upd.metrics == {"absrel": 0.2, "delta1": 0.9}
    again = store.register_checkpoint(path, "student-1", {"encoder": "vitt"}, note="re-registered")
    assert (again.id, again.metrics, again.note) == (ck.id, {"absrel": 0.2, "delta1": 0.9}, "re-registered")
    other = store.register_checkpoint(tmp_path / "b.safetensors", "student-1", {"encoder": "vitt"})
    assert store.find_checkpoint("student-1") == other
    assert store.find_checkpoint("nope") is None
    assert [c.id for c in store.list_checkpoints()] == [other.id, ck.id]
