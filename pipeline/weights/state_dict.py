"""State dicts of the network: official keys <-> this model's keys, the encoder from the shapes, the
keys and shapes a config expects (on the meta device), and whether weights fit a config. Values pass
through untouched, so the same functions read shape manifests (the parity fixtures)."""
from __future__ import annotations

import os
import re

import torch

from ..config import ENCODERS, ModelConfig
from ..errors import CheckpointError
from ..model import DepthAnything

DROPPED_KEYS = ("pretrained.mask_token",)   # DINOv2 training-only token, unused at inference
# official vitg SwiGLU names -> timm names (shapes identical: w12 packs both gates)
SWIGLU_RENAMES = ((".mlp.w12.", ".mlp.fc1."), (".mlp.w3.", ".mlp.fc2."))


# ----------------------------------------------------------------------------- key conversion

def convert_official_state_dict(sd: dict) -> dict:
    """Official keys -> this model's keys: drop mask_token, vitg `mlp.w12/w3` -> `mlp.fc1/fc2`.

    Values are passed through untouched, so this also converts shape manifests.
    """
    out = {}
    for k, v in sd.items():
        k = k.removeprefix("module.")
        if k in DROPPED_KEYS:
            continue
        for old, new in SWIGLU_RENAMES:
            k = k.replace(old, new)
        out[k] = v
    return out


def to_official_state_dict(sd: dict, encoder: str) -> dict:
    """This model's keys -> the official `.pth` layout (mask_token restored, vitg SwiGLU names)."""
    out = {}
    for k, v in sd.items():
        if encoder == "vitg":
            for official, ours in SWIGLU_RENAMES:
                k = k.replace(ours, official)
        out[k] = v
    ref = out.get("pretrained.cls_token")
    if ref is not None:
        out["pretrained.mask_token"] = torch.zeros(1, ref.shape[-1], dtype=ref.dtype)
    return out


def _shape(v) -> tuple[int, ...]:
    return tuple(v.shape) if hasattr(v, "shape") else tuple(v)


def infer_encoder(sd: dict, path: str | os.PathLike = "checkpoint") -> str:
    """Encoder size from the shapes (embed dim, number of blocks) of a converted or official state dict."""
    if "pretrained.cls_token" not in sd:
        hint = " (this looks like a Hugging Face transformers checkpoint; use the original .pth)" \
            if any(k.startswith("backbone.") for k in sd) else ""
        raise CheckpointError(f"{path}: not a Depth Anything checkpoint: no 'pretrained.cls_token' key "
                              f"(keys start {sorted(sd)[:3]}){hint}")
    dim = _shape(sd["pretrained.cls_token"])[-1]
    depth = 1 + max((int(m.group(1)) for k in sd if (m := re.match(r"pretrained\.blocks\.(\d+)\.", k))), default=-1)
    for name, spec in ENCODERS.items():
        if spec.embed_dim == dim and spec.depth == depth:
            return name
    raise CheckpointError(f"{path}: the encoder has width {dim} and {depth} blocks, which matches no known "
                          f"size ({', '.join(f'{n}: {s.embed_dim}x{s.depth}' for n, s in ENCODERS.items())})")


def expected_shapes(config: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Every state-dict key and shape of the model for `config`, built on the meta device (no memory)."""
    with torch.device("meta"):
        model = DepthAnything(config)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def compare_state_dict(sd: dict, config: ModelConfig) -> dict[str, list]:
    """Differences between a converted state dict (or shape manifest) and the model: missing, unexpected, shape."""
    want = expected_shapes(config)
    return {
        "missing": sorted(set(want) - set(sd)),
        "unexpected": sorted(set(sd) - set(want)),
        "shape": sorted((k, _shape(sd[k]), want[k]) for k in set(sd) & set(want) if _shape(sd[k]) != want[k]),
    }


def check_fits(sd: dict, config: ModelConfig, path) -> None:
    diff = compare_state_dict(sd, config)
    if any(diff.values()):
        parts = [f"{len(v)} {k} (e.g. {v[0]})" for k, v in diff.items() if v]
        raise CheckpointError(f"{path}: the weights do not fit a {describe(config)} model: {'; '.join(parts)}")


def describe(config: ModelConfig) -> str:
    kind = f"metric (max depth {config.max_depth:g} m)" if config.metric else "relative"
    return f"{config.encoder} {config.version.upper()} {kind}"
