"""Teacher vs student for the train tab: both models on the held-out images' independent evidence.

Ground truth, pixels a person set, point pairs; never a model's pseudo-label (pipeline/evaluation/holdout.py
scores; pipeline/evaluation/protocol.py is the protocol). The figure stored on a trained checkpoint names what it
was measured against. Bounded: at most `max_images` (<= 50) images with evidence, in image-id order,
run inside the call. Nothing independent: a Comparison without rows whose `message` says so.
"""
from __future__ import annotations

import time
import uuid
from pathlib import Path

from ..config import PATCH_SIZE
from ..errors import ConfigError, StudioError
from ..evaluation import holdout as hc
from ..preprocess import MAX_INPUT_SIZE
from ..ranges import Range

RANGES = {          # every number the compare endpoints take, checked here whatever the widget allowed
    "fraction": Range("held-out share", 0.01, 1.0),
    "max_images": Range("max images", 1, hc.MAX_IMAGES_LIMIT, integer=True),
    "input_size": Range("input size", PATCH_SIZE, MAX_INPUT_SIZE, integer=True, multiple_of=PATCH_SIZE,
                        optional=True),
}


class CompareError(StudioError):
    """A comparison that cannot run (no models loaded in this studio)."""


class TeacherStudent:
    def __init__(self, store, settings, depth):
        self.store, self.settings, self.depth = store, settings, depth

    def compare(self, teacher: str, student: str, *, fraction: float = 0.1, max_images: int = 8,
                input_size: int | None = None, sample: bool = False, progress=None) -> hc.Comparison:
        if self.depth is None:
            raise CompareError("no models are loaded in this studio; start it with the depth service")
        if not teacher or not student:
            raise ConfigError("choose a teacher and a student model to compare")
        max_images = RANGES["max_images"].check(max_images)
        input_size = RANGES["input_size"].check(input_size)
        if sample:
            items, skipped, held = hc.sample_items(), [], 1
        else:
            fraction = RANGES["fraction"].check(fraction)
            items, skipped_raw = hc.evidence_items(self.store, fraction)
            held, skipped = len(items) + len(skipped_raw), hc.skipped_lines(skipped_raw)
            if not held:
                skipped.append(f"no image of the store falls in the held-out {fraction:.0%}; raise the held-out share")
            if len(items) > max_images:
                skipped.append(f"{len(items) - max_images} image(s) with evidence beyond max images ({max_images})")
        roles = {"teacher": teacher, "student": student}
        titles = {r: self.depth.choice(k).title for r, k in roles.items()}
        if not items:
            return hc.Comparison(titles, [], {}, {}, held_out=held, skipped=skipped)
        result = hc.compare(items[:max_images], {r: self._predictor(k, input_size) for r, k in roles.items()},
                            titles, out_dir=self._folder(), cmap=self.settings.cmap, held_out=held,
                            skipped=skipped, seen={r: self._trained_on(k) for r, k in roles.items()},
                            progress=progress)
        if not sample:
            self._record(roles, titles, result, fraction)
        return result

    def _predictor(self, key: str, input_size: int | None):
        def predict(rgb):
            p = self.depth.infer(rgb, key, input_size)
            return p.array, p.kind
        return predict

    def _trained_on(self, key: str) -> set[str]:
        """Store image ids in a trained model's data snapshot (empty for other models), less the images
        its meta says were held out of training (train --holdout, by image hash)."""
        meta = self.depth.model(key).checkpoint.meta or {}
        items = (meta.get("data") or {}).get("items") or []
        ids = {str(r.get("image_id")) for r in items
               if isinstance(r, dict) and r.get("source") in ("store", "store-ground-truth")}
        held = float(meta.get("holdout") or (meta.get("train_config") or {}).get("holdout") or 0.0)
        if held > 0:                                         # one store query (pipeline/store/holdout.py)
            ids -= {str(i) for i in self.store.held_out_ids(held)}
        return ids

    def _record(self, roles: dict, titles: dict, result, fraction: float) -> None:
        """Store each trained checkpoint's figure with what it was measured against (the checkpoint
        table shows it); earlier circular figures ("holdout_abs_rel") are cleared."""
        for role, key in roles.items():
            figure = hc.checkpoint_figure(result, role, titles["student" if role == "teacher" else "teacher"],
                                          fraction)
            if key.startswith("trained:") and figure is not None:
                self.store.update_checkpoint_metrics(int(key.split(":", 1)[1]), {
                    "holdout_abs_rel": None, "holdout_delta1": None, "evaluation": figure})

    def _folder(self) -> Path:
        folder = self.settings.temp_dir / f"compare-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}"
        folder.mkdir(parents=True)
        return folder
