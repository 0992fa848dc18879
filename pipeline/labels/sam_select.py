"""Optional: Segment Anything (SAM) through `transformers`, where its weights are already on this machine.

Nothing is downloaded: the model is loaded with `local_files_only=True` from a Hugging Face model id
already in the cache (default `facebook/sam-vit-base`, `DA_STUDIO_SAM_MODEL` to change it) or from a
local folder holding `config.json`, the weights and `processor_config.json`. When `transformers` is
not installed or the weights are not here, `availability()` says why and the studio shows the option
as unavailable; `select` then raises SamUnavailable with the same reason. A click is a point [h, w];
SAM's own prompt is (x, y), converted here and nowhere else.
"""
from __future__ import annotations

import importlib.util
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import StudioError

DEFAULT_SAM_MODEL = "facebook/sam-vit-base"


class SamUnavailable(StudioError):
    """SAM cannot run here (no transformers, no local weights); the message says which."""


@dataclass(frozen=True)
class Availability:
    ok: bool
    reason: str          # "" when available


class SamSelector:
    """Loads SAM once (on first use, under a lock) and answers point prompts with a mask."""

    def __init__(self, model: str = DEFAULT_SAM_MODEL, device: str | None = None):
        self.model_id = model
        self.device = device or "cpu"
        self._lock = threading.Lock()
        self._loaded = None                  # (model, processor) or Availability(False, why)

    def _load(self):
        with self._lock:
            if self._loaded is None:
                self._loaded = self._try_load()
            return self._loaded

    def _try_load(self):
        try:
            from transformers import SamModel, SamProcessor
        except ImportError:
            return Availability(False, "SAM needs the optional `transformers` package (pip install transformers)")
        try:
            model = SamModel.from_pretrained(self.model_id, local_files_only=True).to(self.device).eval()
            processor = SamProcessor.from_pretrained(self.model_id, local_files_only=True)
        except (OSError, ValueError) as e:
            return Availability(False, f"SAM weights {self.model_id!r} are not on this machine (offline, nothing is "
                                       f"downloaded): {str(e).splitlines()[0][:160]}")
        return model, processor

    def availability(self) -> Availability:
        """Whether SAM can run, found without importing transformers or loading anything (cheap enough
        for a page build): the package is installed and a config and weights are on this machine."""
        if isinstance(self._loaded, Availability):
            return self._loaded
        if self._loaded is not None:
            return Availability(True, "")
        if importlib.util.find_spec("transformers") is None:
            return Availability(False, "SAM needs the optional `transformers` package (pip install transformers)")
        if not _weights_here(self.model_id):
            return Availability(False, f"SAM weights {self.model_id!r} are not on this machine (offline, nothing is "
                                       "downloaded); set DA_STUDIO_SAM_MODEL to a folder or a cached Hub id")
        return Availability(True, "")

    def select(self, rgb: np.ndarray, seed) -> np.ndarray:
        """bool (H, W): SAM's best mask for a click at [h, w] on the (H, W, 3) uint8 image."""
        found = self.availability()
        if not found.ok:                          # known without importing transformers
            raise SamUnavailable(found.reason)
        import torch
        loaded = self._load()
        if isinstance(loaded, Availability):
            raise SamUnavailable(loaded.reason)
        model, processor = loaded
        h, w = (int(v) for v in seed)
        img = np.asarray(rgb)
        if not (0 <= h < img.shape[0] and 0 <= w < img.shape[1]):
            raise SamUnavailable(f"the click [h={h}, w={w}] is outside the {img.shape[1]}x{img.shape[0]} image")
        inputs = processor(images=img, input_points=[[[w, h]]], return_tensors="pt").to(self.device)
        with torch.no_grad():
            out = model(**inputs, multimask_output=True)
        masks = processor.image_processor.post_process_masks(out.pred_masks.cpu(), inputs["original_sizes"].cpu(),
                                                             inputs["reshaped_input_sizes"].cpu())[0]   # (1, M, H, W)
        best = int(out.iou_scores[0, 0].argmax())
        return masks[0, best].numpy().astype(bool)


def _weights_here(model_id: str) -> bool:
    folder = Path(model_id).expanduser()
    names = ("model.safetensors", "pytorch_model.bin")
    if folder.is_dir():
        return (folder / "config.json").is_file() and any((folder / n).is_file() for n in names)
    try:
        from huggingface_hub import try_to_load_from_cache
        found = [try_to_load_from_cache(model_id, n) for n in ("config.json", *names)]
    except Exception:                              # a malformed id: not here
        return False
    return isinstance(found[0], str) and any(isinstance(f, str) for f in found[1:])
