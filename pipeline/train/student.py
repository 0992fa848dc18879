"""The networks of a training run: the student, the frozen teacher and the frozen DINOv2 encoder.

- Student (`student_init`): "dinov2" (the paper's: DINOv2 encoder weights of the student's size,
  `--encoder-init FILE` or timm's `vit_*_patch14_dinov2.lvd142m` through the Hugging Face cache,
  new decoder), "checkpoint" (fine-tune `--init`, any format `pipeline.weights.loading` reads; another
  encoder size is refused) or "random" (tests and experiments). A new decoder's output ReLU starts
  alive: its last bias is made positive (with PyTorch's default init about half of all draws end in
  a negative bias, every output is 0 and no gradient ever flows; the run would learn nothing).
- Teacher: any Depth Anything checkpoint, eval mode, no gradients; it labels the clean view of
  images that have no stored label.
- Frozen target for feature alignment (`feature_target`): "dinov2" (`--dinov2 FILE` or timm's
  weights as above; offline and not cached: a clear error naming both ways out) or "init", a copy
  of the student's own initial encoder, only when asked for (after a fine-tune its tokens start
  above the 0.85 margin, so the term is ~0). Both choices are recorded in the run's metadata.
"""
from __future__ import annotations

import copy
from pathlib import Path

import torch
from torch import nn

from ..config import PATCH_SIZE, ModelConfig
from ..errors import CheckpointError
from ..model import DepthAnything
from ..model.encoder import DinoV2Encoder
from ..weights.loading import load_model, read_checkpoint
from ..weights.state_dict import convert_official_state_dict
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
    Anything one. Read by pipeline.weights.loading (weights-only loading, wrapper dicts, vitg SwiGLU
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


HUB_TAG = "lvd142m"                 # timm's DINOv2 weights (the DINOv2 paper's LVD-142M pre-training)
LAST_BIAS = "depth_head.scratch.output_conv2.2.bias"   # the conv feeding the output ReLU (official key)


def dinov2_repo(encoder: str) -> str:
    """timm's Hub repo of the DINOv2 weights of an encoder size."""
    from ..config import ENCODERS
    return f"timm/{ENCODERS[encoder].timm_name}.{HUB_TAG}"


def dinov2_cached(encoder: str) -> bool:
    """The DINOv2 weights of this size are in the local Hugging Face cache (no network is asked)."""
    from huggingface_hub import try_to_load_from_cache

    from ..config import ENCODERS
    return ENCODERS[encoder].public and isinstance(try_to_load_from_cache(dinov2_repo(encoder), "model.safetensors"),
                                                   str)


def dinov2_weights(encoder: str) -> Path:
    """The DINOv2 weights file of an encoder size from timm's Hub repo (cache first, then download).
    CheckpointError (what to pass instead) when offline and not cached, or for test-only sizes."""
    from huggingface_hub import hf_hub_download, try_to_load_from_cache

    from ..config import ENCODERS
    spec = ENCODERS[encoder]
    if not spec.public:
        raise CheckpointError(f"{encoder} is a test-only size with no released DINOv2 weights; pass a weights file "
                              "(--encoder-init / --dinov2 FILE) or go without (--student-init random, "
                              "--feature-target init)")
    repo = dinov2_repo(encoder)
    hit = try_to_load_from_cache(repo, "model.safetensors")
    if isinstance(hit, str):
        return Path(hit)
    try:
        return Path(hf_hub_download(repo, "model.safetensors"))
    except KeyboardInterrupt:
        raise
    except Exception as e:  # offline, DNS, HTTP errors: all mean "no file"
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise CheckpointError(
            f"DINOv2 weights for {encoder} ({repo}/model.safetensors) are not cached and could not be downloaded "
            f"({type(e).__name__}: {reason}). Download them where there is internet and pass the file "
            "(--encoder-init FILE for the student, --dinov2 FILE for feature alignment), or choose explicitly to "
            "go without: --student-init random / --feature-target init (the run records the choice)") from e


def revive_output(model: DepthAnything) -> bool:
    """Make a new decoder's last bias positive so its output ReLU starts alive; True if it changed."""
    params = dict(model.named_parameters())
    bias = params.get(LAST_BIAS)
    if bias is None or model.config.metric:
        return False
    with torch.no_grad():
        negative = bool((bias < 0).any())
        bias.abs_()
    return negative


def build_student(cfg: TrainConfig) -> tuple[DepthAnything, str]:
    """(student in train mode on CPU, a description of where its weights came from)."""
    if cfg.student_init == "checkpoint":
        loaded = load_model(cfg.init, encoder=cfg.encoder)
        if loaded.config.metric:
            raise CheckpointError(f"{cfg.init} is a metric-depth model; a relative run starts from a relative "
                                  f"checkpoint (fine-tune it as a metric run: --metric)")
        return loaded.model.train(), f"fine-tuned from {loaded.model_id}"
    model = DepthAnything(ModelConfig(encoder=cfg.encoder, version=cfg.version))
    flipped = revive_output(model)
    decoder = "decoder new" + (" (output bias made positive)" if flipped else "")
    if cfg.student_init == "dinov2":
        path = Path(cfg.encoder_init) if cfg.encoder_init else dinov2_weights(cfg.encoder)
        load_encoder_weights(model.encoder, path)
        return model.train(), f"DINOv2 encoder from {path.name}, {decoder}"
    return model.train(), f"random initialisation, {decoder}"


def freeze(module: nn.Module) -> nn.Module:
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return module


def build_frozen_dinov2(cfg: TrainConfig, student: DepthAnything) -> tuple[DinoV2Encoder, str]:
    """(the frozen feature-alignment target, where its weights came from): DINOv2 of the student's
    size (feature_target 'dinov2') or, only when asked, a copy of the student's initial encoder."""
    if cfg.feature_target == "init":
        return freeze(copy.deepcopy(student.encoder)), "init: a frozen copy of the student's initial encoder"
    path = Path(cfg.dinov2) if cfg.dinov2 else dinov2_weights(cfg.encoder)
    enc = DinoV2Encoder(student.config.spec)
    load_encoder_weights(enc, path)
    return freeze(enc), f"dinov2: {path}"


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
