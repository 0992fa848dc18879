"""`TrainConfig`: every setting of a training run, validated once, stored with each checkpoint.

Defaults follow the published recipe (../shared/TRAINING-NOTES.md): AdamW, encoder lr 5e-6,
decoder 10x, 518x518 crops, labelled:pseudo-labelled = 1:2 per batch, V2 loss (affine-invariant
+ 2 x gradient matching, 10 % trimming on pseudo-labels), feature alignment with alpha 0.85,
CutMix p = 0.5 on pseudo-labelled images.

`holdout` > 0 keeps the store's images in the held-out split (`in_holdout`, by image hash) out of
training: the split the train tab's teacher-vs-student comparison scores on. This module owns the
rule; pipeline/holdout_compare.py uses it.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from ..config import ENCODERS, PATCH_SIZE, VERSIONS
from ..errors import ConfigError

DECAYS = ("linear", "poly", "constant")
GT_KINDS = ("depth", "disparity")


@dataclass(frozen=True)
class TrainConfig:
    out_dir: str = "runs/train"
    # data
    db: str | None = None                  # label store (newest accepted/corrected revisions)
    data_dir: str | None = None            # folder of image / ground-truth pairs
    gt_kind: str = "depth"                 # what the folder's ground-truth files hold
    unlabelled_dir: str | None = None      # images without labels: the teacher labels them on the fly
    holdout: float = 0.0                   # share of the store's images held out (in_holdout), 0 = none
    # model
    encoder: str = "vits"
    version: str = "v2"
    init: str | None = None                # checkpoint to fine-tune (any format load_model reads)
    encoder_init: str | None = None        # DINOv2 encoder weights (student init when no --init)
    teacher: str | None = None             # checkpoint that labels unlabelled images (frozen)
    dinov2: str | None = None              # frozen DINOv2 for feature alignment (default: copy of the student's initial encoder)
    # schedule
    steps: int = 1000
    batch_size: int = 6                    # per process and micro-step
    grad_accum: int = 1
    lr_encoder: float = 5e-6
    decoder_lr_mult: float = 10.0
    weight_decay: float = 0.01
    warmup_steps: int = 0
    decay: str = "linear"
    poly_power: float = 0.9
    # batch composition and augmentation
    input_size: int = 518
    labelled_ratio: tuple[int, int] = (1, 2)   # labelled : pseudo-labelled per batch
    cutmix_p: float = 0.5
    # loss
    gradient_weight: float = 2.0
    trim: float = 0.1
    feature_weight: float = 1.0
    feature_alpha: float = 0.85
    ranking_weight: float = 1.0
    # run
    seed: int = 0
    save_every: int = 500
    log_every: int = 1
    device: str | None = None              # None: cuda when available, else cpu
    amp: bool = True                       # bf16 autocast (CUDA only)
    min_items: int = 1

    def __post_init__(self):
        _check(self.encoder in ENCODERS, f"unknown encoder {self.encoder!r}; choose one of {', '.join(ENCODERS)}")
        _check(self.version in VERSIONS, f"unknown version {self.version!r}; choose v1 or v2")
        _check(self.db or self.data_dir or self.unlabelled_dir,
               "no training data: give --db (label store) and/or --data (folder of image/ground-truth pairs)")
        _check(self.unlabelled_dir is None or self.teacher,
               f"--unlabelled {self.unlabelled_dir!r} needs --teacher CKPT to label those images")
        _check(isinstance(self.holdout, (int, float)) and 0 <= self.holdout < 1,
               f"holdout must be a share in [0, 1), e.g. 0.1 for 10 %, got {self.holdout!r}")
        _check(self.gt_kind in GT_KINDS, f"gt_kind must be depth or disparity, got {self.gt_kind!r}")
        for name in ("steps", "batch_size", "grad_accum", "save_every", "log_every", "min_items"):
            value = getattr(self, name)
            _check(isinstance(value, int) and value >= 1, f"{name} must be a whole number >= 1, got {value!r}")
        _check(isinstance(self.warmup_steps, int) and 0 <= self.warmup_steps < self.steps,
               f"warmup_steps must be in [0, steps={self.steps}), got {self.warmup_steps!r}")
        _check(self.lr_encoder > 0 and self.decoder_lr_mult > 0,
               f"learning rates must be positive (lr_encoder={self.lr_encoder!r}, decoder_lr_mult={self.decoder_lr_mult!r})")
        _check(self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay!r}")
        _check(self.decay in DECAYS, f"decay must be one of {', '.join(DECAYS)}, got {self.decay!r}")
        _check(self.input_size >= PATCH_SIZE and self.input_size % PATCH_SIZE == 0,
               f"input_size must be a positive multiple of {PATCH_SIZE} (e.g. 518), got {self.input_size!r}")
        ratio = tuple(self.labelled_ratio)
        _check(len(ratio) == 2 and all(isinstance(r, int) and r >= 0 for r in ratio) and sum(ratio) > 0,
               f"labelled_ratio must be two whole numbers like 1:2, got {self.labelled_ratio!r}")
        object.__setattr__(self, "labelled_ratio", ratio)
        _check(0 <= self.cutmix_p <= 1, f"cutmix_p must be in [0, 1], got {self.cutmix_p!r}")
        _check(0 <= self.trim < 1, f"trim must be in [0, 1), got {self.trim!r}")
        _check(-1 <= self.feature_alpha <= 1, f"feature_alpha must be in [-1, 1], got {self.feature_alpha!r}")
        for name in ("gradient_weight", "feature_weight", "ranking_weight"):
            _check(getattr(self, name) >= 0, f"{name} must be >= 0, got {getattr(self, name)!r}")

    @property
    def lr_decoder(self) -> float:
        return self.lr_encoder * self.decoder_lr_mult

    def to_dict(self) -> dict:
        d = asdict(self)
        d["labelled_ratio"] = list(self.labelled_ratio)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"unknown training settings {unknown}; known: {sorted(known)}")
        d = dict(d)
        if "labelled_ratio" in d:
            d["labelled_ratio"] = tuple(d["labelled_ratio"])
        return cls(**d)


def holdout_position(sha256: str) -> float:
    """An image's place in [0, 1) from its content hash (sha256 hex of the image bytes, first 64 bits)."""
    return int(sha256[:16], 16) / float(1 << 64)


def in_holdout(sha256: str, fraction: float) -> bool:
    """The held-out split: the same on every call and machine, nested as `fraction` grows."""
    return holdout_position(sha256) < fraction


def parse_ratio(text: str) -> tuple[int, int]:
    """'1:2' -> (1, 2). Raises ConfigError quoting the text."""
    try:
        a, b = (int(x) for x in str(text).split(":"))
    except ValueError:
        raise ConfigError(f"ratio must look like 1:2 (labelled:pseudo-labelled), got {text!r}") from None
    return a, b


def _check(ok, message: str) -> None:
    if not ok:
        raise ConfigError(message)
