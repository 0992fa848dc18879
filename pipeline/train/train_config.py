"""`TrainConfig`: every setting of a training run, validated once, stored with each checkpoint.

Defaults follow the published recipe (../shared/TRAINING-NOTES.md): the student starts from
DINOv2 encoder weights of its size with a new decoder (V1: "re-initialised from DINOv2, not from
the teacher"; `student_init`), AdamW, encoder lr 5e-6, decoder 10x, 518x518 crops,
labelled:pseudo-labelled = 1:2 per batch, V2 loss (affine-invariant + 2 x gradient matching, 10 %
trimming of pseudo-labelled pixels, both terms), feature alignment to a frozen DINOv2 of the
student's size with alpha 0.85 (`feature_target`), strong perturbations (UniMatch's colour
jitter, grayscale, blur) and CutMix p = 0.5 on pseudo-labelled images, and the V1 total loss:
the mean of the labelled, pseudo-labelled and feature terms (`loss_reduction`).

Switches for the V1 Table 9 ablation: `pseudo_labels`, `perturbations`, `cutmix`,
`feature_alignment` (labelled only / + pseudo-labels / + perturbations / + feature alignment).

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
STUDENT_INITS = ("dinov2", "checkpoint", "random")   # DINOv2 encoder + new decoder | fine-tune `init` | random
FEATURE_TARGETS = ("dinov2", "init")                 # frozen DINOv2 of the student's size | its initial encoder
LOSS_REDUCTIONS = ("mean", "sum")                    # of the labelled, pseudo-labelled, feature (and ranking) terms


@dataclass(frozen=True)
class TrainConfig:
    out_dir: str = "runs/train"
    # data
    db: str | None = None                  # label store (newest accepted/corrected revisions)
    data_dir: str | None = None            # folder of image / ground-truth pairs
    gt_kind: str = "depth"                 # what the folder's ground-truth files hold
    unlabelled_dir: str | None = None      # images without labels: the teacher labels them on the fly
    holdout: float = 0.0                   # share of the store's images held out (in_holdout), 0 = none
    train_on_ground_truth: bool = False    # store images outside the held-out split train on their imported GT
    # model
    encoder: str = "vits"
    version: str = "v2"
    student_init: str | None = None        # STUDENT_INITS; None: "checkpoint" with `init`, else "dinov2"
    init: str | None = None                # checkpoint to fine-tune (any format load_model reads)
    encoder_init: str | None = None        # DINOv2 encoder weights file (default: timm's, via the Hub cache)
    teacher: str | None = None             # checkpoint that labels unlabelled images (frozen)
    feature_target: str | None = None      # FEATURE_TARGETS; None: "dinov2"
    dinov2: str | None = None              # frozen DINOv2 weights file (default: timm's, via the Hub cache)
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
    pseudo_labels: bool = True             # off: labelled images only (V1 Table 9, row 1)
    perturbations: bool = True             # colour jitter / grayscale / blur of the student's pseudo-labelled view
    cutmix: bool = True                    # CutMix of pseudo-labelled images (with probability cutmix_p)
    cutmix_p: float = 0.5
    jitter_p: float = 0.8                  # UniMatch's strengths (the papers do not state theirs)
    brightness: float = 0.5
    contrast: float = 0.5
    saturation: float = 0.5
    hue: float = 0.25
    grayscale_p: float = 0.2
    blur_p: float = 0.5
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    # loss
    loss_reduction: str = "mean"           # LOSS_REDUCTIONS: V1 averages the terms present in the step
    gradient_weight: float = 2.0
    trim: float = 0.1
    feature_alignment: bool = True         # off: no feature term (V1 Table 9, rows 1-3)
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
        self._resolve_inits()
        self._check_recipe()
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

    def _resolve_inits(self) -> None:
        """Fill student_init / feature_target from what was given; refuse contradictions."""
        student = self.student_init or ("checkpoint" if self.init else "dinov2")
        _check(student in STUDENT_INITS, f"student_init must be one of {', '.join(STUDENT_INITS)}, got {student!r}")
        _check((student == "checkpoint") == bool(self.init),
               f"student_init {student!r} and init {self.init!r} disagree: fine-tuning needs --init CKPT "
               "(student_init 'checkpoint'); 'dinov2' and 'random' start without one")
        _check(not (self.encoder_init and student != "dinov2"),
               f"--encoder-init {self.encoder_init!r} is for student_init 'dinov2', not {student!r}")
        target = self.feature_target or "dinov2"
        _check(target in FEATURE_TARGETS, f"feature_target must be one of {', '.join(FEATURE_TARGETS)}, got {target!r}")
        _check(not (self.dinov2 and target != "dinov2"), f"--dinov2 {self.dinov2!r} is for feature_target 'dinov2'")
        object.__setattr__(self, "student_init", student)
        object.__setattr__(self, "feature_target", target)

    def _check_recipe(self) -> None:
        _check(self.loss_reduction in LOSS_REDUCTIONS,
               f"loss_reduction must be one of {', '.join(LOSS_REDUCTIONS)}, got {self.loss_reduction!r}")
        for name in ("jitter_p", "grayscale_p", "blur_p"):
            _check(0 <= getattr(self, name) <= 1, f"{name} must be in [0, 1], got {getattr(self, name)!r}")
        for name in ("brightness", "contrast", "saturation"):
            _check(getattr(self, name) >= 0, f"{name} must be >= 0, got {getattr(self, name)!r}")
        _check(0 <= self.hue <= 0.5, f"hue must be in [0, 0.5], got {self.hue!r}")
        sigma = tuple(float(v) for v in self.blur_sigma)
        _check(len(sigma) == 2 and 0 < sigma[0] <= sigma[1], f"blur_sigma must be (low, high) with 0 < low <= high, "
                                                             f"got {self.blur_sigma!r}")
        object.__setattr__(self, "blur_sigma", sigma)

    @property
    def uses_feature_alignment(self) -> bool:
        return self.feature_alignment and self.feature_weight > 0 and self.pseudo_labels

    @property
    def lr_decoder(self) -> float:
        return self.lr_encoder * self.decoder_lr_mult

    def to_dict(self) -> dict:
        d = asdict(self)
        d["labelled_ratio"] = list(self.labelled_ratio)
        d["blur_sigma"] = list(self.blur_sigma)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        """Settings by field name (unknown names refused); fields left out take the defaults."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"unknown training settings {unknown}; known: {sorted(known)}")
        d = dict(d)
        for key in ("labelled_ratio", "blur_sigma"):
            if key in d:
                d[key] = tuple(d[key])
        return cls(**d)

    @staticmethod
    def saved_settings(d: dict) -> dict:
        """A run's saved settings (train_config.json) as this code reads them. One written before
        `feature_target` existed gets what that code did: feature target = the student's initial
        encoder unless --dinov2 was given, the student as initialised then, and the terms summed."""
        d = dict(d)
        if "feature_target" not in d:
            d["feature_target"] = "dinov2" if d.get("dinov2") else "init"
            d.setdefault("student_init", "checkpoint" if d.get("init") else
                         "dinov2" if d.get("encoder_init") else "random")
            d.setdefault("loss_reduction", "sum")
        return d


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
