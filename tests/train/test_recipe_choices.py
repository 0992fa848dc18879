"""The recipe as the paper has it: the feature-alignment target, the student's start, the total loss,
and the switches of the V1 Table 9 ablation, all in TrainConfig and recorded in the run."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from train_helpers import one_thread, quiet, scenes_dir_fixture, tiny_config  # noqa: F401

from pipeline.config import ModelConfig
from pipeline.errors import CheckpointError, ConfigError
from pipeline.model.encoder import DinoV2Encoder
from pipeline.train import student as student_mod
from pipeline.train.batches import strong_perturbation
from pipeline.train.distributed import DistContext
from pipeline.train.objective import combine
from pipeline.train.recipe import Recipe, gather_items, train
from pipeline.train.train_config import TrainConfig
from pipeline.weights.loading import load_model

pytestmark = pytest.mark.usefixtures("one_thread")


def _dinov2_file(path, seed: int) -> None:
    """A random-weight DINOv2 of the vitt size, in the official key layout."""
    torch.manual_seed(seed)
    enc = DinoV2Encoder(ModelConfig(encoder="vitt").spec)
    torch.save({k: torch.randn_like(v) * 0.2 for k, v in enc.pretrained.state_dict().items()}, path)


def _unlabelled(tmp_path, scenes_dir):
    """Labelled scenes + the same images unlabelled (so the pseudo pool and its feature term exist)."""
    import shutil
    folder = tmp_path / "unlabelled"
    folder.mkdir()
    for p in sorted(scenes_dir.glob("*.png"))[:4]:
        shutil.copy(p, folder / p.name)
    from pipeline.weights.loading import save_checkpoint, untrained_model
    torch.manual_seed(3)
    teacher = save_checkpoint(untrained_model(ModelConfig("vitt")).model, tmp_path / "teacher.safetensors")
    return dict(unlabelled_dir=str(folder), teacher=str(teacher))


def _first_step_feature(cfg) -> float:
    r = Recipe(cfg, log=quiet)
    r.setup()
    try:
        _, logged = r.micro_step(r._next_batch())
        return logged.get("feature", 0.0), r.feature_note
    finally:
        r.cleanup()


def test_the_feature_term_aligns_to_a_dinov2_that_differs_from_the_student(tmp_path, scenes_dir):
    path = tmp_path / "dinov2_vitt.pth"
    _dinov2_file(path, seed=11)
    extra = _unlabelled(tmp_path, scenes_dir)
    target, note = _first_step_feature(tiny_config(tmp_path / "a", scenes_dir, dinov2=str(path), **extra))
    assert note == f"dinov2: {path}" and target > 0.1                       # non-zero at step 0
    own, note = _first_step_feature(tiny_config(tmp_path / "b", scenes_dir, feature_target="init", **extra))
    assert note.startswith("init:") and own == 0.0                          # its own copy: every cos = 1 > 0.85


def test_without_dinov2_weights_the_run_fails_clearly_or_records_init(tmp_path, scenes_dir, monkeypatch):
    import huggingface_hub
    from huggingface_hub.errors import LocalEntryNotFoundError

    def offline(*_a, **_k):
        raise LocalEntryNotFoundError("offline: no connection and not in the local cache")
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", offline)
    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache", lambda *a, **k: None)
    with pytest.raises(CheckpointError, match=r"timm/vit_small_patch14_dinov2\.lvd142m.*--dinov2 FILE.*"
                                              r"--feature-target init"):
        student_mod.dinov2_weights("vits")
    extra = _unlabelled(tmp_path, scenes_dir)
    with pytest.raises(CheckpointError, match="vitt is a test-only size"):
        train(tiny_config(tmp_path / "r0", scenes_dir, feature_target="dinov2", **extra), log=quiet)
    result = train(tiny_config(tmp_path / "r1", scenes_dir, steps=1, feature_target="init", **extra), log=quiet)
    meta = load_model(result.checkpoint).meta
    assert meta["feature_target"].startswith("init:") and meta["train_config"]["feature_target"] == "init"
    assert meta["student_init"] == "random" and meta["init"].startswith("random initialisation")


def test_the_default_recipe_is_dinov2_for_student_and_target():
    cfg = TrainConfig(data_dir="x")
    assert (cfg.student_init, cfg.feature_target, cfg.loss_reduction) == ("dinov2", "dinov2", "mean")
    assert TrainConfig(data_dir="x", init="a.pth").student_init == "checkpoint"
    with pytest.raises(ConfigError, match="disagree"):
        TrainConfig(data_dir="x", init="a.pth", student_init="random")
    with pytest.raises(ConfigError, match="feature_target"):
        TrainConfig(data_dir="x", feature_target="teacher")
    with pytest.raises(ConfigError, match="blur_sigma"):
        TrainConfig(data_dir="x", blur_sigma=(2.0, 0.1))
    # a config saved before these settings existed is read as what that code did
    old = {k: v for k, v in TrainConfig(data_dir="x").to_dict().items()
           if k not in ("feature_target", "student_init", "loss_reduction")}
    legacy = TrainConfig.from_dict(TrainConfig.saved_settings(old))
    assert (legacy.feature_target, legacy.student_init, legacy.loss_reduction) == ("init", "random", "sum")
    assert TrainConfig.from_dict(old).feature_target == "dinov2"          # a new run gets the paper's defaults
    cfg = TrainConfig(data_dir="x", blur_sigma=(0.5, 1.5), pseudo_labels=False)
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg


def test_a_new_decoder_starts_with_a_live_output():
    """Half of PyTorch's default draws leave the output ReLU dead (all zeros, no gradient, ever)."""
    alive = []
    for seed in range(6):
        torch.manual_seed(seed)
        model, note = student_mod.build_student(TrainConfig(data_dir="x", encoder="vitt", student_init="random"))
        with torch.no_grad():
            alive.append(bool((model.eval()(torch.rand(1, 3, 28, 28)) > 0).any()))
        assert (model.state_dict()[student_mod.LAST_BIAS] >= 0).all()
    assert all(alive)


def test_total_loss_is_the_mean_of_the_terms_present():
    ctx = DistContext()
    terms = {"labelled": (torch.tensor([2.0, 0.0]), torch.tensor([True, False])),
             "pseudo": (torch.tensor([0.0, 4.0]), torch.tensor([False, True])),
             "feature": (torch.tensor([0.0, 0.6]), torch.tensor([False, True]))}
    mean, logged = combine(terms, TrainConfig(data_dir="x", feature_weight=0.5), ctx)
    assert mean.item() == pytest.approx((2.0 + 4.0 + 0.5 * 0.6) / 3) and logged["loss"] == pytest.approx(mean.item())
    total, _ = combine(terms, TrainConfig(data_dir="x", feature_weight=0.5, loss_reduction="sum"), ctx)
    assert total.item() == pytest.approx(2.0 + 4.0 + 0.5 * 0.6)
    two, _ = combine({k: terms[k] for k in ("labelled", "pseudo")}, TrainConfig(data_dir="x"), ctx)
    assert two.item() == pytest.approx(3.0)                                 # only the terms present count


def test_the_ablation_switches_reach_the_batch(tmp_path, scenes_dir):
    off = strong_perturbation(TrainConfig(data_dir="x", perturbations=False, cutmix=False))
    assert (off.jitter_p, off.grayscale_p, off.blur_p, off.cutmix_p) == (0.0, 0.0, 0.0, 0.0)
    on = strong_perturbation(TrainConfig(data_dir="x", blur_sigma=(0.3, 0.9), hue=0.1))
    assert (on.jitter_p, on.blur_p, on.cutmix_p, on.blur_sigma, on.hue) == (0.8, 0.5, 0.5, (0.3, 0.9), 0.1)
    extra = _unlabelled(tmp_path, scenes_dir)
    assert {it.pool for it in gather_items(tiny_config(tmp_path / "a", scenes_dir, **extra))} == {"labelled", "pseudo"}
    assert {it.pool for it in gather_items(tiny_config(tmp_path / "b", scenes_dir, pseudo_labels=False,
                                                       **extra))} == {"labelled"}
    # perturbations off: the student sees the clean view of a pseudo-labelled image (no CutMix either)
    r = Recipe(tiny_config(tmp_path / "c", scenes_dir, perturbations=False, cutmix=False,
                           feature_alignment=False, labelled_ratio=(0, 1), **extra), log=quiet)
    r.setup()
    try:
        b = r._next_batch()
        assert bool(b.pseudo.all()) and bool(b.box.all())
        np.testing.assert_allclose(b.images.numpy(), b.clean.numpy())
    finally:
        r.cleanup()


def test_ground_truth_trains_only_when_asked(tmp_path):
    """Imported ground truth stays evidence by default; with train_on_ground_truth it replaces that
    image's label (labelled pool, its validity mask applied)."""
    import io

    from PIL import Image

    from pipeline.store import Store
    from pipeline.train.synthetic import make_scenes
    store = Store(tmp_path / "s.db")
    ids = []
    for i, (rgb, depth) in enumerate(make_scenes(3, seed=5, height=28, width=28)):
        buf = io.BytesIO()
        Image.fromarray(rgb).save(buf, format="PNG")
        rec, _ = store.add_image(buf.getvalue(), f"s{i}.png", width=28, height=28)
        store.add_prediction(rec.id, "teacher", "disparity", (1 / depth).astype(np.float32))
        store.set_status(rec.id, "accepted", author="t")
        ids.append((rec.id, depth))
    gt_id, depth = ids[1]
    valid = np.ones((28, 28), bool)
    valid[:, :7] = False
    store.add_ground_truth(gt_id, depth, kind="metric_depth", source="synthetic", author="t", valid=valid)
    base = dict(db=str(tmp_path / "s.db"), out_dir=str(tmp_path / "r"), encoder="vitt", student_init="random")
    plain = gather_items(TrainConfig(**base))
    assert {it.pool for it in plain} == {"pseudo"} and all(it.source == "store" for it in plain)
    items = {it.image_id: it for it in gather_items(TrainConfig(**base, train_on_ground_truth=True))}
    truth = items[str(gt_id)]
    assert (truth.pool, truth.source, items[str(ids[0][0])].pool) == ("labelled", "store-ground-truth", "pseudo")
    sample = truth.load()
    assert not sample.mask[:, :7].any() and sample.mask[:, 7:].all()
    np.testing.assert_allclose(sample.label.numpy()[:, 7:], (1 / depth)[:, 7:] / (1 / depth).max(), rtol=1e-6)
