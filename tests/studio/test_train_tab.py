"""The train tab's handlers without a browser: start/queue/cancel/resume through the job runner (the
spawned process is a stand-in `sleep`, so no training runs here), polling, tables, and the comparison."""
from __future__ import annotations

import importlib.util
import os
import signal
import time
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
from services import make_services

from pipeline.jobs import manager as jobs
from pipeline.services.training_service import TrainingService
from pipeline.store import Store
from pipeline.store.records import Job
from pipeline.train.run_folder import RunFolder
from studio import train_tab
from studio.app import build_app
from studio.train_compare_view import COMPARE_HEADERS
from studio.train_handlers import (
    CKPT_HEADERS,
    IDLE_POLL_S,
    POLL_S,
    RUN_HEADERS,
    TrainHandlers,
    status_markdown,
)


def _load_train_data():
    spec = importlib.util.spec_from_file_location("studio_train_data", Path(__file__).with_name("train_data.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


add_accepted = _load_train_data().add_accepted
add_with_ground_truth = _load_train_data().add_with_ground_truth

FORM = dict(name="", init="random", encoder="vitt", steps=5, batch_size=2, lr_encoder=5e-6, decoder_lr_mult=10,
            labelled_ratio="1:2", input_size=28, feature_alignment=False, folder="", gt_kind="depth", save_every=2)


@pytest.fixture
def spawned(sleeping_jobs):
    """Jobs start a detached `sleep` instead of `python -m pipeline train` (tests/conftest.py)."""
    return sleeping_jobs


@pytest.fixture
def service(settings, vitt_service, tmp_path):
    store = Store(settings.ensure_dirs().database)
    return TrainingService(store, settings, vitt_service, data_root=tmp_path / "root", device="cpu", gpus=0)


@pytest.fixture
def h(service):
    return TrainHandlers(service)


def form(**changes):
    """What the page's Start button sends /train_start: the settings by name."""
    return {**FORM, **changes}


def saved_settings(service, job_id) -> dict:
    """The settings file the run's job reads (train --config FILE)."""
    info = service.status(job_id)
    assert info.argv[:2] == ["train", "--config"]
    return RunFolder(info.params["out_dir"]).read_config()


def wait_status(service, job_id, status, timeout=20):
    end = time.monotonic() + timeout
    while (info := service.status(job_id)).status != status:
        assert time.monotonic() < end, f"job {job_id} still {info.status}"
        time.sleep(0.1)
    return info


def test_the_tab_builds_with_its_endpoints(settings, vitt_service, service):
    demo = build_app(make_services(vitt_service, training=service), tabs=(train_tab,))
    names = {fn.api_name for fn in demo.fns.values() if fn.api_name}
    assert {"train_start", "train_status", "train_cancel", "train_resume", "train_checkpoints", "train_compare",
            "train_compare_sample"} <= names
    ids = {b.elem_id for b in demo.blocks.values() if getattr(b, "elem_id", None)}
    assert {"train-start", "train-status", "train-curves", "train-log", "train-cancel", "train-resume",
            "train-checkpoints", "train-compare-gallery"} <= ids
    start = next(fn for fn in demo.fns.values() if fn.api_name == "train_start")
    assert [type(b).__name__ for b in start.inputs] == ["JSON"]                # one object of settings by name
    shown = [fn for fn in demo.fns.values() if "train-data-note" in [getattr(o, "elem_id", None) for o in fn.outputs]]
    events = {(type(demo.blocks[b]).__name__ if b in demo.blocks else "page", e) for fn in shown for b, e in fn.targets}
    assert events == {("Tab", "select"), ("page", "load")}                   # read whenever the tab is shown


def test_poll_without_runs(h):
    job, status, curves, log, runs, ckpts, cancel, resume, timer = h.poll(None)
    assert job["value"] is None and "No training run yet" in status and timer.value == IDLE_POLL_S
    assert list(runs.columns) == RUN_HEADERS and runs.empty and list(ckpts.columns) == CKPT_HEADERS
    assert curves["value"].empty and log == "" and cancel["interactive"] is False and resume["interactive"] is False


@pytest.fixture
def curated(service):
    return [add_accepted(service.store, s) for s in range(2)]


def test_start_queue_cancel_resume(h, service, spawned, curated):
    first, text = h.start(form(name="one"))
    assert first["value"] == 1 and "**one** (job 1): **running**" in text
    second, text = h.start(form(name="two"))
    assert second["value"] == 2 and "Queued" in text                       # one GPU job at a time
    job, status, *_rest, cancel, resume, timer = h.poll(None)             # newest run shown
    assert job["value"] == 2 and "queued" in status and cancel["interactive"] and not resume["interactive"]
    assert timer.value == POLL_S
    assert job["choices"] == [("2: two (queued)", 2), ("1: one (running)", 1)]

    assert "cancelling" in h.cancel(1)
    wait_status(service, 1, "cancelled")
    wait_status(service, 2, "running")                                    # the queue moved on
    job, status, *_rest, cancel, resume, _timer = h.poll(1)
    assert "Press **Resume**" in status and resume["interactive"] and not cancel["interactive"]
    new, text, choice, _ = h.resume(1)
    assert new["value"] == 3 and "Queued" in text and choice["visible"] is False
    info = service.status(3)
    assert info.params["resumed_from"] == 1 and "--resume" not in info.argv   # nothing saved yet: a fresh start
    assert info.argv == service.status(1).argv


def test_the_held_out_share_reaches_the_train_command(h, service, spawned, curated):
    first, _ = h.start(form(name="held", holdout=0.2))
    assert saved_settings(service, first["value"])["holdout"] == 0.2
    second, _ = h.start(form(name="none"))                                # API callers that omit it: none held out
    saved = saved_settings(service, second["value"])
    assert saved["holdout"] == 0.0
    assert saved["feature_target"] == "dinov2"                            # the paper's target unless asked
    assert saved["student_init"] == "random" and saved["feature_alignment"] is False
    third, _ = h.start(form(name="own", init="", feature_alignment=True, feature_target="init"))
    saved = saved_settings(service, third["value"])
    assert saved["feature_target"] == "init" and saved["feature_alignment"] is True
    assert saved["student_init"] == "dinov2"                               # "" = the paper's DINOv2 start


def test_errors_are_messages_not_tracebacks(h, service, spawned):
    with pytest.raises(gr.Error, match="nothing to train on"):
        h.start(form())
    add_accepted(service.store, 0)
    with pytest.raises(gr.Error, match="multiple of 14"):
        h.start(form(input_size=30))
    with pytest.raises(gr.Error, match="outside the allowed import folder"):
        h.start(form(folder="/etc"))
    with pytest.raises(gr.Error, match="JSON object"):
        h.start(["steps", 3])
    with pytest.raises(gr.Error, match="choose a run"):
        h.cancel(None)
    h.start(form(name="busy"))
    with pytest.raises(gr.Error, match="only failed or cancelled"):
        h.resume(1)
    with pytest.raises(gr.Error, match="does not exist"):
        h.cancel(99)


def test_a_crashed_run_is_failed_and_resumes_from_its_checkpoint(h, service, spawned, curated):
    first, _ = h.start(form(name="crashy"))
    run = RunFolder(service.runs_dir / "crashy")                          # the settings file is there already
    run.state.write_bytes(b"saved")                                       # as if a checkpoint was written
    os.killpg(spawned[1].pid, signal.SIGKILL)                             # the process dies (crash, OOM, reboot)
    spawned[1].wait()
    info = wait_status(service, 1, "failed")
    assert "crashed or killed" in info.error
    _job, status, *_rest, cancel, resume, _timer = h.poll(1)
    assert "Press **Resume**" in status and resume["interactive"] and not cancel["interactive"]
    new, _status, choice, _ = h.resume(1)                                 # nothing saved to compare: resumes
    assert service.status(new["value"]).argv == service.status(1).argv + ["--resume"] and not choice["visible"]


def test_poll_shows_curves_log_and_metrics(h, service):
    store = service.store
    job = store.create_job("train", ["train"], params={"run": "r1", "out_dir": "/nonexistent", "gpu": False})
    store.request_cancel(job.id)
    for step, loss in ((1, 3.0), (2, 2.5)):
        store.append_metrics(job.id, step, {"loss": loss, "labelled": loss, "lr": 1e-5})
    _job, status, plot, *_ = h.poll(job.id)
    curves = plot["value"]
    assert sorted(curves["series"].unique()) == ["labelled", "loss"]
    assert curves[curves.series == "loss"][["step", "value"]].values.tolist() == [[1, 3.0], [2, 2.5]]
    assert curves["step"].dtype == "int64" and plot["x_lim"] == [0, 10]  # whole-step ticks: at least 0..10
    assert "**r1** (job 1): **cancelled**" in status


def test_status_text_for_a_running_run():
    record = Job(4, "train", "running", [], {"run": "s"}, 1, 30, 120, None,
                 {"loss": 0.25, "images_per_s": 3.5, "eta_s": 95}, {}, None, "t", "", "", None, None)
    info = jobs.JobInfo(record, "running", None, [], 0.5, 180.0)
    assert status_markdown(info) == ("**s** (job 4): **running** · step 30/120 · loss 0.2500 · 3.50 images/s · "
                                     "0.50 steps/s · ETA 1 min 35 s")


def test_compare_handler_fills_table_gallery_and_protocol(h, service, vitt_service):
    key = vitt_service.default_key
    for s in range(3):
        add_accepted(service.store, s)
    table, gallery, summary = h.compare(key, key, 1.0, 2, 42)
    assert len(table) == 0 and gallery == [] and summary.startswith("**Nothing independent to score against.**")
    assert "3 image(s): only a model's label" in summary
    for s in range(3, 6):
        add_with_ground_truth(service.store, s)
    table, gallery, summary = h.compare(key, key, 1.0, 2, 42)
    assert list(table.columns) == COMPARE_HEADERS and len(table) == 2 == len(gallery)
    assert np.allclose(table["teacher AbsRel"], table["student AbsRel"])     # the same model twice
    assert set(table["evidence"]) == {"ground truth"} and table["row prior AbsRel"].notna().all()
    assert "Scored 2 of 6 held-out image(s) against ground truth (2)" in summary and "disparity space" in summary
    assert "1 image(s) with evidence beyond max images" in summary and "3 image(s): only a model's label" in summary
    assert "constant AbsRel" in summary and "row prior AbsRel" in summary and "failed alignments" in summary
    assert all(os.path.isfile(path) for path, _caption in gallery)
    with pytest.raises(gr.Error, match="max images"):
        h.compare(key, key, 1.0, 500, 42)


def test_an_empty_curve_frame_is_typed_like_a_full_one():
    """The plot's axis types come from the first frame it is shown: an empty frame with object columns
    left the step axis discrete and the curve undrawn once the poll filled it."""
    from studio.train_handlers import curves_frame
    empty, full = curves_frame([]), curves_frame([{"step": 3, "value": 0.5, "series": "loss"}])
    assert empty.dtypes.to_dict() == full.dtypes.to_dict()
    assert str(empty.dtypes["step"]) == "int64" and str(empty.dtypes["value"]) == "float64"
