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
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from ..errors import StudioError
from ..files.image_io import decode_image
from ..labels.corrections import flip_consistency
from ..predictor import Predictor
from ..store import Store


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

    def describe(self) -> str:
        """One sentence for people (the job log, the studio's job box); `as_dict` is for programs."""
        conf = f", mean confidence {self.mean_confidence:.2f}" if self.mean_confidence is not None else ""
        text = (f"{'cancelled after labelling' if self.cancelled else 'labelled'} {self.done} of {self.total} "
                f"image(s) with {self.model_id} in {self.seconds:.1f} s ({self.images_per_s:.2f} img/s){conf}")
        extra = [f"{self.already} already labelled" if self.already else "",
                 f"{len(self.failed)} unreadable" if self.failed else ""]
        return text + "".join(f"; {e}" for e in extra if e)

    def as_dict(self) -> dict:
        return {"model_id": self.model_id, "total": self.total, "done": self.done,
                "already": self.already, "failed": len(self.failed), "cancelled": self.cancelled,
                "seconds": round(self.seconds, 3), "images_per_s": round(self.images_per_s, 4),
                "mean_confidence": self.mean_confidence}


def flip_pairs(predictor: Predictor, rgbs: list[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
    """The model's (H, W) outputs for each image and for its horizontal flip, in one
    `predict_many` call: images sharing a network size run together (image, flip, image, ...)."""
    if not rgbs:
        return []
    flipped = [np.ascontiguousarray(rgb[:, ::-1]) for rgb in rgbs]                 # (H, W, 3) each
    preds = predictor.predict_many([x for pair in zip(rgbs, flipped, strict=True) for x in pair],
                                   batch_size=2 * len(rgbs))
    return [(preds[2 * i].array, preds[2 * i + 1].array) for i in range(len(rgbs))]


def flip_pair(predictor: Predictor, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The model's (H, W) outputs for an image and for its horizontal flip, one batch of two."""
    return flip_pairs(predictor, [rgb])[0]


def confidence_of(pair: tuple[np.ndarray, np.ndarray]) -> float:
    """A pseudo-label's confidence from (prediction, prediction of the flipped image): the flip
    consistency (`corrections.flip_consistency`; low = review first). The store job and the
    sharded job (pipeline/shards) both score with this."""
    return flip_consistency(*pair)[0]


def predict_with_flip(predictor: Predictor, rgb: np.ndarray) -> tuple[np.ndarray, float, np.ndarray]:
    """(prediction (H, W) float32, confidence, confidence map (H, W)) from one batch of two."""
    pred, pred_flipped = flip_pair(predictor, rgb)
    score, conf_map = flip_consistency(pred, pred_flipped)
    return pred, score, conf_map


def todo(store: Store, model_id: str, limit: int | None = None) -> list[int]:
    """Image ids `model_id` has not predicted yet, in import order (at most `limit`)."""
    ids = store.images_without_prediction(model_id)
    return ids if limit is None else ids[:max(0, int(limit))]


def predict_pair(store: Store, predictor: Predictor, image_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Decode a stored image (hash-checked) and predict it and its flip (`flip_pair`)."""
    return flip_pair(predictor, decode_image(store.image_bytes(image_id), name=f"image {image_id}").rgb)


def write_one(store: Store, predictor: Predictor, image_id: int, pair: tuple[np.ndarray, np.ndarray], *,
              job_id: int | None = None, delay: float = 0.0) -> tuple[bool, float]:
    """Score the flip consistency and record prediction + label + confidence (one transaction)."""
    score = confidence_of(pair)
    if delay > 0:
        time.sleep(delay)                          # tests: an image in flight when killed
    _, created = store.add_prediction(image_id, predictor.model_id, predictor.kind, pair[0],
                                      confidence=score, job_id=job_id, make_label=True)
    return created, score


def label_one(store: Store, predictor: Predictor, image_id: int, *, job_id: int | None = None,
              delay: float = 0.0) -> tuple[bool, float]:
    """Pseudo-label one image. Returns (created, confidence); (False, nan) if already done."""
    if store.pseudo_label_done(image_id, predictor.model_id):
        return False, float("nan")
    return write_one(store, predictor, image_id, predict_pair(store, predictor, image_id),
                     job_id=job_id, delay=delay)


class _Progress:
    """Counts results into the summary and forwards them to the bar / the job reporter."""

    def __init__(self, summary: PseudoLabelSummary, reporter, progress_bar: bool):
        self.summary, self.reporter, self.n, self.t0 = summary, reporter, 0, time.perf_counter()
        self.bar = None
        if progress_bar:
            from tqdm import tqdm
            self.bar = tqdm(total=summary.total, unit="img", desc=f"pseudo-label {summary.model_id}")

    def add(self, image_id: int, outcome: tuple[bool, float] | StudioError) -> None:
        s = self.summary
        if isinstance(outcome, StudioError):
            s.failed.append((image_id, str(outcome)))
            if self.reporter is not None:
                self.reporter.log(f"image {image_id} skipped: {outcome}")
        else:
            created, score = outcome
            s.done += created
            s.already += not created
            if created:
                s.confidences.append(score)
        self.n += 1
        s.seconds = time.perf_counter() - self.t0
        if self.bar is not None:
            self.bar.update(1)
        if self.reporter is not None:
            self.reporter.progress(self.n, s.total, message=f"image {image_id}",
                                   confidence=s.confidences[-1] if s.confidences else 0.0)

    def close(self) -> None:
        self.summary.seconds = time.perf_counter() - self.t0
        if self.bar is not None:
            self.bar.close()


def _outcome(fn, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except StudioError as e:                       # an unreadable image: skip it, keep going
        return e


def run_pseudo_label(store: Store, predictor: Predictor, *, limit: int | None = None,
                     job_id: int | None = None, reporter=None, progress_bar: bool = False,
                     image_ids: Iterable[int] | None = None, delay: float = 0.0,
                     overlap: bool | None = None) -> PseudoLabelSummary:
    """Pseudo-label every image `predictor`'s model has not done yet (or `image_ids`).

    reporter: a `job_reporter.JobReporter` (progress, logs, cancel) or None. Per-image user errors
    (an undecodable file) are logged and skipped. overlap (default: on for CUDA): score and
    write image k on a second thread while the device predicts image k+1, so the store does
    not stall the GPU; a kill then loses at most the two images in flight (never a half one).
    On CPU the two would share the same cores, so it runs one image at a time. `delay`
    seconds are slept before each write (tests kill a job with an image in flight).
    """
    ids = list(image_ids) if image_ids is not None else todo(store, predictor.model_id, limit)
    summary = PseudoLabelSummary(predictor.model_id, total=len(ids))
    progress = _Progress(summary, reporter, progress_bar)
    overlap = predictor.device.type == "cuda" if overlap is None else overlap
    kw = {"job_id": job_id, "delay": delay}
    try:
        if overlap:
            _run_overlapped(store, predictor, ids, progress, reporter, summary, kw)
        else:
            for image_id in ids:
                if reporter is not None and reporter.should_stop():
                    summary.cancelled = True
                    break
                progress.add(image_id, _outcome(label_one, store, predictor, image_id, **kw))
    finally:
        progress.close()
    return summary


def _run_overlapped(store, predictor, ids, progress, reporter, summary, kw) -> None:
    from concurrent.futures import ThreadPoolExecutor

    pending = None                                   # (image_id, future) being written
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="pseudo-label-writer") as pool:
        for image_id in ids:
            if reporter is not None and reporter.should_stop():
                summary.cancelled = True
                break
            if store.pseudo_label_done(image_id, predictor.model_id):
                outcome = (False, float("nan"))
            else:
                pair = _outcome(predict_pair, store, predictor, image_id)
                outcome = pair if isinstance(pair, StudioError) else None
            if pending is not None:
                progress.add(pending[0], pending[1].result())
                pending = None
            if outcome is not None:
                progress.add(image_id, outcome)
            else:
                pending = (image_id, pool.submit(_outcome, write_one, store, predictor, image_id, pair, **kw))
        if pending is not None:
            progress.add(pending[0], pending[1].result())
