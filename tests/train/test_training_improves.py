"""Proof that the supervised training path learns in a synthetic world, and that corrected labels in
the store teach a student the right depth order where uncorrected pseudo-labels do not.

Data: procedural scenes with exact depth (pipeline.train.synthetic): floor, back wall, boxes,
checker textures in world units, fog. Model: the tiny `vitt` encoder, random initialisation, CPU.
Scored with pipeline.evaluation.protocol's protocol, sign check included: a prediction whose fitted scale
is <= 0 (reversed depth order) is a failed alignment, never a good score. These scenes stand on a
floor, so the image-row prior alone scores AbsRel ~0.34 on them: a student has to beat that.
This is a synthetic world; evidence on real images is benchmarks/bench_self_training.py.
"""
from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image
from train_helpers import one_thread, quiet  # noqa: F401

from pipeline.evaluation import protocol as ev
from pipeline.preprocess import imagenet_normalize, resize_input, to_tensor
from pipeline.train.recipe import train
from pipeline.train.synthetic import make_scenes, write_scenes
from pipeline.train.train_config import TrainConfig
from pipeline.weights.loading import load_model

pytestmark = pytest.mark.usefixtures("one_thread")
PROTOCOL = ev.Protocol(gt_kind="depth", depth_cap=80.0)


def held_out(model, scenes, size: int) -> dict:
    """pipeline.evaluation.protocol summary over scenes: predict at size x size, resize back, score."""
    model.eval()
    records = []
    with torch.no_grad():
        for rgb, depth in scenes:
            pred = model(imagenet_normalize(resize_input(to_tensor(rgb), (size, size))))                 # (1, S, S)
            pred = torch.nn.functional.interpolate(pred[:, None], size=depth.shape, mode="bilinear",
                                                   align_corners=True)[0, 0].numpy()
            records.append(ev.evaluate_image(pred, "disparity", PROTOCOL, depth))
    return ev.summarize(records)


def _config(out, size, steps, *, decay="constant", lr=2e-4, **kw) -> TrainConfig:
    return TrainConfig(out_dir=str(out), encoder="vitt", steps=steps, batch_size=4, input_size=size,
                       lr_encoder=lr, decay=decay, save_every=10_000, device="cpu", seed=0, student_init="random",
                       feature_target="init", **kw)


def _learns(tmp_path, size: int, steps: int, n_train: int, **kw) -> tuple[dict, list[float]]:
    data = write_scenes(tmp_path / "train", n_train, seed=10, height=48, width=48)
    held = make_scenes(8, seed=99, height=48, width=48)
    result = train(_config(tmp_path / "run", size, steps, data_dir=str(data), **kw), log=quiet)
    return held_out(load_model(result.checkpoint).model, held, size), result.losses


def test_a_short_supervised_run_lowers_the_loss_and_beats_the_row_prior(tmp_path):
    after, losses = _learns(tmp_path, size=42, steps=40, n_train=12)
    assert np.mean(losses[-10:]) < 0.6 * np.mean(losses[:5]), losses
    assert after["images_failed"] == 0, after["failed_images"]                 # every held-out order right
    prior = after["baselines"]["row_prior"]["abs_rel"]                          # ~0.34
    assert after["abs_rel"] < 0.7 * prior and after["verdict"]["beats_baselines"], after    # ~0.15


@pytest.mark.slow
def test_supervised_training_learns_the_synthetic_world(tmp_path):
    """The supervised path (labelled folder, no pseudo-labels) learns these scenes: a few hundred
    steps at 56 px take held-out AbsRel from the row prior's ~0.34 to ~0.16, every image aligned
    with a positive scale. It proves the training code learns; it says nothing about real images."""
    after, losses = _learns(tmp_path, size=56, steps=300, n_train=24, decay="linear", lr=1e-4)
    assert np.mean(losses[-20:]) < 0.4 * np.mean(losses[:5]), losses
    assert after["images_failed"] == 0, after["failed_images"]
    assert after["abs_rel"] < 0.55 * after["baselines"]["row_prior"]["abs_rel"], after


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


SEEDS = (0, 1, 2, 3, 4, 5)


def test_corrected_labels_beat_uncorrected_ones_on_ground_truth(tmp_path):
    """8 of 12 pseudo-labels are upside down. Corrected by a person in the store, more students learn
    the right depth order and beat both baselines on held-out ground truth than uncorrected, and each
    such student beats the uncorrected student of the same seed on AbsRel.

    Why six seeds and counts: at this size (12 images, 40 steps, random init) one run is a lottery. A
    run can fall into a trap where the output ReLU clips about half of the pixels to 0 and the rest
    order depth backwards, with correct labels too, and now and then the uncorrected labels' four
    right ones win. Measured on this project's Intel dev box over seeds 0-7: corrected 5-6 of 8 learn
    (AbsRel 0.12-0.22 against the row prior's 0.34), uncorrected 1 of 8 (seed 4, 0.22); the others
    reverse every held-out image. Another CPU's float rounding picks other seeds, so the test asks
    for the contrast, not for a given seed. The first version of this test passed on one seed whose
    prediction was reversed: AbsRel 0.22 "beat" 0.36 with the fitted scale negative on every image."""
    scenes = make_scenes(12, seed=10, height=48, width=48)
    held = make_scenes(8, seed=99, height=48, width=48)
    wrong = set(range(0, 12, 3)) | set(range(1, 12, 3))
    runs: dict[str, list[dict]] = {"uncorrected": [], "corrected": []}
    for name, fixed in (("uncorrected", False), ("corrected", True)):
        db = tmp_path / name / "studio.db"
        db.parent.mkdir()
        store = _store_with_labels(db, scenes, wrong, fixed)
        statuses = {r.status for r in store.training_items()}
        assert statuses == ({"accepted", "corrected"} if fixed else {"accepted"})
        for seed in SEEDS:
            cfg = _config(tmp_path / name / f"run{seed}", 42, 40, db=str(db), feature_alignment=False)
            result = train(TrainConfig.from_dict({**cfg.to_dict(), "seed": seed}), log=quiet)
            runs[name].append(held_out(load_model(result.checkpoint).model, held, 42))
        assert store.list_checkpoints()[0].path == str(result.checkpoint.resolve())    # in the model picker
    good = {name: [seed for seed, s in zip(SEEDS, r, strict=True) if s["verdict"]["beats_baselines"]]
            for name, r in runs.items()}
    texts = {name: [s["verdict"]["text"] for s in r] for name, r in runs.items()}
    assert len(good["corrected"]) >= 2 and len(good["corrected"]) > len(good["uncorrected"]), texts
    for seed in good["corrected"]:
        c, u = runs["corrected"][seed], runs["uncorrected"][seed]
        assert u["abs_rel"] is None or c["abs_rel"] < u["abs_rel"], (seed, c["abs_rel"], u["abs_rel"])
