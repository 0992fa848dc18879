"""TrainingService on a tmp store: form -> settings file -> train command, held-out split, teacher vs student
scores equal to pipeline.evaluation.protocol on the same arrays, loss curves across resumes, checkpoint
registration, and (slow) a real tiny vitt run started, cancelled, resumed and finished as jobs."""
from __future__ import annotations

import argparse
import io
import json
import time

import numpy as np
import pytest
from PIL import Image
from train_data import (  # on sys.path (pytest)
    H,
    W,
    add_accepted,
    add_with_ground_truth,
    fake_job,
    finished_run,
    ground_truth,
    label,
    png,
)

from pipeline.errors import ConfigError
from pipeline.evaluation import holdout as hc
from pipeline.evaluation import protocol as ev
from pipeline.jobs import manager as jobs
from pipeline.services.training_service import TrainingService, TrainingServiceError
from pipeline.store import Store
from pipeline.train.run_folder import RunFolder


@pytest.fixture
def store(settings):
    return Store(settings.ensure_dirs().database)


@pytest.fixture
def service(store, settings, vitt_service, tmp_path):
    return TrainingService(store, settings, vitt_service, data_root=tmp_path / "root", device="cpu",
                           threads=1, gpus=0)


@pytest.fixture
def pairs_folder(tmp_path):
    """image / depth pairs under the allowed root (the train command's folder layout)."""
    folder = tmp_path / "root" / "pairs"
    folder.mkdir(parents=True)
    for i in range(3):
        Image.open(io.BytesIO(png(10 + i))).save(folder / f"p{i}.png")
        np.save(folder / f"p{i}.npy", (1.0 / label(i)).astype(np.float32))
    return folder


def parse_train(argv: list[str]):
    from pipeline.cli import train as train_cli
    p = argparse.ArgumentParser()
    train_cli.add_arguments(p)
    return train_cli.config_from_args(p.parse_args(argv))


# ---------------------------------------------------------------------------- the form
def test_form_becomes_the_same_config_through_the_train_command(service, pairs_folder, vitt_service):
    form = dict(name="s1", init=vitt_service.default_key, encoder="vitt", steps=7, batch_size=3,
                lr_encoder=2e-5, decoder_lr_mult=5, labelled_ratio="2:1", input_size=42, feature_alignment=False,
                folder="pairs", gt_kind="depth", save_every=3, holdout=0.3)
    cfg = service.train_config(form)
    assert cfg.holdout == 0.3
    assert cfg.out_dir == str(service.runs_dir / "s1") and cfg.data_dir == str(pairs_folder.resolve())
    assert cfg.init == str(vitt_service.choice(vitt_service.default_key).source)
    assert (cfg.lr_encoder, cfg.lr_decoder, cfg.labelled_ratio, cfg.feature_alignment) == (2e-5, 1e-4, (2, 1), False)
    assert (cfg.student_init, cfg.feature_target) == ("checkpoint", "dinov2")      # a fine-tune, the paper's target
    config_file = RunFolder(cfg.out_dir).write_config(cfg.to_dict())        # what the job reads
    assert parse_train(["--config", str(config_file), "--db", str(service.db_path)]) == cfg
    assert service.command_line(config_file) == f"python -m pipeline train --config {config_file} --db {service.db_path}"


@pytest.fixture
def sleepers(sleeping_jobs):
    """Jobs start a detached `sleep` instead of the real command (tests/conftest.py)."""
    return sleeping_jobs


def test_several_gpus_start_runs_through_torchrun_and_resume_keeps_it(store, settings, tmp_path, sleepers):
    add_accepted(store, 0)
    svc = TrainingService(store, settings, None, data_root=tmp_path / "root", device="cuda", gpus=4)
    assert svc.command_line("c.json").startswith("torchrun --nproc-per-node=4 -m pipeline train --config c.json")
    assert "uses all 4" in svc.launch_note()
    job = svc.start(dict(name="m", encoder="vitt"))
    got = store.get_job(job)
    assert got.params["launcher"] == jobs.torchrun(4) and got.params["processes"] == 4
    assert jobs._command(svc.db_path, got)[1:7] == ["-m", "torch.distributed.run", "--standalone",
                                                    "--nproc-per-node=4", "-m", "pipeline"]
    svc.cancel(job)
    wait_until(lambda: svc.status(job).status == "cancelled", timeout=10)
    resumed = store.get_job(svc.resume(job))
    assert resumed.params["launcher"] == jobs.torchrun(4) and resumed.params["resumed_from"] == job
    pinned = TrainingService(store, settings, None, data_root=tmp_path / "root", device="cuda:1", gpus=4)
    assert pinned.launcher() is None and "cuda:1" in pinned.launch_note()
    assert TrainingService(store, settings, None, data_root=tmp_path / "root", gpus=1).launcher() is None


@pytest.mark.parametrize("form, error, words", [
    (dict(folder="../elsewhere"), TrainingServiceError, "outside"),
    (dict(folder="missing"), TrainingServiceError, "not a folder"),
    (dict(labelled_ratio="one to two"), ConfigError, "1:2"),
    (dict(input_size=100), ConfigError, "multiple of 14"),
    (dict(steps="many"), ConfigError, "steps must be a whole number"),
    (dict(name="bad name!"), ConfigError, "letters"),
    (dict(encoder="vitb", init="tiny_vitt"), ConfigError, "vitt encoder"),
    (dict(out_dir="/tmp/elsewhere"), ConfigError, "set by the studio"),
    (dict(no_such_setting=1), ConfigError, "unknown training settings"),
])
def test_form_errors_name_the_value(service, vitt_service, tmp_path, form, error, words):
    (tmp_path / "elsewhere").mkdir()
    if form.get("init"):
        form = dict(encoder=form["encoder"], init=vitt_service.default_key)
    with pytest.raises(error, match=words):
        service.train_config({"init": "random", **form})


def test_nothing_to_train_on_is_refused_before_a_job_starts(service):
    with pytest.raises(TrainingServiceError, match="nothing to train on"):
        service.start(dict(encoder="vitt"))
    assert service.runs() == []


def test_runs_need_images_outside_the_held_out_share(service, store):
    add_accepted(store, 0)
    with pytest.raises(TrainingServiceError, match="lower the held-out share"):
        service.start(dict(encoder="vitt", holdout=0.999999))
    assert service.runs() == []


def test_run_names_are_unique(service):
    (service.runs_dir / "taken").mkdir(parents=True)
    with pytest.raises(ConfigError, match="already exists"):
        service.train_config(dict(name="taken", encoder="vitt"))


# ---------------------------------------------------------------------------- held-out split
def test_holdout_split_is_by_image_hash(store):
    ids = [add_with_ground_truth(store, s) if s % 2 else add_accepted(store, s) for s in range(12)]
    shas = {i: store.get_image(i).sha256 for i in ids}
    for fraction in (0.25, 0.5, 1.0):
        expected = [i for i in ids if int(shas[i][:16], 16) / 2**64 < fraction]
        items, skipped = hc.evidence_items(store, fraction)
        assert sorted([it.image_id for it in items] + [int(s["name"][1:]) for s in skipped]) == expected
        assert [it.image_id for it in items] == [i for i in expected if i % 2 == 0]   # ids 2, 4, .. have GT
    small = {it.image_id for it in hc.store_items(store, 0.25)}
    assert small <= {it.image_id for it in hc.store_items(store, 0.5)}         # nested: growing the share adds
    assert len(hc.store_items(store, 1.0)) == 6
    with pytest.raises(ConfigError, match="held-out share"):
        hc.store_items(store, 0)


def test_compare_scores_equal_pipeline_evaluation(service, store, vitt_service, tmp_path):
    import torch

    from pipeline.config import ModelConfig
    from pipeline.predictor import Predictor
    from pipeline.weights.loading import save_checkpoint, untrained_model
    torch.manual_seed(1)
    other = save_checkpoint(untrained_model(ModelConfig(encoder="vitt")).model, tmp_path / "other.safetensors")
    student = vitt_service.add_checkpoint(str(other))
    ids = [add_with_ground_truth(store, s) for s in range(3)]
    res = service.compare(vitt_service.default_key, student, fraction=1.0, max_images=2, input_size=42)
    assert res.held_out == 3 and len(res.rows) == 2 == len(res.panels) and res.evidence == {"ground truth": 2}
    for row, (seed, image_id) in zip(res.rows, enumerate(ids[:2]), strict=True):
        rgb = np.asarray(Image.open(store.get_image(image_id).path).convert("RGB"))
        gt = ground_truth(seed)                                 # the imported GT, not the teacher's label
        protocol = ev.Protocol(gt_kind="disparity", depth_cap=None, min_depth=0.0)
        for role, source in (("teacher", vitt_service.choice(vitt_service.default_key).source), ("student", other)):
            pred = Predictor.from_checkpoint(source, device="cpu", input_size=42).predict(rgb).array
            want = ev.evaluate_image(pred, "disparity", protocol, gt)
            assert row[f"{role}_abs_rel"] == pytest.approx(want["abs_rel"], rel=1e-6)
            assert row[f"{role}_delta1"] == pytest.approx(want["delta1"], rel=1e-6)
            assert row[f"{role}_scale"] == pytest.approx(want["scale"]) and row[f"{role}_failed"] == want["alignment_failed"]
            assert row["row_prior_abs_rel"] == pytest.approx(want["baselines"]["row_prior"]["abs_rel"])
    for role in ("teacher", "student"):
        ok = [r[f"{role}_abs_rel"] for r in res.rows if not r[f"{role}_failed"]]
        assert res.summary[role]["abs_rel"] == (pytest.approx(np.mean(ok)) if ok else None)
        assert res.summary[role]["images_failed"] == sum(r[f"{role}_failed"] for r in res.rows)
    assert res.rows[0]["teacher_abs_rel"] != res.rows[0]["student_abs_rel"]      # two different networks
    panel = Image.open(res.panels[0][0])
    assert panel.height == hc.PANEL_HEIGHT and panel.width == 4 * round(W * hc.PANEL_HEIGHT / H) + 3 * 4
    assert "disparity space" in json.dumps(res.protocol)


def test_compare_does_not_flag_images_the_student_run_held_out(service, store, vitt_service, tmp_path):
    import torch

    from pipeline.train.recipe import train
    from pipeline.train.train_config import TrainConfig
    torch.set_num_threads(1)
    ids = [add_with_ground_truth(store, s) for s in range(8)]
    held = [i for i in ids if hc.in_holdout(store.get_image(i).sha256, 0.5)]
    assert held and len(held) < len(ids)
    keys = {}
    for name, share in (("held", 0.5), ("all", 0.0)):
        cfg = TrainConfig(db=str(store.path), out_dir=str(tmp_path / name), encoder="vitt", steps=1, batch_size=2,
                          input_size=28, device="cpu", feature_alignment=False, student_init="random", holdout=share)
        final = train(cfg, log=lambda *_: None).checkpoint                  # the file name is the picker key
        keys[name] = vitt_service.add_checkpoint(str(final.rename(final.with_name(f"{name}.safetensors"))))
    rows = service.compare(vitt_service.default_key, keys["held"], fraction=0.5, max_images=8, input_size=28).rows
    assert len(rows) == len(held) and not any("training data" in r["label"] for r in rows)
    rows = service.compare(vitt_service.default_key, keys["all"], fraction=0.5, max_images=8, input_size=28).rows
    assert len(rows) == len(held) and all("in the student's training data" in r["label"] for r in rows)


def test_a_store_of_teacher_labels_has_nothing_independent_to_score(service, store, vitt_service, tmp_path):
    """The teacher's accepted pseudo-labels are not evidence: no number, a message, the reason per image."""
    key = vitt_service.default_key
    empty = service.compare(key, key, fraction=0.5)
    assert not empty.scored and empty.message == hc.NOTHING and "raise the held-out share" in empty.skipped[0]
    ids = [add_accepted(store, s) for s in range(4)]
    res = service.compare(key, key, fraction=1.0)
    assert (res.rows, res.summary, res.held_out, res.message) == ([], {}, 4, "nothing independent to score against")
    assert res.skipped == [f"4 image(s): only a model's label (model:teacher): a pseudo-label is not ground truth "
                           f"(e.g. {', '.join(f'#{i}' for i in ids)})"]
    store.add_ground_truth(ids[2], ground_truth(2), kind="disparity", source="stereo", author="ann")
    res = service.compare(key, key, fraction=1.0, input_size=28)
    assert [r["image"] for r in res.rows] == [f"img2.png (#{ids[2]})"] and res.evidence == {"ground truth": 1}
    assert res.rows[0]["label"] == "ground truth: stereo (disparity)"
    assert res.skipped[0].startswith("3 image(s): only a model's label")


def test_the_checkpoint_figure_names_what_it_was_measured_against(store, settings, vitt_checkpoint, tmp_path):
    import shutil

    from pipeline.services.depth_models import store_choices
    from pipeline.services.depth_service import DepthService
    depth = DepthService(settings, sources=[store_choices(store.path)], default=str(vitt_checkpoint))
    service = TrainingService(store, settings, depth, data_root=tmp_path / "root", device="cpu", threads=1, gpus=0)
    run = service.runs_dir / "stud"
    run.mkdir(parents=True)
    shutil.copy(vitt_checkpoint, RunFolder(run).final)
    ckpt = store.register_checkpoint(str(RunFolder(run).final), "stud", {"encoder": "vitt"},
                                     metrics={"holdout_abs_rel": 4.7e-15})             # an old circular figure
    assert service.checkpoints()[0]["abs_rel"] is None                                 # not shown
    for s in range(3):
        add_with_ground_truth(store, s)
    res = service.compare(depth.default_key, f"trained:{ckpt.id}", fraction=1.0, input_size=28)
    e = store.get_checkpoint(ckpt.id).metrics["evaluation"]
    s = res.summary["student"]
    assert (e["abs_rel"], e["images"], e["failed_alignments"]) == (s["abs_rel"], s["images_scored"], s["images_failed"])
    assert e["against"] == "ground truth: 3 image(s) (independent of both models)"
    assert e["beats_baselines"] == s["verdict"]["beats_baselines"] and "disparity space" in e["protocol"]
    assert store.get_checkpoint(ckpt.id).metrics["holdout_abs_rel"] is None
    row = service.checkpoints()[0]
    assert row["against"] == e["against"] and row["abs_rel"] == e["abs_rel"]


def test_motorcycle_sample_uses_true_depth(service, vitt_service):
    res = service.compare(vitt_service.default_key, vitt_service.default_key, sample=True, input_size=42)
    assert len(res.rows) == 1 and res.rows[0]["valid_pixels"] > 300_000
    assert res.rows[0]["teacher_abs_rel"] == res.rows[0]["student_abs_rel"]   # the same model twice
    assert res.protocol["labels"][0]["depth_cap"] == 10.0


# ---------------------------------------------------------------------------- curves, checkpoints
def test_curves_follow_a_resumed_run(service, store, tmp_path):
    a = fake_job(store, tmp_path / "r", metrics=[(1, {"loss": 5.0, "lr": 1e-5}), (2, {"loss": 4.0}),
                                                 (3, {"loss": 3.5})])
    b = fake_job(store, tmp_path / "r", resumed_from=a, metrics=[(3, {"loss": 3.0}), (4, {"loss": 2.0})])
    curve = [(p["step"], p["value"]) for p in service.curves(b) if p["series"] == "loss"]
    assert curve == [(1, 5.0), (2, 4.0), (3, 3.0), (4, 2.0)]           # the resumed job's step 3 wins
    assert all(p["series"] != "lr" for p in service.curves(b))
    RunFolder(tmp_path / "r").path.mkdir()
    RunFolder(tmp_path / "r").metrics.write_text('{"step": 5, "loss": 1.5, "lr": 1e-6}\n{"step": 6, "lo')
    assert service.curves(b)[-1] == {"step": 5, "value": 1.5, "series": "loss"}   # half-written line skipped


def test_a_run_that_finished_while_the_studio_was_down_is_registered_once_at_start(service, store, tmp_path):
    from pipeline.services.depth_models import store_choices
    run = finished_run(service.runs_dir / "stud", metric=True)
    job = fake_job(store, run.path)
    assert store.list_checkpoints() == [] and service.checkpoints() == []         # reading registers nothing
    assert service.startup() == [1] and service.startup() == []                   # once
    (row,) = service.checkpoints()
    assert (row["model"], row["encoder"], row["job"], row["step"], row["loss"]) == ("stud", "vitt", job, 5, 0.25)
    assert (row["metric"], row["max_depth"]) == (True, 20.0)                     # the second writer lost these
    ckpt = store.get_checkpoint(1)
    assert ckpt.metrics == {"step": 5, "last_loss": 0.25, "images": 2, "data_sha256": "ab" * 32}
    assert ckpt.config["train_config"] == {"encoder": "vitt"} and ckpt.note == "random initialisation"
    picker = store_choices(store.path)()
    assert [c.key for c in picker] == ["trained:1"] and picker[0].config.metric and picker[0].config.encoder == "vitt"


# ---------------------------------------------------------------------------- real jobs
def wait_until(pred, timeout=240.0, poll=0.3):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = pred()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError("timed out")


@pytest.mark.slow
def test_real_run_finishes_cancels_and_resumes(service, store, pairs_folder):
    small = dict(encoder="vitt", init="random", batch_size=2, input_size=28, folder="pairs", feature_alignment=False)
    done = service.start(dict(name="tiny", steps=3, save_every=2, **small))
    long = service.start(dict(name="long", steps=400, save_every=1000, **small))
    assert service.status(long).status == "queued"                    # one GPU job at a time
    info = jobs.wait_for(service.db_path, done, timeout=240)
    assert info.status == "done", info.error or info.log_tail
    steps = sorted({p["step"] for p in service.curves(done) if p["series"] == "loss"})
    assert steps == [1, 2, 3]
    assert [r["model"] for r in service.checkpoints()] == ["tiny"]
    wait_until(lambda: service.status(long).done >= 2)
    service.cancel(long)
    cancelled = jobs.wait_for(service.db_path, long, timeout=120)
    assert cancelled.status == "cancelled"
    stopped_at = json.loads(RunFolder(service.runs_dir / "long").metrics.read_text().splitlines()[-1])["step"]
    resumed = service.resume(long)
    assert "--resume" in jobs.job_status(service.db_path, resumed).argv
    wait_until(lambda: service.status(resumed).done > stopped_at)
    service.cancel(resumed)
    jobs.wait_for(service.db_path, resumed, timeout=120)
    curve = [p["step"] for p in service.curves(resumed) if p["series"] == "loss"]
    assert curve == list(range(1, curve[-1] + 1)) and curve[-1] > stopped_at   # one unbroken curve
