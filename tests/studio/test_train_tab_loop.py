"""The train tab as a person walks it (issue 13, traps 1-3): everything is read when the tab is shown, the
default start is fine-tuning the loaded model with one sentence saying what happens (offline too), and
cancel -> fix labels -> resume offers the choice in the page instead of contradictory messages."""
from __future__ import annotations

import numpy as np
import pytest
from train_data import add_accepted, fake_job, finished_run  # on sys.path (pytest)

from pipeline.services import training_form
from pipeline.services.training_service import TrainingService
from pipeline.store import Store
from pipeline.train.errors import ResumeError
from pipeline.train.recipe import train
from pipeline.train.registration import register_run
from pipeline.train.run_folder import RunFolder, step_checkpoint_name
from pipeline.train.train_config import TrainConfig
from studio.train_handlers import TrainHandlers


@pytest.fixture
def vitt_service(settings, vitt_checkpoint):
    """The studio's model list as app.py builds it: the loaded model, then the store's trained models."""
    from pipeline.services.depth_models import store_choices
    from pipeline.services.depth_service import DepthService
    return DepthService(settings, sources=[store_choices(settings.ensure_dirs().database)],
                        default=str(vitt_checkpoint))


@pytest.fixture
def service(settings, vitt_service, tmp_path):
    return TrainingService(Store(settings.ensure_dirs().database), settings, vitt_service,
                           data_root=tmp_path / "root", device="cpu", gpus=0)


@pytest.fixture
def h(service):
    return TrainHandlers(service)


def show(h, key):
    return h.show(key, key, key, "vits")


def test_the_tab_reads_counts_and_models_when_it_is_shown(h, service, vitt_service):
    key = vitt_service.default_key
    note, start, sentence, encoder, metric, max_depth, teacher, student, table = show(h, key)
    assert "**0** accepted, **0** corrected" in note and table.empty
    for seed in range(3):
        add_accepted(service.store, seed)
    run = finished_run(service.runs_dir / "stud")
    register_run(service.store, run.path, job_id=fake_job(service.store, run.path))   # a run that just finished
    note, start, sentence, encoder, metric, max_depth, teacher, student, table = show(h, key)
    assert "**3** accepted, **0** corrected" in note                              # no restart needed
    assert "trained:1" in [k for _, k in teacher["choices"]] and teacher["value"] == key
    assert list(table["model"]) == ["stud"]


def test_the_default_start_is_fine_tuning_the_loaded_model_never_random_weights(h, service, vitt_service):
    key = vitt_service.default_key
    keys = [k for _, k in service.start_choices()]
    assert service.default_start() == key and keys[0] == key and keys[1] == training_form.START_DINOV2
    assert keys[-1] == training_form.START_RANDOM                                  # last, never the default
    _note, start, sentence, encoder, metric, *_ = h.show(None, None, None, "vits")   # nothing chosen yet
    assert start["value"] == key and encoder["value"] == "vitt"                   # the model fixes the encoder
    assert metric == {"__type__": "update"}                                      # a relative model: left as is
    assert sentence.startswith("Fine-tunes tiny_vitt.safetensors") and "file tiny_vitt.safetensors" in sentence
    assert ". " not in sentence and sentence.endswith(".")                       # one sentence
    assert "without DINOv2 weights" in sentence                  # vitt, aligned to DINOv2: says it would stop
    sentence = h.describe(key, "vitt", feature_alignment=False)
    assert sentence.endswith("so it also works offline.")


@pytest.mark.parametrize("cached, words", [(True, "works offline"), (False, "offline, the run stops at its start")])
def test_the_sentence_says_what_happens_offline(h, monkeypatch, cached, words):
    import pipeline.train.student as student
    monkeypatch.setattr(student, "dinov2_cached", lambda encoder: cached)
    sentence = h.describe(training_form.START_DINOV2, "vits")
    assert sentence.startswith("Starts a vits student from DINOv2 encoder weights") and words in sentence
    assert "random weights" in h.describe(training_form.START_RANDOM, "vits")


def stopped_run(service, tmp_path):
    """A store-trained run stopped after one step (as a cancel leaves it), with its (never spawned) job."""
    import torch
    torch.set_num_threads(1)
    for seed in range(3):
        add_accepted(service.store, seed)
    cfg = TrainConfig(db=str(service.db_path), out_dir=str(service.runs_dir / "fix"), encoder="vitt", steps=3,
                      batch_size=2, input_size=28, device="cpu", feature_alignment=False, student_init="random",
                      save_every=100)
    assert train(cfg, should_stop=lambda step: step >= 1, log=lambda *_: None).status == "stopped"
    config_file = RunFolder(cfg.out_dir).config
    job = service.store.create_job("train", ["train", "--config", str(config_file)],
                                   params={"run": "fix", "out_dir": cfg.out_dir, "gpu": True})
    service.store.request_cancel(job.id)
    return cfg, job.id


def test_cancel_fix_labels_resume_offers_the_choice_in_the_page(h, service, tmp_path, sleeping_jobs):
    cfg, job = stopped_run(service, tmp_path)
    new, status, choice, text = h.resume(job)                                   # nothing changed: it resumes
    assert choice["visible"] is False and service.status(new["value"]).argv[-1] == "--resume"
    service.store.request_cancel(new["value"])
    first = service.store.training_items()[0]                                    # a person fixes a label
    service.store.save_revision(first.image_id, np.full((28, 36), 2.0, np.float32), tool="plane", author="ann",
                                expected_head=first.revision_id)
    runs = len(service.runs())
    same, status, choice, text = h.resume(job)
    assert choice["visible"] is True and len(service.runs()) == runs            # nothing started: a choice
    assert "training data changed" in text and "step 1" in text and "--" not in text   # no CLI flag in the page
    keep, _status, hidden = h.resume_keep_data(job)
    assert hidden["visible"] is False
    assert service.status(keep["value"]).argv[-2:] == ["--resume", "--keep-data"]
    fresh, _status, _hidden = h.restart(job)
    info = service.status(fresh["value"])
    settings = RunFolder(info.params["out_dir"]).read_config()
    assert info.params["run"] == "fix-from-step1" and info.params["restarted_from"] == job
    assert (settings["student_init"], settings["init"]) == ("checkpoint", str(RunFolder(cfg.out_dir).file(
        step_checkpoint_name(1))))


def test_keep_data_continues_on_the_snapshot_the_run_started_with(service, tmp_path):
    cfg, _job = stopped_run(service, tmp_path)
    snapshot = RunFolder(cfg.out_dir).read_config()
    first = service.store.training_items()[0]
    service.store.save_revision(first.image_id, np.full((28, 36), 2.0, np.float32), tool="plane", author="ann",
                                expected_head=first.revision_id)
    with pytest.raises(ResumeError, match="--keep-data"):
        train(cfg, resume=True, log=lambda *_: None)
    result = train(TrainConfig.from_dict(snapshot), resume=True, keep_data=True, log=lambda *_: None)
    assert result.status == "finished" and result.step == 3
    from pipeline.weights.loading import load_model
    items = load_model(result.checkpoint).meta["data"]["items"]
    assert first.revision_id in {r["revision_id"] for r in items}               # the old revision, not the fix


def test_a_metric_model_as_the_start_makes_a_metric_run_and_faces_a_relative_one(settings, tmp_path, vitt_checkpoint):
    import torch
    from train_data import add_with_ground_truth

    from pipeline.config import ModelConfig
    from pipeline.errors import ConfigError
    from pipeline.model import DepthAnything
    from pipeline.services.depth_service import DepthService
    from pipeline.weights.loading import save_checkpoint
    torch.manual_seed(3)
    metric_file = save_checkpoint(DepthAnything(ModelConfig("vitt", metric=True, max_depth=20.0)),
                                  tmp_path / "metric_vitt.safetensors")
    depth = DepthService(settings, sources=[], default=str(metric_file))
    relative = depth.add_checkpoint(str(vitt_checkpoint))
    service = TrainingService(Store(settings.ensure_dirs().database), settings, depth, data_root=tmp_path / "root",
                              device="cpu", gpus=0)
    key = depth.default_key
    sentence, encoder, metric, max_depth = TrainHandlers(service).start_changed(key, "vits", False)
    assert (encoder["value"], metric["value"], max_depth["value"]) == ("vitt", True, 20.0)
    assert "Fine-tunes metric_vitt.safetensors" in sentence
    cfg = service.train_config({"init": key, "encoder": "vitt", "metric": True, "name": "m"})
    assert cfg.metric and cfg.student_init == "checkpoint" and cfg.decay == "poly"
    with pytest.raises(ConfigError, match="tick 'metric depth'"):
        service.train_config({"init": key, "encoder": "vitt", "name": "m"})
    assert "its encoder, a new metric decoder" in service.describe_start(relative, "vitt", metric=True)
    for seed in range(2):                                  # disparity ground truth: known up to scale and shift
        add_with_ground_truth(service.store, seed)
    res = service.compare(relative, key, fraction=1.0, input_size=28)
    assert len(res.rows) == 2 and all(r["student_scale"] is not None for r in res.rows)   # 1/metres, aligned
