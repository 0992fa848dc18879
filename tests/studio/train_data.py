"""Tiny curated store data for the train tab's tests: random images with accepted plane disparity labels,
training jobs that never ran a process, and finished run folders."""
from __future__ import annotations

import io

import numpy as np
from PIL import Image

H, W = 28, 36


def png(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (H, W, 3), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def label(seed: int) -> np.ndarray:
    v, u = np.mgrid[0:H, 0:W].astype(np.float32)
    return (0.05 * u + 0.1 * v + 1.0 + seed).astype(np.float32)          # (H, W) disparity plane


def add_accepted(store, seed: int) -> int:
    """An image whose teacher pseudo-label was accepted unchanged; returns its id."""
    rec, _ = store.add_image(png(seed), f"img{seed}.png", width=W, height=H)
    store.add_prediction(rec.id, "teacher", "disparity", label(seed))
    store.set_status(rec.id, "accepted", author="ann")
    return rec.id


def add_with_ground_truth(store, seed: int) -> int:
    """An accepted pseudo-label plus imported ground-truth disparity (an affine map of the label, as
    stereo disparity is of inverse depth): independent evidence to compare against. Returns its id."""
    image_id = add_accepted(store, seed)
    store.add_ground_truth(image_id, ground_truth(seed), kind="disparity", source="stereo", author="ann")
    return image_id


def ground_truth(seed: int) -> np.ndarray:
    return (2.0 * label(seed) + 0.3).astype(np.float32)


def fake_job(store, out_dir, resumed_from=None, metrics=()):
    params = {"run": "r", "out_dir": str(out_dir), "gpu": False}
    if resumed_from:
        params["resumed_from"] = resumed_from
    job = store.create_job("train", ["train"], params=params)
    store.request_cancel(job.id)                       # queued -> cancelled: never spawned
    for step, values in metrics:
        store.append_metrics(job.id, step, values)
    return job.id


def finished_run(folder, *, metric: bool = False, step: int = 5):
    """A run folder whose final weights carry the meta the recipe writes (tiny vitt, metric or not)."""
    from pipeline.config import ModelConfig
    from pipeline.model import DepthAnything
    from pipeline.train.run_folder import RunFolder
    from pipeline.weights.loading import save_checkpoint
    run = RunFolder(folder)
    meta = {"step": step, "last_loss": 0.25, "init": "random initialisation", "train_config": {"encoder": "vitt"},
            "data": {"count": 2, "sha256": "ab" * 32, "items": []}}
    save_checkpoint(DepthAnything(ModelConfig("vitt", metric=metric, max_depth=20.0)), run.final,
                    model_id=f"{run.name}-step{step}", meta=meta)
    return run
