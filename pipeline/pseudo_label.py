"""The pseudo-labelling job: a teacher's predictions + confidence into the label store.

For each image without a prediction from this model: decode it (hash-checked bytes), predict
it and its horizontal flip in one batch of two, score the flip consistency
(`corrections.flip_consistency`, low = review first), and record prediction + initial label
revision (tool 'pseudo_label', author 'model:<id>') + confidence in ONE store transaction
(`Store.add_prediction`). Killed at any moment, at most the image in flight is lost; run
again, the images already done are skipped (the store's UNIQUE (image, model) also refuses
duplicates). Deterministic: an image's values do not depend on what ran before it.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np

from .corrections import flip_consistency
from .errors import StudioError
from .image_io import decode_image
from .predictor import Predictor
from .store import Store


@dataclass
class PseudoLabelSummary:
    model_id: str
    total: int = 0                      # images this run had to do
    done: int = 0                       # predictions written by this run
    already: int = 0                    # found done when reached (another run did them)
    failed: list[tuple[int, str]] = field(default_factory=list)   # (image id, reason)
    cancelled: bool = False
    seconds: float = 0.0
    confidences: list[float] = field(default_factory=list)

    @property
    def images_per_s(self) -> float:
        return self.done / self.seconds if self.seconds > 0 else 0.0

    @property
    def mean_confidence(self) -> float | None:
        return float(np.mean(self.confidences)) if self.confidences else None

    def as_dict(self) -> dict:
        return {"model_id": self.model_id, "total": self.total, "done": self.done,
                "already": self.already, "failed": len(self.failed), "cancelled": self.cancelled,
                "seconds": round(self.seconds, 3), "images_per_s": round(self.images_per_s, 4),
                "mean_confidence": self.mean_confidence}


def predict_with_flip(predictor: Predictor, rgb: np.ndarray) -> tuple[np.ndarray, float, np.ndarray]:
    """(prediction (H, W) float32, confidence, confidence map (H, W)) from one batch of two."""
    flipped = np.ascontiguousarray(rgb[:, ::-1])                       # (H, W, 3)
    pred, pred_flipped = predictor.predict_many([rgb, flipped], batch_size=2)
    score, conf_map = flip_consistency(pred.array, pred_flipped.array)
    return pred.array, score, conf_map


def todo(store: Store, model_id: str, limit: int | None = None) -> list[int]:
    """Image ids `model_id` has not predicted yet, in import order (at most `limit`)."""
    ids = store.images_without_prediction(model_id)
    return ids if limit is None else ids[:max(0, int(limit))]


def label_one(store: Store, predictor: Predictor, image_id: int, *, job_id: int | None = None,
              before_write: Callable[[], None] | None = None) -> tuple[bool, float]:
    """Pseudo-label one image. Returns (created, confidence); (False, nan) if already done."""
    if store.pseudo_label_done(image_id, predictor.model_id):
        return False, float("nan")
    decoded = decode_image(store.image_bytes(image_id), name=f"image {image_id}")
    array, score, _ = predict_with_flip(predictor, decoded.rgb)
    if before_write is not None:
        before_write()
    _, created = store.add_prediction(image_id, predictor.model_id, predictor.kind, array,
                                      confidence=score, job_id=job_id, make_label=True)
    return created, score


def run_pseudo_label(store: Store, predictor: Predictor, *, limit: int | None = None,
                     job_id: int | None = None, reporter=None, progress_bar: bool = False,
                     image_ids: Iterable[int] | None = None, delay: float = 0.0) -> PseudoLabelSummary:
    """Pseudo-label every image `predictor`'s model has not done yet (or `image_ids`).

    reporter: a `jobs.JobReporter` (progress, logs, cancel) or None. `delay` seconds are
    slept between an image's prediction and its write (tests use it to kill a job with an
    image in flight). Per-image user errors (an undecodable file) are logged and skipped.
    """
    ids = list(image_ids) if image_ids is not None else todo(store, predictor.model_id, limit)
    summary = PseudoLabelSummary(predictor.model_id, total=len(ids))
    bar = None
    if progress_bar:
        from tqdm import tqdm
        bar = tqdm(total=len(ids), unit="img", desc=f"pseudo-label {predictor.model_id}")
    pause = (lambda: time.sleep(delay)) if delay > 0 else None
    t0 = time.perf_counter()
    for n, image_id in enumerate(ids):
        if reporter is not None and reporter.should_stop():
            summary.cancelled = True
            break
        try:
            created, score = label_one(store, predictor, image_id, job_id=job_id, before_write=pause)
        except StudioError as e:
            summary.failed.append((image_id, str(e)))
            if reporter is not None:
                reporter.log(f"image {image_id} skipped: {e}")
        else:
            summary.done += created
            summary.already += not created
            if created:
                summary.confidences.append(score)
        summary.seconds = time.perf_counter() - t0
        if bar is not None:
            bar.update(1)
        if reporter is not None:
            reporter.progress(n + 1, len(ids), message=f"image {image_id}",
                              confidence=summary.confidences[-1] if summary.confidences else 0.0)
    summary.seconds = time.perf_counter() - t0
    if bar is not None:
        bar.close()
    return summary
