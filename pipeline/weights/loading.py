"""The one owner of checkpoint formats: reading, checking, converting and writing weights.

Formats read:
- official Depth Anything `.pth` (V2 relative, V2 metric Hypersim/VKITTI) and V1 `pytorch_model.bin`
  (all share the keys `pretrained.*` / `depth_head.*`; wrappers `model`/`state_dict`/`module.` accepted);
- plain safetensors with those keys (e.g. fp16 conversions);
- the project's own format: safetensors whose metadata holds the ModelConfig (json), model id and
  training meta, so the file alone says what it is.

Never unpickles anything but tensors: `torch.load(weights_only=True, map_location="cpu")`.
What the weights cannot say (V1 vs V2, relative vs metric have identical keys) comes from the
project metadata or the registry (binding) or the file name (a hint that explicit arguments
override); the encoder always comes from the tensor shapes.
"""
from __future__ import annotations

import json
import logging
import os
import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError

from ..atomic import atomic_path
from ..config import ENCODERS, METRIC_MAX_DEPTH, ModelConfig
from ..errors import CheckpointError
from ..model import DepthAnything
from . import registry
from .state_dict import (
    check_fits,
    compare_state_dict,
    convert_official_state_dict,
    infer_encoder,
    to_official_state_dict,
)

log = logging.getLogger(__name__)

PROJECT_FORMAT = "depth-anything-studio"
PROJECT_FORMAT_VERSION = "1"
WRAPPER_KEYS = ("model", "state_dict", "model_state_dict", "module", "net")
CONFIG_FIELDS = ("encoder", "version", "metric", "max_depth")


@dataclass(frozen=True)
class LoadedCheckpoint:
    model: DepthAnything        # eval mode, on the requested device
    config: ModelConfig
    model_id: str               # registry name, project model id or file stem
    source: str                 # path (or registry name) it came from
    meta: dict = field(default_factory=dict)   # training metadata for project checkpoints


@dataclass
class RawCheckpoint:
    state_dict: dict            # key -> tensor, official key names, not yet converted
    format: str                 # "official-pth" | "safetensors" | "project-safetensors"
    project: dict | None = None  # {"config": {...}, "model_id": str, "meta": {...}} for our files


# ----------------------------------------------------------------------------- reading

def _is_safetensors(path: Path) -> bool:
    with open(path, "rb") as f:
        head = f.read(9)
    return len(head) == 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < (1 << 31)


def _read_safetensors(path: Path, tensors: bool = True) -> RawCheckpoint:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            metadata = f.metadata() or {}
            sd = {k: f.get_tensor(k) for k in f.keys()} if tensors else {}
    except Exception as e:
        raise CheckpointError(f"{path}: damaged or truncated safetensors file ({e}); "
                              "download or copy it again.") from e
    if metadata.get("format") != PROJECT_FORMAT:
        return RawCheckpoint(sd, "safetensors")
    try:
        project = {"config": json.loads(metadata["config"]), "model_id": metadata.get("model_id", path.stem),
                   "meta": json.loads(metadata.get("meta", "{}"))}
    except (KeyError, ValueError) as e:
        raise CheckpointError(f"{path}: project checkpoint with unreadable metadata ({e})") from e
    return RawCheckpoint(sd, "project-safetensors", project)


def project_metadata(path: str | os.PathLike) -> dict:
    """{"config", "model_id", "meta"} of a project checkpoint, read from its header only (no tensors).
    CheckpointError when the file is missing or not a project checkpoint."""
    path = Path(path)
    if not path.is_file() or not _is_safetensors(path):
        raise CheckpointError(f"{path}: not a project checkpoint (safetensors written by this project)")
    project = _read_safetensors(path, tensors=False).project
    if project is None:
        raise CheckpointError(f"{path}: a safetensors file without this project's metadata")
    return project


PYTORCH_SIGNATURES = (b"PK\x03\x04",) + tuple(bytes([0x80, p]) for p in range(2, 6))   # zip format, pickle 2-5


def _torch_load(path: Path):
    with open(path, "rb") as f:
        head = f.read(4)
    if not head.startswith(PYTORCH_SIGNATURES):
        raise CheckpointError(f"{path}: not a checkpoint: neither a PyTorch file (.pth/.bin: a zip or a pickle) "
                              f"nor safetensors (it starts with bytes {head.hex(' ')}); pass the weights file")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "weights only" not in str(e).lower() or not (head.startswith(b"PK") or _parses_as_pickle(path)):
            why = str(e).splitlines()[0][:120] if str(e) and "weights only" not in str(e).lower() else ""
            raise CheckpointError(f"{path}: not a readable checkpoint (truncated or damaged"
                                  f"{': ' + why if why else ''}); download or copy it again") from e
        raise CheckpointError(
            f"{path}: refused to load: the file holds Python objects other than tensors, and "
            "unpickling them could run arbitrary code (only weights_only loading is allowed). "
            "Use an official .pth/.bin or a .safetensors file.") from e
    except Exception as e:   # garbage makes the (safe, restricted) unpickler fail in any way
        detail = f"{type(e).__name__}: {str(e).splitlines()[0][:120]}" if str(e) else type(e).__name__
        raise CheckpointError(f"{path}: not a readable checkpoint (truncated, damaged or not a PyTorch "
                              f"file; {detail}). Download or copy it again.") from e


def _parses_as_pickle(path: Path) -> bool:
    """Whether the file is a well-formed pickle (parsed by pickletools: nothing is run or built).
    Tells a pickle of objects that weights_only refused from bytes that merely begin like one."""
    import pickletools
    try:
        with open(path, "rb") as f:
            for _ in pickletools.genops(f):
                pass
        return True
    except Exception:   # noqa: BLE001 - any parse failure means "not a pickle"
        return False


def _unwrap(obj, path: Path) -> dict:
    """Find the state dict inside training wrappers ({'model': sd}, {'state_dict': sd}, 'module.')."""
    for _ in range(3):
        if isinstance(obj, dict) and not any(isinstance(v, torch.Tensor) for v in obj.values()):
            inner = next((obj[k] for k in WRAPPER_KEYS if isinstance(obj.get(k), dict)), None)
            if inner is None:
                break
            obj = inner
    if not isinstance(obj, dict) or not obj:
        raise CheckpointError(f"{path}: not a checkpoint: expected a dict of tensors, found {type(obj).__name__}")
    sd = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not sd:
        raise CheckpointError(f"{path}: not a checkpoint: it holds no tensors (keys: {list(obj)[:5]})")
    return sd


def read_checkpoint(path: str | os.PathLike) -> RawCheckpoint:
    """Read any supported file into official-named tensors; CheckpointError naming the file otherwise."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint file not found: {path}. Check the path, or pass a registry name "
                              f"such as {registry.DEFAULT_NAME!r} (python -m pipeline checkpoints list).")
    if path.is_dir():
        raise CheckpointError(f"{path} is a folder; pass the checkpoint file inside it (.pth, .bin, .safetensors)")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: empty file (0 bytes); download or copy it again")
    if _is_safetensors(path):
        raw = _read_safetensors(path)
    else:
        raw = RawCheckpoint(_unwrap(_torch_load(path), path), "official-pth")
    raw.state_dict = {k.removeprefix("module."): v for k, v in raw.state_dict.items()}
    return raw


# ----------------------------------------------------------------------------- deciding the config

_NAME_HINTS = (
    (re.compile(r"depth_anything_v2_metric_(hypersim|vkitti)_(vit[sblgt])"),
     lambda m: {"encoder": m[2], "version": "v2", "metric": True,
                "max_depth": METRIC_MAX_DEPTH["indoor" if m[1] == "hypersim" else "outdoor"]}),
    (re.compile(r"depth[_-]anything[_-]v2[_-](vit[sblgt])"), lambda m: {"encoder": m[1], "version": "v2", "metric": False}),
    (re.compile(r"depth[_-]anything[_-](vit[sblg])14"), lambda m: {"encoder": m[1], "version": "v1", "metric": False}),
)


def facts_from_name(path: str | os.PathLike) -> dict:
    """What the file name (or its Hub cache folder) says about the model; {} if nothing."""
    text = str(path).replace("\\", "/").lower()
    name = Path(text).name
    for target in (name, text):   # the file's own name first, then e.g. models--LiheYoung--depth_anything_vits14/...
        for pattern, facts in _NAME_HINTS:
            m = pattern.search(target)
            if m:
                return facts(m)
    return {}


def _conflict(path, field_name: str, have, asked) -> str:
    if field_name in ("encoder", "version"):
        return f"{path}: this is a {have} checkpoint; you asked for {asked}. Pass --{field_name} {have} or another file."
    if field_name == "metric":
        what = "metric depth" if have else "relative depth"
        return f"{path}: this is a {what} checkpoint; you asked for {'metric' if asked else 'relative'} depth."
    return f"{path}: this checkpoint has max depth {have:g} m; you asked for {asked:g} m."


def decide_config(path, encoder_from_shapes: str, requested: dict, binding: dict, hints: dict) -> ModelConfig:
    """Merge what is known: shapes and `binding` facts (project metadata, registry) must agree with
    the request; file-name `hints` fill gaps and give way to explicit requests (with a log line)."""
    binding = {**binding, "encoder": encoder_from_shapes}
    if hints.get("encoder") not in (None, encoder_from_shapes):
        log.warning("%s: the file name suggests %s but the weights are %s", path, hints["encoder"], encoder_from_shapes)
    facts = {}
    for name in CONFIG_FIELDS:
        asked = requested.get(name)
        if name == "max_depth" and not facts.get("metric"):   # irrelevant for relative models
            facts[name] = binding.get(name, ModelConfig.max_depth)
            continue
        if name in binding:
            if asked is not None and asked != binding[name]:
                raise CheckpointError(_conflict(path, name, binding[name], asked))
            facts[name] = binding[name]
        elif asked is not None:
            if name in hints and hints[name] != asked:
                log.warning("%s: the file name suggests %s=%s; using %s=%s as asked", path, name, hints[name], name, asked)
            facts[name] = asked
        elif name in hints:
            facts[name] = hints[name]
    if facts.get("metric") and "max_depth" not in facts:
        facts["max_depth"] = METRIC_MAX_DEPTH["indoor"]
    if facts.get("metric") and "version" not in facts:
        facts["version"] = "v2"
    return ModelConfig(**facts)


# ----------------------------------------------------------------------------- public API

def _locate(source) -> tuple[Path, registry.KnownCheckpoint | None]:
    text = os.fspath(source)
    if text in registry.KNOWN and not Path(text).exists():
        return registry.resolve(text), registry.KNOWN[text]
    path = Path(text).expanduser()
    if not path.exists() and not path.suffix and os.sep not in text:
        registry.get(text)   # raises "unknown checkpoint name ..." with the known names
    return path, None


def load_model(source: str | os.PathLike, *, encoder: str | None = None, version: str | None = None,
               metric: bool | None = None, max_depth: float | None = None, device="cpu") -> LoadedCheckpoint:
    """Load a checkpoint file (official .pth/.bin, safetensors, project safetensors) or registry name.

    Missing facts are inferred (encoder from shapes; version/metric from project metadata, the
    registry or the file name); conflicts raise CheckpointError naming the file.
    """
    path, known = _locate(source)
    raw = read_checkpoint(path)
    sd = convert_official_state_dict(raw.state_dict)
    enc = infer_encoder(sd, path)
    if raw.project is not None:
        binding = {k: v for k, v in raw.project["config"].items() if k in CONFIG_FIELDS and k != "encoder"}
        if raw.project["config"].get("encoder", enc) != enc:
            raise CheckpointError(f"{path}: damaged project checkpoint: its metadata says "
                                  f"{raw.project['config']['encoder']} but the weights are {enc}")
    elif known is not None:
        binding = {k: getattr(known, k) for k in ("version", "metric", "max_depth")}
    else:
        binding = {}
    requested = {"encoder": encoder, "version": version, "metric": metric,
                 "max_depth": None if max_depth is None else float(max_depth)}
    config = decide_config(path, enc, requested, binding, facts_from_name(path))
    check_fits(sd, config, path)
    model = _instantiate(config, sd).eval().to(device)
    return LoadedCheckpoint(model, config, _model_id(path, raw, known, config), str(source),
                            dict(raw.project["meta"]) if raw.project else {})


def _instantiate(config: ModelConfig, sd: dict) -> DepthAnything:
    """The network holding `sd`'s tensors (as float32), built on the meta device to skip random init."""
    sd = {k: v.float() if v.is_floating_point() else v for k, v in sd.items()}
    with torch.device("meta"):
        model = DepthAnything(config)
    model.load_state_dict(sd, assign=True)
    if any(t.is_meta for t in [*model.parameters(), *model.buffers()]):   # a buffer the file lacks
        model = DepthAnything(config)
        model.load_state_dict(sd)
    return model


def _model_id(path: Path, raw: RawCheckpoint, known, config: ModelConfig) -> str:
    if raw.project is not None:
        return str(raw.project["model_id"])
    entry = known or registry.by_filename(path.name)
    if entry is not None and entry.config == config:
        return entry.name
    return path.stem


def untrained_model(config: ModelConfig) -> LoadedCheckpoint:
    """A randomly initialised network, labelled so nobody mistakes its output for a prediction."""
    tag = f"untrained-{config.encoder}-{config.version}" + ("-metric" if config.metric else "")
    return LoadedCheckpoint(DepthAnything(config).eval(), config, tag, "untrained", {})


def _atomic_write(path: Path, write) -> Path:
    """Write via `write(tmp_path)` (pipeline.atomic: temp file, fsync, rename, fsync of the folder)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with atomic_path(path) as tmp:
            write(tmp)
    except (OSError, SafetensorError) as e:
        # A full disk surfaces as OSError from torch.save but as SafetensorError ("File too
        # large") from safetensors: both are the same user-facing failure.
        raise CheckpointError(f"could not write checkpoint {path}: {e}; the previous file is untouched") from e
    return path


def _model_and_config(model) -> tuple[DepthAnything, ModelConfig]:
    net = model.model if isinstance(model, LoadedCheckpoint) else model
    net = getattr(net, "module", net)   # DDP / DataParallel
    if not isinstance(net, DepthAnything):
        raise TypeError(f"expected a DepthAnything model or LoadedCheckpoint, got {type(model).__name__}")
    return net, net.config


def save_checkpoint(model, path: str | os.PathLike, *, model_id: str | None = None,
                    meta: dict | None = None) -> Path:
    """Write the project format (safetensors + config/model id/meta in its metadata), atomically."""
    from safetensors.torch import save_file

    net, config = _model_and_config(model)
    path = Path(path)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in net.state_dict().items()}
    metadata = {
        "format": PROJECT_FORMAT, "format_version": PROJECT_FORMAT_VERSION,
        "config": json.dumps(config.to_dict()), "model_id": model_id or path.stem,
        "meta": json.dumps(meta or {}, default=str),
    }
    return _atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))


def save_official_checkpoint(model, path: str | os.PathLike) -> Path:
    """Write an official-layout `.pth` (as the Depth Anything repos publish), atomically."""
    net, config = _model_and_config(model)
    sd = to_official_state_dict({k: v.detach().cpu() for k, v in net.state_dict().items()}, config.encoder)
    return _atomic_write(Path(path), lambda tmp: torch.save(sd, tmp))


def inspect_checkpoint(path: str | os.PathLike) -> dict:
    """What a file is: format, encoder, version/metric (and where that is known from), parameters."""
    path = Path(path)
    raw = read_checkpoint(path)
    sd = convert_official_state_dict(raw.state_dict)
    info = {"file": str(path), "bytes": path.stat().st_size, "format": raw.format,
            "encoder": infer_encoder(sd, path),
            "parameters": sum(v.numel() for v in sd.values()),
            "dtypes": sorted({str(v.dtype).removeprefix("torch.") for v in sd.values()})}
    if raw.project is not None:
        facts, known_from = raw.project["config"], "project metadata"
        info.update(model_id=raw.project["model_id"], meta=raw.project["meta"])
    else:
        facts, known_from = facts_from_name(path), "file name"
        entry = registry.by_filename(path.name)
        if entry is not None:
            info.update(registry_name=entry.name, licence=entry.licence)
    for k in ("version", "metric", "max_depth"):
        info[k] = facts.get(k)
    if info["metric"] is False:
        info["max_depth"] = None
    info["known_from"] = known_from if any(facts.get(k) is not None for k in ("version", "metric")) else "unknown"
    if info["encoder"] in ENCODERS:
        config = ModelConfig(encoder=info["encoder"])
        info["fits_model"] = not any(compare_state_dict(sd, config).values())
    return info
