"""Metric fine-tuning (issue 14): the CLI run on a folder of metric ground truth, its checkpoint predicting
metres (CLI predict, the studio's model list), `evaluate` reporting the metric protocol without alignment;
where the metric student's weights come from; SiLog per image; metric labels from the store."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from train_helpers import one_thread, quiet, scenes_dir_fixture, tiny_config  # noqa: F401

from pipeline.config import ModelConfig
from pipeline.errors import ConfigError
from pipeline.model import DepthAnything
from pipeline.train import losses
from pipeline.train.metric_student import build_metric_student
from pipeline.train.run_folder import RunFolder
from pipeline.train.train_config import TrainConfig
from pipeline.weights.loading import load_model, save_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")
MAX_DEPTH = 20.0


def tiny_checkpoint(path, *, metric: bool, seed: int = 0):
    torch.manual_seed(seed)
    model = DepthAnything(ModelConfig("vitt", metric=metric, max_depth=MAX_DEPTH if metric else 20.0))
    return save_checkpoint(model, path, model_id=path.stem)


def test_the_cli_fine_tunes_a_metric_model_that_predicts_metres_and_evaluates_without_alignment(
        tmp_path, scenes_dir, capsys):
    from pipeline.cli import main
    from pipeline.services.depth_models import store_choices
    from pipeline.services.depth_service import DepthService
    from pipeline.settings import StudioSettings
    from pipeline.store import Store
    init = tiny_checkpoint(tmp_path / "metric_init.safetensors", metric=True)
    db = tmp_path / "studio.db"
    Store(db)
    out = tmp_path / "run"
    assert main(["train", "--data", str(scenes_dir), "--gt-kind", "depth", "--metric", "--max-depth", str(MAX_DEPTH),
                 "--init", str(init), "--encoder", "vitt", "--steps", "2", "--batch-size", "2", "--input-size", "28",
                 "--device", "cpu", "--out", str(out), "--db", str(db), "--no-feature-alignment"]) == 0
    run = RunFolder(out)
    saved = run.read_config()
    assert (saved["metric"], saved["max_depth"], saved["decay"], saved["weight_decay"]) == (True, 20.0, "poly", 0.01)
    loaded = load_model(run.final)
    assert loaded.config.metric and loaded.config.max_depth == MAX_DEPTH
    assert "metric model" in loaded.meta["init"]
    rows = [json.loads(line) for line in run.metrics.read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2] and all(np.isfinite(r["silog"]) and r["silog"] > 0 for r in rows)

    capsys.readouterr()
    pred_dir = tmp_path / "pred"
    image = scenes_dir / "scene_000.png"
    assert main(["predict", str(image), "--checkpoint", str(run.final), "--out", str(pred_dir), "--device", "cpu",
                 "--input-size", "28"]) == 0
    assert "metric_depth (m)" in capsys.readouterr().err
    metres = np.load(pred_dir / "scene_000.npy")
    assert metres.shape == (48, 48) and metres.min() > 0 and metres.max() <= MAX_DEPTH

    report_file = tmp_path / "eval.json"
    assert main(["evaluate", "--checkpoint", str(run.final), "--data", str(scenes_dir), "--input-size", "28",
                 "--device", "cpu", "--out", str(report_file), "--quiet"]) == 0
    report = json.loads(report_file.read_text())
    protocol = report["protocol"]
    assert protocol["alignment"] == {"depth": "none: metric depth evaluated as predicted"}
    assert protocol["metric"]["depth_range_m"] == [0.001, MAX_DEPTH]           # the model's max depth by default
    first = report["images"][0]
    assert first["scale"] is None and set(first["metric"]) >= {"abs_rel", "rmse", "log10", "silog", "d1", "d2", "d3"}
    summary = report["summary"]["metric"]
    assert summary["images"] == 8 and set(summary["baselines"]) == {"constant", "row_prior"}
    assert "metric depth, no alignment" in capsys.readouterr().out

    choice = store_choices(db)()[0]                        # the run registered itself, as metric
    assert choice.config.metric and choice.config.max_depth == MAX_DEPTH
    depth = DepthService(StudioSettings(data_dir=tmp_path / "data", device="cpu"), sources=[store_choices(db)],
                         default=choice.key)
    from PIL import Image
    prediction = depth.infer(np.asarray(Image.open(image)), choice.key, 28)
    assert prediction.kind == "metric_depth" and prediction.unit == "m"


def test_a_metric_student_takes_a_relative_checkpoints_encoder_only(tmp_path, scenes_dir):
    relative = tiny_checkpoint(tmp_path / "relative.safetensors", metric=False, seed=1)
    cfg = tiny_config(tmp_path / "run", scenes_dir, metric=True, init=str(relative))
    student, note = build_metric_student(cfg)
    source = load_model(relative).model
    assert student.config.metric and student.config.max_depth == MAX_DEPTH and "encoder of the relative" in note
    for k, v in source.encoder.state_dict().items():
        assert torch.equal(student.encoder.state_dict()[k], v)
    head, new = source.depth_head.state_dict(), student.depth_head.state_dict()
    assert any(not torch.equal(head[k], new[k]) for k in head)                 # a new metric decoder


def test_a_metric_student_takes_all_of_a_metric_checkpoint(tmp_path, scenes_dir):
    metric = tiny_checkpoint(tmp_path / "metric.safetensors", metric=True, seed=2)
    student, note = build_metric_student(tiny_config(tmp_path / "run", scenes_dir, metric=True, init=str(metric)))
    want = load_model(metric).model.state_dict()
    assert all(torch.equal(student.state_dict()[k], v) for k, v in want.items()) and "metric model" in note
    student, note = build_metric_student(tiny_config(tmp_path / "run", scenes_dir, metric=True, init=str(metric),
                                                     max_depth=80.0))
    assert student.config.max_depth == 80.0 and "trained for 20 m" in note


def test_silog_per_image_is_the_official_pooled_loss_on_one_image_and_the_mean_over_several():
    torch.manual_seed(0)
    target = torch.rand(3, 8, 8) * 10 + 0.5
    pred = target * torch.exp(torch.randn(3, 8, 8) * 0.2)
    mask = torch.rand(3, 8, 8) > 0.2
    mask[2] = False                                                           # nothing valid: 0, not counted
    values, has = losses.silog_per_sample(pred, target, mask, max_depth=20.0)
    for i in range(2):
        assert values[i] == pytest.approx(losses.silog_loss(pred[i:i + 1], target[i:i + 1], mask[i:i + 1],
                                                            max_depth=20.0).item(), rel=1e-6)
    assert has.tolist() == [True, True, False] and values[2] == 0
    far = target.clone()
    far[0, 0, 0] = 25.0                                                       # beyond max depth: not used
    keep = mask.clone()
    keep[0, 0, 0] = False
    assert losses.silog_per_sample(pred, far, mask, max_depth=20.0)[0][0] == pytest.approx(
        losses.silog_per_sample(pred, target, keep, max_depth=20.0)[0][0].item())


@pytest.mark.parametrize("changes, words", [
    (dict(gt_kind="disparity"), "ground truth in metres"),
    (dict(teacher="t.pth", unlabelled_dir="u"), "metric ground truth only"),
    (dict(min_depth=30.0), "below max_depth"),
    (dict(version="v1"), "only for version v2"),
])
def test_metric_settings_that_cannot_work_are_refused(tmp_path, changes, words):
    with pytest.raises(ConfigError, match=words):
        TrainConfig(data_dir="x", metric=True, **changes)


def test_store_labels_in_metres_train_a_metric_run_and_others_do_not(tmp_path):
    import io

    from PIL import Image

    from pipeline.store import Store
    from pipeline.train.store_source import store_items
    store = Store(tmp_path / "s.db")
    ids = []
    for i, kind in enumerate(("metric_depth", "disparity")):
        buf = io.BytesIO()
        Image.fromarray(np.full((8, 8, 3), 40 * i, np.uint8)).save(buf, format="PNG")
        rec, _ = store.add_image(buf.getvalue(), f"im{i}.png", width=8, height=8)
        store.add_prediction(rec.id, "metric-teacher" if i == 0 else "teacher", kind,
                             np.full((8, 8), 3.0 + i, np.float32))
        store.set_status(rec.id, "accepted", author="ann")
        ids.append(rec.id)
    sky = np.zeros((8, 8), bool)
    sky[:2] = True
    store.save_revision(ids[0], np.full((8, 8), 3.0, np.float32), tool="sky", author="ann", masks={"sky": sky},
                        kind="metric_depth", expected_head=store.head(ids[0]).id)
    (item,) = store_items(store.path, metric=True)
    assert item.image_id == str(ids[0]) and item.pool == "labelled"
    sample = item.load()
    assert float(sample.label[5, 5]) == pytest.approx(3.0)                   # metres, not normalised disparity
    assert not bool(sample.mask[:2].any()) and bool(sample.mask[2:].all())  # a sky has no finite depth
    assert {it.image_id for it in store_items(store.path)} == {str(i) for i in ids}
