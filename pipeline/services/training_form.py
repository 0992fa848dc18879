"""What the train tab's form shows, read from the owners of each fact. No gradio here.

- The settings: TrainConfig's fields with a form place (pipeline/train/train_config.py owns their
  defaults, ranges, choices and help); the form adds the run name, where the run starts from
  (`START_*` keys or a model key of the depth service) and an optional data folder.
- Where a run starts from (`start_choices`): fine-tuning the studio's model first (the default:
  what a user means), DINOv2 beside it (the paper's student), the other models, random weights last
  (experiments only; never the default).
- One sentence saying what a run with these settings will do and what happens offline
  (`describe_start`), from the local caches only: nothing here asks the network.
- How many curated labels a run would train on (`data_summary`).
"""
from __future__ import annotations

from ..train.config_fields import Setting
from ..train.train_config import SETTINGS

START_DINOV2 = "dinov2"        # DINOv2 encoder + new decoder: the paper's student
START_RANDOM = "random"        # random weights: experiments only
FORM_EXTRAS = ("name", "init", "folder")          # form fields that are not TrainConfig settings
DEFAULTS = {s.name: s.default for s in SETTINGS}


def form_settings() -> tuple[Setting, ...]:
    """The TrainConfig settings the form shows ("main" first, then "advanced"), in field order."""
    return tuple(s for place in ("main", "advanced") for s in SETTINGS if s.form == place)


def service_owned() -> frozenset[str]:
    """Settings the studio fills in (paths, device): a form that sends them is refused."""
    return frozenset(s.name for s in SETTINGS if s.form is None)


def is_model_key(key: str | None) -> bool:
    return bool(key) and key not in (START_DINOV2, START_RANDOM)


def start_choices(depth) -> list[tuple[str, str]]:
    """(label, key) of what a run can start from: the studio's model, DINOv2, other models, random."""
    models = depth.choices() if depth is not None else []
    default = depth.default_key if depth is not None else None
    first = [(f"Fine-tune {c.title} (the studio's model)", c.key) for c in models if c.key == default]
    others = [(f"Fine-tune {c.title}" + (" (metric)" if c.config is not None and c.config.metric else ""), c.key)
              for c in models if c.key != default]
    return first + [("DINOv2 encoder, new decoder (the paper's student)", START_DINOV2)] + others + \
        [("Random weights (experiments only)", START_RANDOM)]


def default_start(depth) -> str:
    """Fine-tune the studio's model (what a user means); DINOv2 when the studio has none."""
    return depth.default_key if depth is not None and depth.default_key else START_DINOV2


def model_config(depth, key: str):
    """A start model's ModelConfig: from the model list, or for a local file from its weights (the depth
    service's cached load); None when its weights are missing."""
    config = depth.choice(key).config
    if config is None:
        loaded = depth.model(key)
        config = None if loaded.untrained else loaded.checkpoint.config
    return config


def start_encoder(depth, key: str | None) -> str | None:
    """The encoder a start choice fixes (a model's), or None (DINOv2 / random: the form's encoder)."""
    if depth is None or not is_model_key(key):
        return None
    config = model_config(depth, key)
    return config.encoder if config is not None else None


def _weights_where(depth, key: str) -> tuple[str, bool]:
    """(where a model's weights come from, available without the network)."""
    from ..weights import registry as checkpoint_registry
    choice = depth.choice(key)
    if choice.kind == "registry":
        cached = checkpoint_registry.find_cached(choice.source) is not None
        return ("the Hugging Face cache" if cached else "the Hugging Face Hub (not cached yet)"), cached
    return f"the file {choice.note or choice.source}", True


def describe_start(depth, key: str | None, encoder: str | None = None, *, metric: bool = False,
                   feature_alignment: bool = True, feature_target: str | None = "dinov2") -> str:
    """One sentence: what a run with these settings starts from, and what happens offline."""
    from ..config import ENCODERS
    from ..train.student import dinov2_cached
    key = key or START_DINOV2
    encoder = start_encoder(depth, key) or encoder or DEFAULTS["encoder"]
    if is_model_key(key):
        choice, config = depth.choice(key), model_config(depth, key)
        where, offline_ok = _weights_where(depth, key)
        relative_to_metric = metric and not (config is not None and config.metric)
        what = (f"Fine-tunes {choice.title}" + (" as a metric model (its encoder, a new metric decoder)"
                                                if relative_to_metric else "") + f", weights from {where}")
        needs_net = not offline_ok
    elif key == START_RANDOM:
        what, needs_net = f"Starts a {encoder} student from random weights (for experiments: a short run gives no "\
                          "usable model)", False
    else:
        cached = ENCODERS[encoder].public and dinov2_cached(encoder)
        decoder = "a new metric decoder" if metric else "a new decoder (the paper's student)"
        what = (f"Starts a {encoder} {'metric ' if metric else ''}student from DINOv2 encoder weights with {decoder}, "
                f"weights from {'the Hugging Face cache' if cached else 'the Hugging Face Hub (not cached yet)'}")
        needs_net = not cached
    aligned = feature_alignment and not metric and feature_target != "init"
    target_cached = ENCODERS[encoder].public and dinov2_cached(encoder)
    if aligned:
        what += "; feature alignment uses frozen DINOv2 weights" + ("" if target_cached else " (not cached yet)")
        needs_net = needs_net or not target_cached
    if not ENCODERS[encoder].public and (aligned or key == START_DINOV2):
        return what + f"; {encoder} is a test size without DINOv2 weights, so the run stops at its start: " \
                      "fine-tune a model, start from random weights or align to the initial encoder."
    if needs_net:
        return what + "; offline, the run stops at its start and says which weights file to pass."
    return what + "; everything it needs is on this machine, so it also works offline."


def data_summary(store, data_root) -> dict:
    """How many curated labels the store would give a run, by status, and those in metres."""
    counts = store.count_by_status()
    metric = sum(1 for t in store.training_items(("accepted", "corrected")) if t.kind == "metric_depth")
    return {"accepted": counts.get("accepted", 0), "corrected": counts.get("corrected", 0), "metric": metric,
            "data_root": str(data_root)}
