"""The networks of a training run: the student, the frozen teacher and the frozen DINOv2 encoder.

- Student: fine-tuned from a checkpoint (`--init`, any format `pipeline.checkpoints` reads; a
  checkpoint of another encoder size is refused), or initialised from DINOv2 encoder weights
  (`--encoder-init`, decoder random, as in the paper), or random (tests / experiments).
- Teacher: any Depth Anything checkpoint, eval mode, no gradients; it labels the clean view of
  images that have no stored label.
- Frozen DINOv2 for feature alignment: same size as the student's encoder; separate weights
  (`--dinov2`) or, without them, a frozen copy of the student's initial encoder.
"""
from __future__ import annotations

import copy
from pathlib import Path

import torch
from torch import nn

from ..checkpoints import convert_official_state_dict, load_model, read_checkpoint
from ..config import PATCH_SIZE, ModelConfig
from ..errors import CheckpointError
from ..model import DepthAnything
from ..model.encoder import DinoV2Encoder
from .train_config import TrainConfig

ENCODER_PREFIXES = ("encoder.pretrained.", "pretrained.", "backbone.", "encoder.")


class StudentForward(nn.Module):
    """Wraps DepthAnything so one forward (the one DDP sees) returns the depth and the last features.

    `DepthAnything.forward(x, return_features=True)`: (B, 3, H, W) -> ((B, H, W) prediction,
    (B, h*w, C) normalised patch tokens of the encoder's last block, for the feature-alignment loss).
    """

    def __init__(self, model: DepthAnything):
        super().__init__()
        self.model = model
        layers = model.config.layers
        if layers[-1] != model.config.spec.depth - 1:
            raise ValueError(f"expected the last tapped block to be the last block, got {layers}")

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out, feats = self.model(x, return_features=True)          # (B, H, W), 4 x (B, h*w, C)
        return out, feats[-1]


def encoder_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """DINOv2 weights in timm's key layout (no prefix), from an official DINOv2 file or a Depth
    Anything one. Read by pipeline.checkpoints (weights-only loading, wrapper dicts, vitg SwiGLU
    `mlp.w12/w3` -> `mlp.fc1/fc2`), so every format a checkpoint may come in is read the same way."""
    if not path.is_file():
        raise CheckpointError(f"encoder weights {path} not found; give a DINOv2 .pth/.safetensors file")
    out = {}
    for k, v in convert_official_state_dict(read_checkpoint(path).state_dict).items():
        if k.startswith("depth_head.") or k == "mask_token" or k.endswith(".mask_token"):
            continue
        for prefix in ENCODER_PREFIXES:
            if k.startswith(prefix):
                k = k[len(prefix):]
                break
        out[k] = v
    return out


def load_encoder_weights(encoder: DinoV2Encoder, path: str | Path) -> None:
    path = Path(path)
    sd = encoder_state_dict(path)
    target = encoder.pretrained.state_dict()
    wrong = [k for k in target if k in sd and tuple(sd[k].shape) != tuple(target[k].shape)]
    missing = [k for k in target if k not in sd]
    if wrong or missing:
        detail = f"{wrong[0]} is {tuple(sd[wrong[0]].shape)}, expected {tuple(target[wrong[0]].shape)}" if wrong \
            else f"missing {missing[:3]}"
        raise CheckpointError(f"{path} does not fit the {encoder.spec.name} encoder ({detail}); "
                              f"give DINOv2 weights of the same size as --encoder")
    encoder.pretrained.load_state_dict({k: sd[k] for k in target})


def build_student(cfg: TrainConfig) -> tuple[DepthAnything, str]:
    """(student in train mode on CPU, a description of where its weights came from)."""
    if cfg.init:
        loaded = load_model(cfg.init, encoder=cfg.encoder)
        if loaded.config.metric:
            raise CheckpointError(f"{cfg.init} is a metric-depth model; training supports relative "
                                  f"(disparity) models only; start from a relative checkpoint")
        return loaded.model.train(), f"fine-tuned from {loaded.model_id}"
    model = DepthAnything(ModelConfig(encoder=cfg.encoder, version=cfg.version))
    if cfg.encoder_init:
        load_encoder_weights(model.encoder, cfg.encoder_init)
        return model.train(), f"encoder from {Path(cfg.encoder_init).name}, decoder random"
    return model.train(), "random initialisation"


def freeze(module: nn.Module) -> nn.Module:
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return module


def build_frozen_dinov2(cfg: TrainConfig, student: DepthAnything) -> DinoV2Encoder:
    """The frozen encoder for feature alignment (a copy of the student's initial encoder by default)."""
    if cfg.dinov2:
        enc = DinoV2Encoder(student.config.spec)
        load_encoder_weights(enc, cfg.dinov2)
    else:
        enc = copy.deepcopy(student.encoder)
    return freeze(enc)


def build_teacher(cfg: TrainConfig) -> DepthAnything | None:
    if not cfg.teacher:
        return None
    loaded = load_model(cfg.teacher)
    if loaded.config.metric:
        raise CheckpointError(f"teacher {cfg.teacher} predicts metric depth; use a relative (disparity) teacher")
    return freeze(loaded.model)


def freeze_unused(forward: StudentForward) -> list[str]:
    """Freeze parameters the forward never uses (the official DPT head has one: refinenet4's
    first residual unit), so DDP needs no unused-parameter search. Returns their names."""
    x = torch.zeros(1, 3, 2 * PATCH_SIZE, 2 * PATCH_SIZE, device=next(forward.parameters()).device)
    pred, feats = forward(x)
    (pred.sum() + feats.sum()).backward()
    unused = [n for n, p in forward.named_parameters() if p.requires_grad and p.grad is None]
    for n, p in forward.named_parameters():
        p.grad = None
        if n in unused:
            p.requires_grad_(False)
    return unused


@torch.no_grad()
def frozen_features(encoder: DinoV2Encoder, x: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) normalised -> (B, h*w, C) last-block normalised patch tokens."""
    return encoder(x, (encoder.spec.depth - 1,))[-1]
