"""Reads never write (DESIGN.md): polling every status endpoint of the train and curate tabs (job status,
runs, curves, checkpoints, the tab's show, the gallery) leaves every table of the store unchanged, even
with a run that finished while the studio was down (registered at start, not by a poll), a queued job
(launched when a job ends, not by a poll) and a job whose process died (shown failed, settled later)."""
from __future__ import annotations

import os
import subprocess

from train_data import add_accepted, fake_job, finished_run  # on sys.path (pytest)

from pipeline.jobs import manager as jobs
from pipeline.services.curation_service import CurationService
from pipeline.services.training_service import TrainingService
from pipeline.store import Store
from studio.curate_tab import CurateHandlers
from studio.train_handlers import TrainHandlers


def snapshot(store: Store) -> dict[str, list]:
    """Every row of every table, in a stable order."""
    tables = [r[0] for r in store.db.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()]
    return {t: sorted(map(repr, store.db.execute(f"SELECT * FROM [{t}]").fetchall())) for t in tables}


def test_polling_every_status_endpoint_changes_nothing(settings, vitt_service, tmp_path, sleeping_jobs):
    store = Store(settings.ensure_dirs().database)
    service = TrainingService(store, settings, vitt_service, data_root=tmp_path / "root", device="cpu", gpus=0)
    curation = CurationService(store, settings)
    train, curate = TrainHandlers(service), CurateHandlers(curation, vitt_service)
    for seed in range(3):
        add_accepted(store, seed)
    small = dict(init="random", encoder="vitt", steps=3, input_size=28, feature_alignment=False)
    running = service.start(dict(name="running", **small))
    queued = service.start(dict(name="queued", **small))                       # one GPU job at a time
    finished = fake_job(store, finished_run(service.runs_dir / "finished").path,
                        metrics=[(1, {"loss": 2.0}), (2, {"loss": 1.5})])      # ended while the studio was down
    crashed = store.create_job("train", ["train"], params={"run": "crashed", "out_dir": str(tmp_path / "c")})
    dead = subprocess.Popen(["true"])
    dead.wait()
    store.claim_job(crashed.id, dead.pid)                                      # its process is gone
    pseudo = store.create_job("pseudo_label", ["pseudo-label"], params={"gpu": False})
    store.request_cancel(pseudo.id)
    ids = [running, queued, finished, crashed.id]
    assert store.get_job(queued).status == "queued"

    before = snapshot(store)
    for _ in range(2):
        train.poll(None)
        for job_id in ids:
            train.poll(job_id)
            service.status(job_id)
            service.curves(job_id)
            jobs.job_metrics(store.path, job_id)
        service.runs()
        service.checkpoints()
        train.checkpoints()
        train.show(vitt_service.default_key, vitt_service.default_key, vitt_service.default_key, "vitt")
        jobs.list_jobs(store.path)
        curation.job()
        curation.job(pseudo.id)
        curate.intake.poll_job(pseudo.id)
        curate.intake.job_moved(pseudo.id, None)
        curate.gallery.gallery("all", "confidence, worst first", 1)
        curation.gallery("all")
        curation.gallery("accepted", sort="name")
    assert snapshot(store) == before
    assert service.status(crashed.id).status == "failed"                       # shown from the OS...
    assert store.get_job(crashed.id).status == "running"                      # ...settled by the next advance
    assert store.get_job(queued).status == "queued" and store.list_checkpoints() == []

    os.killpg(sleeping_jobs[running].pid, 9)                                   # the running job ends:
    sleeping_jobs[running].wait()                                              # its exit path moves the queue
    import time
    end = time.monotonic() + 20
    while store.get_job(queued).status != "running":
        assert time.monotonic() < end, "the queue did not move when the job ended"
        time.sleep(0.05)
    assert store.get_job(crashed.id).status == "failed"                        # and settled the dead one
    assert service.startup() == [store.list_checkpoints()[0].id]               # the studio's start registers
