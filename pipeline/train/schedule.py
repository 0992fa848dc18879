"""Optimiser and learning-rate schedule: AdamW, encoder lr and decoder lr x10, warm-up then decay.

Two parameter groups: the DINOv2 encoder (`encoder.*` / `pretrained.*`), pretrained, at
`lr_encoder`; everything else (the DPT decoder, randomly initialised in the published recipe)
at `lr_encoder * decoder_lr_mult`. The multiplier from `lr_factor` is shared by both groups:
linear warm-up from 0 over `warmup_steps`, then linear decay to 0 or poly decay
(1 - t)^power (V2's metric fine-tuning uses 0.9), or constant.
"""
from __future__ import annotations

from functools import partial

import torch
from torch import nn

from .train_config import TrainConfig


def is_encoder_param(name: str) -> bool:
    return name.startswith(("encoder.", "pretrained.", "module.encoder.", "model.encoder."))


def param_groups(model: nn.Module, cfg: TrainConfig) -> list[dict]:
    enc, dec = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (enc if is_encoder_param(name) or ".encoder." in name else dec).append(p)
    return [
        {"params": enc, "lr": cfg.lr_encoder, "name": "encoder"},
        {"params": dec, "lr": cfg.lr_decoder, "name": "decoder"},
    ]


def lr_factor(step: int, *, total: int, warmup: int, decay: str, power: float = 0.9) -> float:
    """Multiplier of the base lr at optimiser step `step` (0-based)."""
    if warmup and step < warmup:
        return (step + 1) / warmup
    if decay == "constant":
        return 1.0
    t = (step - warmup) / max(1, total - warmup)           # 0 at the end of warm-up, -> 1
    t = min(max(t, 0.0), 1.0)
    return (1.0 - t) if decay == "linear" else (1.0 - t) ** power


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    return torch.optim.AdamW(param_groups(model, cfg), betas=(0.9, 0.999), weight_decay=cfg.weight_decay)


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig) -> torch.optim.lr_scheduler.LambdaLR:
    fn = partial(lr_factor, total=cfg.steps, warmup=cfg.warmup_steps, decay=cfg.decay, power=cfg.poly_power)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, fn)
