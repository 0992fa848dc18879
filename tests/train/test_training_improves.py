"""Proof that training works: held-out AbsRel (pipeline.evaluation's protocol) improves, and
corrected labels in the store teach the student better than the uncorrected pseudo-labels.

Data: procedural scenes with exact depth (pipeline.train.synthetic): floor, back wall, boxes,
checker textures in world units, fog. Model: the tiny `vitt` encoder, random initialisation, CPU.
"""
from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image
from train_helpers import one_thread, quiet  # noqa: F401

from pipeline.checkpoints import load_model
from pipeline.evaluation import align_disparity, depth_metrics
from pipeline.preprocess import normalize, resize_input, to_tensor
from pipeline.train.recipe import train
from pipeline.train.student import build_student
from pipeline.train.synthetic import make_scenes, write_scenes
from pipeline.train.train_config import TrainConfig

pytestmark = pytest.mark.usefixtures("one_thread")
DEPTH_CAP = 80.0


def held_out_abs_rel(model, scenes, size: int) -> float:
    """Mean AbsRel over scenes: predict at size x size, resize back, align in disparity space."""
    model.eval()
    scores = []
    with torch.no_grad():
        for rgb, depth in scenes:
            pred = model(normalize(resize_input(to_tensor(rgb), (size, size))))                 # (1, S, S)
            pred = torch.nn.functional.interpolate(pred[:, None], size=depth.shape, mode="bilinear",
                                                   align_corners=True)[0, 0].numpy()
            valid = np.isfinite(depth) & (depth > 0)
            aligned, _, _ = align_disparity(pred, depth.astype(np.float64), valid, DEPTH_CAP)
            scores.append(depth_metrics(aligned, depth, valid)["abs_rel"])
    return float(np.mean(scores))


def _config(out, size, steps, *, decay="constant", lr=2e-4, **kw) -> TrainConfig:
    return TrainConfig(out_dir=str(out), encoder="vitt", steps=steps, batch_size=4, input_size=size,
                       lr_encoder=lr, decay=decay, save_every=10_000, device="cpu", seed=0, **kw)


def _improves(tmp_path, size: int, steps: int, n_train: int, **kw) -> tuple[float, float, list[float]]:
    data = write_scenes(tmp_path / "train", n_train, seed=10, height=48, width=48)
    held = make_scenes(8, seed=99, height=48, width=48)
    cfg = _config(tmp_path / "run", size, steps, data_dir=str(data), **kw)
    torch.manual_seed(cfg.seed)                                               # the recipe's initial weights
    before = held_out_abs_rel(build_student(cfg)[0], held, size)
    result = train(cfg, log=quiet)
    after = held_out_abs_rel(load_model(result.checkpoint).model, held, size)
    return before, after, result.losses


def test_a_short_run_lowers_the_loss_and_held_out_abs_rel(tmp_path):
    before, after, losses = _improves(tmp_path, size=42, steps=40, n_train=12)
    assert np.mean(losses[-10:]) < 0.6 * np.mean(losses[:5]), losses
    assert after < 0.7 * before, (before, after)                               # ~0.34 -> ~0.15


@pytest.mark.slow
def test_a_few_hundred_steps_at_56px_improve_held_out_abs_rel_a_lot(tmp_path):
    before, after, losses = _improves(tmp_path, size=56, steps=300, n_train=24, decay="linear", lr=1e-4)
    assert np.mean(losses[-20:]) < 0.4 * np.mean(losses[:5]), losses          # ~12 -> ~3
    assert after < 0.55 * before, (before, after)                              # ~0.35 -> ~0.16


# ----------------------------------------------------------------------------- corrections in the store

def _png(rgb: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return buf.getvalue()


def _store_with_labels(db_path, scenes, wrong: set[int], correct_them: bool):
    """Pseudo-labels (disparity) for every scene; those in `wrong` are a teacher's mistake (upside
    down: floor far, wall near; no scale and shift can fix that). With `correct_them`, a person
    fixes those in a corrected revision."""
    from pipeline.store import Store

    store = Store(db_path)
    for i, (rgb, depth) in enumerate(scenes):
        rec, _ = store.add_image(_png(rgb), f"scene_{i}.png", width=rgb.shape[1], height=rgb.shape[0])
        disparity = (1.0 / depth).astype(np.float32)
        pseudo = np.ascontiguousarray(disparity[::-1]) if i in wrong else disparity
        store.add_prediction(rec.id, "teacher", "disparity", pseudo, make_label=True)
        if i in wrong and correct_them:
            store.save_revision(rec.id, disparity, expected_head=store.head(rec.id).id, tool="import",
                                author="tester")                             # status -> corrected
        else:
            store.set_status(rec.id, "accepted", author="tester")
    return store


def test_corrected_labels_beat_uncorrected_ones_on_ground_truth(tmp_path):
    scenes = make_scenes(12, seed=10, height=48, width=48)
    held = make_scenes(8, seed=99, height=48, width=48)
    wrong = set(range(0, 12, 3)) | set(range(1, 12, 3))                        # 8 of 12 pseudo-labels wrong
    scores = {}
    for name, fixed in (("uncorrected", False), ("corrected", True)):
        db = tmp_path / name / "studio.db"
        db.parent.mkdir()
        store = _store_with_labels(db, scenes, wrong, fixed)
        statuses = {r.status for r in store.training_items()}
        assert statuses == ({"accepted", "corrected"} if fixed else {"accepted"})
        result = train(_config(tmp_path / name / "run", 42, 40, db=str(db), feature_weight=0.0), log=quiet)
        scores[name] = held_out_abs_rel(load_model(result.checkpoint).model, held, 42)
        registered = store.list_checkpoints()[0]                               # in the model picker
        assert registered.path == str(result.checkpoint.resolve())
    assert scores["corrected"] < 0.75 * scores["uncorrected"], scores          # ~0.22 vs ~0.36
