"""The depth explorer's models: which it offers and the ones it has loaded. No gradio here.

- `ModelChoice`: one model the page and the API offer, by key ("depth-anything-v2-small", "file:<name>",
  "trained:<id>"); sources of choices: the public checkpoint registry (`registry_choices`), a
  `--checkpoint` file (`file_choice`), the students registered in the label store (`store_choices`);
- `ModelCache`: loaded models by key, loaded once even under concurrent requests, least recently used
  evicted; `LoadedModel` is one entry, with the notice when its weights were missing and it runs
  untrained (`missing_weights_message` says which and how to supply them).
pipeline.services.depth_service.DepthService composes these with one request's work.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from ..config import ModelConfig
from ..errors import ConfigError
from ..weights import registry as checkpoint_registry
from ..weights.loading import LoadedCheckpoint


@dataclass(frozen=True)
class ModelChoice:
    key: str                          # what the UI/API passes back: registry name, "file:<name>", "trained:<id>"
    title: str
    licence: str
    source: str                       # what load_model() is given
    kind: str                         # "registry" | "file" | "trained"
    config: ModelConfig | None = None  # for the untrained stand-in when the weights are missing
    note: str = ""

    @property
    def label(self) -> str:
        return f"{self.title} ({self.licence})"


ChoiceSource = Callable[[], Iterable[ModelChoice]]


def registry_choices() -> list[ModelChoice]:
    """The public checkpoints of the registry (V1/V2 sizes, metric indoor/outdoor)."""
    out = []
    for name, k in checkpoint_registry.KNOWN.items():
        out.append(ModelChoice(name, k.title, k.licence, name, "registry", k.config, f"{k.repo_id}/{k.filename}"))
    return out


def file_choice(path: str | Path, licence: str = "licence of the supplied file") -> ModelChoice:
    path = Path(path)
    # the key names the file only: the API shows it, and the server's folders are nobody's business
    return ModelChoice(f"file:{path.name}", f"{path.name} (local file)", licence, str(path), "file", None, path.name)


def store_choices(db_path: str | Path) -> ChoiceSource:
    """Students trained by this project and registered in the label store (docs/STORE.md).

    Read on every call, so a run that finishes while the studio is up appears without a restart.
    Empty while the database does not exist (listing never creates it).
    """
    def source() -> list[ModelChoice]:
        if not Path(db_path).exists():
            return []
        from ..store import Store
        out = []
        for c in Store(db_path).list_checkpoints():
            try:
                config = ModelConfig.from_dict(c.config)
            except (ConfigError, TypeError):
                config = None
            out.append(ModelChoice(f"trained:{c.id}", f"{c.model_id} (trained here, #{c.id})",
                                   "derived from its teacher's weights: the teacher's licence applies",
                                   c.path, "trained", config, c.path))
        return out
    return source


@dataclass
class LoadedModel:
    choice: ModelChoice
    checkpoint: LoadedCheckpoint
    device: str
    notice: str | None = None          # set when these are untrained stand-in weights
    # (backend, input size) -> its Predictor, made once (pipeline.services.depth_service.DepthService.predictor)
    predictors: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def untrained(self) -> bool:
        return self.notice is not None


def missing_weights_message(choice: ModelChoice, error: Exception) -> str:
    """One line saying what is wrong, then (after a blank line) the cause and how to supply the weights."""
    where = f" ({choice.note})" if choice.note else ""
    return (f"Weights for {choice.title} are missing: it runs with UNTRAINED random weights, so its depth maps "
            f"are meaningless.\n\n"
            f"Weights{where}: {error}\n\n"
            f"To supply the weights, start the studio with `python app.py --checkpoint FILE` "
            f"(an official .pth or a project .safetensors), or place the checkpoint in the Hugging Face "
            f"cache (`huggingface-cli download` it on a machine with internet and copy the cache folder).")


class ModelCache:
    """Loaded models by key, loaded once even under concurrent requests; least recently used evicted."""

    def __init__(self, max_entries: int = 3):
        self.max_entries = max_entries
        self.loads = 0                                       # how many times a loader ran
        self._entries: OrderedDict[tuple, object] = OrderedDict()
        self._lock = threading.Lock()
        self._key_locks: dict[tuple, threading.Lock] = {}

    def get(self, key: tuple, loader: Callable[[], object]):
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
                return self._entries[key]
            key_lock = self._key_locks.setdefault(key, threading.Lock())
        with key_lock:                                       # one loader per key; others wait for it
            with self._lock:
                if key in self._entries:
                    return self._entries[key]
            value = loader()
            with self._lock:
                self._entries[key] = value
                self.loads += 1
                while len(self._entries) > self.max_entries:
                    self._entries.popitem(last=False)
            return value

    def __contains__(self, key: tuple) -> bool:
        with self._lock:
            return key in self._entries
