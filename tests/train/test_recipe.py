"""The recipe's parts: config validation, schedule, sampling, batches, teacher labels, store items,
bad input (empty / all-masked / NaN data, wrong checkpoints), the job reporter."""
from __future__ import annotations

import argparse

import numpy as np
import pytest
import torch
from train_helpers import one_thread, quiet, scenes_dir_fixture, tiny_config  # noqa: F401

from pipeline.config import ModelConfig
from pipeline.errors import CheckpointError, ConfigError, StudioError
from pipeline.train.augment import from_numpy, resize_short_side
from pipeline.train.batches import MixedSampler, build_batch, local_entries
from pipeline.train.data import TrainItem, depth_to_disparity, folder_items, pools
from pipeline.train.errors import TrainDataError
from pipeline.train.recipe import Recipe, train
from pipeline.train.schedule import build_optimizer, build_scheduler, lr_factor
from pipeline.train.state import read_metrics
from pipeline.train.store_source import label_and_mask
from pipeline.train.synthetic import write_scenes
from pipeline.train.train_config import TrainConfig, parse_ratio
from pipeline.weights.loading import save_checkpoint, untrained_model

pytestmark = pytest.mark.usefixtures("one_thread")


# ----------------------------------------------------------------------------- config, schedule

@pytest.mark.parametrize("field, value, words", [
    ("encoder", "vitz", "unknown encoder 'vitz'"), ("input_size", 500, "multiple of 14"),
    ("steps", 0, "steps must be"), ("labelled_ratio", (0, 0), "labelled_ratio"),
    ("trim", 1.0, "trim must be"), ("decay", "cosine", "decay must be"), ("warmup_steps", 10, "warmup_steps"),
])
def test_config_refuses_bad_values_quoting_them(field, value, words):
    with pytest.raises(ConfigError, match=words):
        TrainConfig(data_dir="x", steps=10 if field != "steps" else value, **({field: value} if field != "steps" else {}))


def test_config_needs_data_and_round_trips():
    with pytest.raises(ConfigError, match="no training data"):
        TrainConfig()
    cfg = TrainConfig(db="a.db", labelled_ratio=(1, 3), steps=7)
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.lr_decoder == pytest.approx(5e-5)                              # decoder 10x encoder 5e-6
    assert parse_ratio("1:2") == (1, 2)
    with pytest.raises(ConfigError, match="'1-2'"):
        parse_ratio("1-2")


def test_schedule_warms_up_then_decays_and_decoder_gets_ten_times_the_encoder_lr():
    assert [lr_factor(s, total=10, warmup=2, decay="linear") for s in (0, 1, 2, 6, 10)] == [0.5, 1.0, 1.0, 0.5, 0.0]
    assert lr_factor(6, total=10, warmup=2, decay="poly", power=0.9) == pytest.approx(0.5 ** 0.9)
    cfg = TrainConfig(data_dir="x", steps=10, warmup_steps=2, encoder="vitt")
    model = untrained_model(ModelConfig("vitt")).model
    opt = build_optimizer(model, cfg)
    sched = build_scheduler(opt, cfg)
    enc, dec = opt.param_groups
    assert enc["name"] == "encoder" and dec["name"] == "decoder"
    assert len(enc["params"]) == sum(1 for n, _ in model.named_parameters() if n.startswith("encoder."))
    assert enc["lr"] == pytest.approx(2.5e-6) and dec["lr"] == pytest.approx(2.5e-5)   # warm-up step 0
    opt.step(), sched.step()
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([5e-6, 5e-5])


# ----------------------------------------------------------------------------- sampling, batches

def test_sampler_keeps_the_ratio_exactly_and_walks_each_pool_by_epochs():
    s = MixedSampler({"labelled": list(range(4)), "pseudo": list(range(6))}, (1, 2), seed=0)
    batches = [s.next_batch(4) for _ in range(6)]                             # 24 entries
    flat = [e for b in batches for e in b]
    assert sum(e.pool == "labelled" for e in flat) == 8                       # exactly 1/3
    lab = [e.index for e in flat if e.pool == "labelled"]
    assert sorted(lab[:4]) == [0, 1, 2, 3] and sorted(lab[4:8]) == [0, 1, 2, 3]   # every image once per epoch
    s2 = MixedSampler({"labelled": list(range(4)), "pseudo": list(range(6))}, (1, 2), seed=0)
    s2.load_state_dict(s.state_dict())
    assert s2.next_batch(4) == s.next_batch(4)
    only = MixedSampler({"labelled": [], "pseudo": list(range(3))}, (1, 2), seed=0)
    assert {e.pool for e in only.next_batch(5)} == {"pseudo"}


def _item(i, pool, label=True, size=20):
    rng = np.random.default_rng(i)
    rgb = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
    lab = np.linspace(0.1, 1, size * size, dtype=np.float32).reshape(size, size) if label else None
    return TrainItem(f"img{i}", pool, lambda: from_numpy(rgb, lab, None if lab is None else np.ones((size, size), bool)),
                     sha256=str(i))


def test_labelled_views_are_only_cropped_or_flipped_and_pseudo_views_are_cutmixed():
    p = pools([_item(0, "labelled"), _item(1, "pseudo"), _item(2, "pseudo")])
    s = MixedSampler(p, (1, 2), seed=0)
    entries = local_entries(s.next_batch(3), 0, 1)
    b = build_batch(p, entries, seed=0, size=14, cutmix_p=1.0)
    lab = [i for i, (e, _) in enumerate(entries) if e.pool == "labelled"][0]
    resized = resize_short_side(p["labelled"][0].load(), 14).image                # (3, 14, 14): crop = all
    assert torch.equal(b.images[lab], resized) or torch.equal(b.images[lab], resized.flip(-1))   # no jitter
    assert bool(b.box[lab].all()) and torch.equal(b.labels[lab], b.labels_b[lab])
    ps = [i for i, (e, _) in enumerate(entries) if e.pool == "pseudo"]
    for i in ps:
        assert b.pseudo[i] and 0 < int(b.box[i].sum()) < 14 * 14           # p = 1: always mixed
    assert not torch.equal(b.labels[ps[0]], b.labels_b[ps[0]])               # partner's label on the pasted box


def test_teacher_labels_images_without_a_label_on_their_clean_view(tmp_path):
    teacher = untrained_model(ModelConfig("vitt")).model
    tpath = save_checkpoint(teacher, tmp_path / "teacher.safetensors")
    unl = write_scenes(tmp_path / "unl", 3, seed=5, height=30, width=30)
    for p in unl.glob("*.npy"):
        p.unlink()
    lab = write_scenes(tmp_path / "lab", 2, seed=6, height=30, width=30)
    cfg = tiny_config(tmp_path / "run", lab, unlabelled_dir=str(unl), teacher=str(tpath), batch_size=3)
    r = Recipe(cfg, log=quiet)
    r.setup()
    try:
        b = None
        while b is None or not bool(b.need_teacher.any()):
            b = r._next_batch()
        need = b.need_teacher
        from pipeline.preprocess import imagenet_normalize
        with torch.no_grad():
            expected = teacher(imagenet_normalize(b.clean[need]))
        assert torch.allclose(b.labels[need], expected) and bool(b.masks[need].all())
        loss, logged = r.micro_step(b)
        assert torch.isfinite(loss) and {"pseudo", "feature"} <= set(logged)
    finally:
        r.cleanup()


# ----------------------------------------------------------------------------- labels, masks

def test_depth_ground_truth_becomes_normalised_disparity_with_invalid_pixels_nan():
    depth = np.array([[1.0, 2.0], [0.0, np.nan]])
    disp = depth_to_disparity(depth)
    assert disp[0, 0] == 1.0 and disp[0, 1] == 0.5 and np.isnan(disp[1]).all()


def test_store_masks_ignore_pixels_and_sky_is_disparity_zero():
    depth = np.full((2, 3), 4.0, np.float32)
    sky = np.array([[1, 1, 0], [0, 0, 0]], bool)
    ignore = np.array([[0, 1, 0], [0, 0, 1]], bool)
    label, usable = label_and_mask(depth, "disparity", {"sky": sky, "ignore": ignore})
    assert label[0, 0] == 0.0 and label[1, 0] == 1.0
    assert usable.tolist() == [[True, False, True], [True, True, False]]
    label, _ = label_and_mask(np.array([[2.0, 4.0]], np.float32), "metric_depth", {})
    assert label.tolist() == [[1.0, 0.5]]                                     # metres -> disparity


# ----------------------------------------------------------------------------- bad input

def test_empty_folder_and_folder_without_pairs_are_clear_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(TrainDataError, match="no image/ground-truth pairs"):
        folder_items(tmp_path / "empty")
    with pytest.raises(TrainDataError, match="does not exist"):
        folder_items(tmp_path / "missing")


def test_all_masked_labels_are_refused_naming_the_images(tmp_path):
    data = write_scenes(tmp_path / "d", 2, seed=1, height=30, width=30)
    for p in data.glob("*.npy"):
        np.save(p, np.full((30, 30), np.nan, np.float32))
    with pytest.raises(TrainDataError, match=r"image 'scene_000' \(folder\) has no usable label pixels"):
        train(tiny_config(tmp_path / "run", data), log=quiet)
    assert not (tmp_path / "run" / "final.safetensors").exists()


def test_partly_nan_labels_train_and_nan_pixels_are_ignored(tmp_path):
    data = write_scenes(tmp_path / "d", 3, seed=1, height=30, width=30)
    for p in data.glob("*.npy"):
        d = np.load(p)
        d[:10] = np.nan
        d[10:12] = 0.0
        np.save(p, d)
    result = train(tiny_config(tmp_path / "run", data, steps=2), log=quiet)
    assert np.isfinite(result.losses).all()


def test_tiny_dataset_of_one_image_trains_by_repeating_it(tmp_path):
    data = write_scenes(tmp_path / "d", 1, seed=1, height=30, width=30)
    result = train(tiny_config(tmp_path / "run", data, steps=2, batch_size=3), log=quiet)
    assert result.status == "finished"
    with pytest.raises(TrainDataError, match="only 1 usable training images, need at least 2"):
        train(tiny_config(tmp_path / "run2", data, min_items=2), log=quiet)


def test_checkpoint_of_another_encoder_is_refused(tmp_path, scenes_dir):
    ckpt = save_checkpoint(untrained_model(ModelConfig("vitt")).model, tmp_path / "tiny.safetensors")
    with pytest.raises(CheckpointError, match="vitt"):
        train(tiny_config(tmp_path / "run", scenes_dir, encoder="vits", init=str(ckpt)), log=quiet)
    enc = tmp_path / "enc.pth"
    torch.save({"cls_token": torch.zeros(1, 1, 32)}, enc)
    with pytest.raises(CheckpointError, match="does not fit the vitt encoder"):
        train(tiny_config(tmp_path / "run", scenes_dir, encoder_init=str(enc)), log=quiet)


def test_fine_tuning_starts_from_the_checkpoint_weights(tmp_path, scenes_dir):
    start = untrained_model(ModelConfig("vitt")).model
    ckpt = save_checkpoint(start, tmp_path / "start.safetensors")
    r = Recipe(tiny_config(tmp_path / "run", scenes_dir, init=str(ckpt)), log=quiet)
    r.setup()
    try:
        sd, ref = r.student.state_dict(), start.state_dict()
        assert all(torch.equal(sd[k], ref[k]) for k in ref)
        assert "fine-tuned" in r.init_note
    finally:
        r.cleanup()


# ----------------------------------------------------------------------------- CLI and job reporter

def _cli_args(*argv):
    from pipeline.cli import train as cli
    p = argparse.ArgumentParser()
    cli.add_arguments(p)
    return cli, p.parse_args(list(argv))


def test_cli_builds_the_config_and_resume_reuses_saved_settings(tmp_path, scenes_dir):
    cli, args = _cli_args("--data", str(scenes_dir), "--encoder", "vitt", "--ratio", "1:3", "--lr", "1e-5",
                          "--out", str(tmp_path / "run"), "--steps", "5")
    cfg = cli.config_from_args(args)
    assert cfg.labelled_ratio == (1, 3) and cfg.lr_encoder == 1e-5 and cfg.steps == 5
    assert (cfg.student_init, cfg.feature_target, cfg.loss_reduction) == ("dinov2", "dinov2", "mean")  # the paper's
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "train_config.json").write_text(__import__("json").dumps(cfg.to_dict()))
    cli, args = _cli_args("--resume", "--out", str(tmp_path / "run"), "--steps", "9")
    resumed = cli.config_from_args(args)
    assert resumed.steps == 9 and resumed.labelled_ratio == (1, 3) and resumed.encoder == "vitt"
    old = {k: v for k, v in cfg.to_dict().items() if k not in ("feature_target", "student_init", "loss_reduction")}
    (tmp_path / "run" / "train_config.json").write_text(__import__("json").dumps(old))   # saved by older code
    resumed = cli.config_from_args(_cli_args("--resume", "--out", str(tmp_path / "run"))[1])
    assert (resumed.feature_target, resumed.student_init, resumed.loss_reduction) == ("init", "random", "sum")
    cli, args = _cli_args("--resume", "--out", str(tmp_path / "nothing"))
    with pytest.raises(StudioError, match="train_config.json not found"):
        cli.config_from_args(args)


def test_job_reporter_gets_progress_loss_curve_and_the_finish(tmp_path, scenes_dir):
    from pipeline.store import Store
    db = tmp_path / "studio.db"
    job = Store(db).create_job("train", ["train"], total=3)
    cli, args = _cli_args("--data", str(scenes_dir), "--encoder", "vitt", "--student-init", "random",
                          "--feature-target", "init", "--steps", "3", "--batch-size", "2",
                          "--input-size", "28", "--lr", "1e-4", "--device", "cpu", "--db", str(db),
                          "--job-id", str(job.id), "--out", str(tmp_path / "run"))
    assert cli.run(args) == 0
    store = Store(db)
    done = store.get_job(job.id)
    assert done.status == "done" and done.done == 3 and done.total == 3
    assert done.result["step"] == 3
    curve = {step: v for step, name, v in store.job_metrics(job.id, "loss")}      # throttled to 2 Hz
    logged = {row["step"]: row["loss"] for row in read_metrics(tmp_path / "run")}  # every step
    assert 3 in curve and all(curve[s] == pytest.approx(logged[s]) for s in curve)
    assert any("saved" in line for _, _, line in store.job_log(job.id))
    assert store.list_checkpoints()[0].path == str((tmp_path / "run" / "final.safetensors").resolve())


# ----------------------------------------------------------------------------- accumulation, point pairs

def _capturing(recipe: Recipe) -> list[dict[str, torch.Tensor]]:
    """Record the gradient each optimiser step is about to apply (after all micro-steps)."""
    grads, step = [], recipe.optimizer.step

    def capture(*a, **k):
        grads.append({n: p.grad.detach().clone() for n, p in recipe.student.named_parameters() if p.grad is not None})
        return step(*a, **k)
    recipe.optimizer.step = capture
    return grads


@pytest.mark.filterwarnings("ignore:Seems like `optimizer.step\\(\\)` has been overridden")
def test_gradient_accumulation_of_two_halves_equals_one_full_batch(tmp_path, scenes_dir):
    """At each of three steps, from the same weights, two accumulated half batches give the loss and the
    gradient of the full batch (same images, same augmentations, 1/grad_accum scaling).

    Why not compare whole runs: the two runs multiply matrices of different shapes, so float sums
    differ in the last bits (~1e-6 of the gradient, more with other SIMD kernels); on the ~10^5 weights
    whose gradient is itself ~0 (dead ReLU channels) Adam's g / sqrt(v) turns that rounding into a
    full step of either sign, and the runs drift apart from step 2 on (5e-5 in the loss on one Intel
    CPU, below 1e-5 on another). That drift says nothing about accumulation; comparing the gradient
    at the same weights at every step tests exactly the claim, on any CPU."""
    full = Recipe(tiny_config(tmp_path / "full", scenes_dir, steps=3, batch_size=4), log=quiet)
    half = Recipe(tiny_config(tmp_path / "acc", scenes_dir, steps=3, batch_size=2, grad_accum=2), log=quiet)
    full.setup(), half.setup()
    try:
        g_full, g_half = _capturing(full), _capturing(half)
        for step in range(3):
            half.student.load_state_dict(full.student.state_dict())          # the same weights for both
            m_full, m_half = full.train_step(), half.train_step()
            assert m_half["loss"] == pytest.approx(m_full["loss"], rel=1e-6), step
            a, b = g_full[step], g_half[step]
            assert a.keys() == b.keys()
            err = sum(float(((a[n] - b[n]) ** 2).sum()) for n in a) ** 0.5
            norm = sum(float((a[n] ** 2).sum()) for n in a) ** 0.5
            assert err < 1e-5 * norm, (step, err / norm)                      # measured ~1e-6: float rounding
            assert half.sampler.state_dict() == full.sampler.state_dict()     # the same images consumed
    finally:
        full.cleanup(), half.cleanup()


def test_store_point_pairs_reach_the_ranking_loss(tmp_path):
    import io

    from PIL import Image

    from pipeline.store import Store
    from pipeline.train.synthetic import make_scenes

    store = Store(tmp_path / "studio.db")
    for i, (rgb, depth) in enumerate(make_scenes(2, seed=3, height=28, width=28)):
        buf = io.BytesIO()
        Image.fromarray(rgb).save(buf, format="PNG")
        rec, _ = store.add_image(buf.getvalue(), f"s{i}.png", width=28, height=28)
        store.add_prediction(rec.id, "teacher", "disparity", (1 / depth).astype(np.float32), make_label=True)
        store.add_point_pair(rec.id, (27, 14), (0, 14), 1, author="tester")   # floor (bottom) closer than wall
        store.set_status(rec.id, "corrected", author="tester")
    cfg = TrainConfig(db=str(tmp_path / "studio.db"), out_dir=str(tmp_path / "run"), encoder="vitt", steps=1,
                      batch_size=2, input_size=28, device="cpu", student_init="random", feature_target="init")
    r = Recipe(cfg, log=quiet)
    r.setup()
    try:
        b = r._next_batch()
        assert b.pairs.shape == (2, 1, 5) and set(b.pairs[:, 0, 4].tolist()) == {1}
        rows = b.pairs[:, 0]
        assert ((rows[:, 0] == 27) & (rows[:, 2] == 0)).all()                   # rows kept, columns maybe flipped
        _, logged = r.micro_step(b)
        assert logged["ranking"] > 0
    finally:
        r.cleanup()


# ----------------------------------------------------------------------------- held-out images

def _scene_store(path, n: int):
    import io

    from PIL import Image

    from pipeline.store import Store
    from pipeline.train.synthetic import make_scenes
    store = Store(path)
    for i, (rgb, depth) in enumerate(make_scenes(n, seed=5, height=28, width=28)):
        buf = io.BytesIO()
        Image.fromarray(rgb).save(buf, format="PNG")
        rec, _ = store.add_image(buf.getvalue(), f"s{i}.png", width=28, height=28)
        store.add_prediction(rec.id, "teacher", "disparity", (1 / depth).astype(np.float32))
        store.set_status(rec.id, "accepted", author="tester")
    return store


def test_holdout_leaves_the_held_out_store_images_out_of_training(tmp_path):
    from pipeline.train.train_config import in_holdout
    from pipeline.weights.loading import load_model
    store = _scene_store(tmp_path / "studio.db", 8)
    held = {i for i in store.image_ids() if in_holdout(store.get_image(i).sha256, 0.5)}
    kept = set(store.image_ids()) - held
    assert held and kept                                                      # both sides of the split occur
    cfg = TrainConfig(db=str(store.path), out_dir=str(tmp_path / "run"), encoder="vitt", steps=1, batch_size=2,
                      input_size=28, device="cpu", feature_alignment=False, student_init="random", holdout=0.5)
    meta = load_model(train(cfg, log=quiet).checkpoint).meta
    assert {int(r["image_id"]) for r in meta["data"]["items"]} == kept and meta["data"]["count"] == len(kept)
    assert meta["holdout"] == 0.5 and meta["train_config"]["holdout"] == 0.5
    full = TrainConfig(**{**cfg.to_dict(), "out_dir": str(tmp_path / "all"), "holdout": 0.0,
                          "labelled_ratio": (1, 2)})
    from pipeline.train.recipe import gather_items
    assert {int(it.image_id) for it in gather_items(full)} == held | kept     # 0 = nothing held out
    with pytest.raises(TrainDataError, match="held-out 100%|lower --holdout"):
        gather_items(TrainConfig(**{**cfg.to_dict(), "holdout": 0.999999, "labelled_ratio": (1, 2)}))


def test_cli_holdout_option_reaches_the_config():
    cli, args = _cli_args("--db", "x.db", "--holdout", "0.25")
    assert cli.config_from_args(args).holdout == 0.25
    cli, args = _cli_args("--db", "x.db")
    assert cli.config_from_args(args).holdout == 0.0
    cli, args = _cli_args("--db", "x.db", "--holdout", "1")
    with pytest.raises(ConfigError, match="holdout must be a share"):
        cli.config_from_args(args)
