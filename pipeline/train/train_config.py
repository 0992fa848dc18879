"""`TrainConfig`: every setting of a training run, its default, range and help text, validated once.

The one owner of training settings: `python -m pipeline train --help`, the train tab's form and the
run's saved settings file (pipeline/train/run_folder.py) are all read from the fields below (pipeline/train/config_fields.py
says how a field describes itself). Adding a hyperparameter = one `setting(...)` line here, plus its
use in the recipe.

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

`metric`: V2's metric fine-tuning instead: a metric model (sigmoid x `max_depth`, metres) trained on
metric ground truth only with the SiLog loss (lambda 0.5, ground truth within [min_depth, max_depth]),
AdamW (0.9, 0.999), weight decay 0.01, poly decay 0.9 (the decay default when metric). No teacher,
pseudo-labels, perturbations or feature alignment (the official metric fine-tuning has none).

`holdout` > 0 keeps the store's images in the held-out split (`in_holdout`, by image hash) out of
training: the split the train tab's teacher-vs-student comparison scores on. pipeline/store/holdout.py
owns the rule (the store applies it in its query; `in_holdout` is re-exported here for shards).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

from ..config import ENCODERS, PATCH_SIZE, VERSIONS
from ..errors import ConfigError
from ..preprocess import MAX_INPUT_SIZE
from ..ranges import Range
from ..store.holdout import in_holdout  # the rule's owner; re-exported for pipeline/train/shard_source.py
from .config_fields import describe, parse_pair, parse_ratio, setting

DECAYS = ("linear", "poly", "constant")
GT_KINDS = ("depth", "disparity")
STUDENT_INITS = ("dinov2", "checkpoint", "random")   # DINOv2 encoder + new decoder | fine-tune `init` | random
FEATURE_TARGETS = ("dinov2", "init")                 # frozen DINOv2 of the student's size | its initial encoder
LOSS_REDUCTIONS = ("mean", "sum")                    # of the labelled, pseudo-labelled, feature (and ranking) terms

SHARE = "a share in [0, 1), e.g. 0.1 for 10 %"
UNIT = "a number in [0, 1]"
BIG = 10_000_000


def _n(name: str, low: float, high: float, **kw) -> Range:
    return Range(name, low, high, **kw)


def _share(name: str) -> Range:
    return Range(name, 0.0, 1.0 - 1e-9, text=SHARE)


def _p(name: str) -> Range:
    return Range(name, 0.0, 1.0, text=UNIT)


@dataclass(frozen=True)
class TrainConfig:
    # ---- data
    out_dir: str = setting("runs/train", "run folder: checkpoints, training state, metrics", option="--out",
                           group="run", form=None)
    db: str | None = setting(None, "label store (newest accepted / corrected labels, masks, point pairs)",
                             group="data", form=None)
    data_dir: str | None = setting(None, "folder of images with same-named ground truth (.npy or 16-bit .png)",
                                   option="--data", group="data", form=None)
    gt_kind: str = setting("depth", "what the folder's ground truth holds", choices=GT_KINDS, group="data",
                           form="main", label="the folder's ground truth holds")
    unlabelled_dir: str | None = setting(None, "folder of images without labels; --teacher labels them while "
                                               "training", option="--unlabelled", group="data", form=None)
    shards: str | None = setting(None, "folder of pseudo-label shards (python -m pipeline pseudo-label --out DIR): "
                                       "their labels train as pseudo-labels beside the store's and the folder's, "
                                       "without importing them", option="--shards", group="data", form=None)
    shard_min_confidence: float | None = setting(None, "--shards: only labels with flip-consistency confidence at "
                                                       "least this (default: all)",
                                                 range=_n("shard_min_confidence", 0.0, 1.0, optional=True),
                                                 group="data", form=None)
    holdout: float = setting(0.0, "share of the store's images held out of training, chosen by image hash (the "
                                  "train tab's teacher-vs-student split); 0 = none", range=_share("holdout"),
                             group="data", form="main", label="held-out share")
    train_on_ground_truth: bool = setting(False, "store images outside the held-out split train on their imported "
                                                 "ground truth instead of their label (off: ground truth stays "
                                                 "evidence for the comparison)", group="data")
    # ---- model
    encoder: str = setting("vits", "student encoder size", choices=tuple(ENCODERS), group="model", form="main",
                           label="student encoder")
    version: str = setting("v2", "model version when not fine-tuning", choices=VERSIONS, group="model")
    student_init: str | None = setting(None, "dinov2 (the paper's: DINOv2 encoder, new decoder), checkpoint "
                                             "(fine-tune --init) or random; default: checkpoint with --init, else "
                                             "dinov2", choices=STUDENT_INITS, group="model", form=None)
    init: str | None = setting(None, "checkpoint to fine-tune (file or registry name); for a metric run a "
                                     "relative checkpoint gives its encoder only", group="model", form=None)
    encoder_init: str | None = setting(None, "DINOv2 encoder weights file for --student-init dinov2 (default: "
                                             "timm's vit_*_patch14_dinov2.lvd142m from the Hugging Face cache)",
                                       group="model", form=None)
    teacher: str | None = setting(None, "frozen teacher checkpoint for images without a label", group="model",
                                  form=None)
    feature_target: str | None = setting(None, "frozen target of feature alignment: dinov2 (the paper's) or init "
                                               "(a copy of the student's initial encoder); default dinov2",
                                         choices=FEATURE_TARGETS, group="model", form="main",
                                         label="feature-alignment target")
    dinov2: str | None = setting(None, "frozen DINOv2 weights file for --feature-target dinov2 (default: timm's, "
                                       "from the Hugging Face cache; offline and not cached is an error)",
                                 group="model", form=None)
    # ---- metric depth (V2's metric fine-tuning)
    metric: bool = setting(False, "fine-tune a metric-depth model (metres): SiLog loss on metric ground truth, "
                                  "poly decay", group="metric", form="main", label="metric depth (metres)")
    max_depth: float = setting(20.0, "metric: largest depth in metres the model predicts (20 indoor, 80 outdoor); "
                                     "ground truth beyond it is not used", range=_n("max_depth", 0.01, 1000.0),
                               group="metric", form="main", label="max depth (m)")
    min_depth: float = setting(0.001, "metric: ground truth below this depth (m) is not used",
                               range=_n("min_depth", 1e-6, 100.0), group="metric")
    silog_lambda: float = setting(0.5, "metric: SiLog loss variance weight lambda", range=_p("silog_lambda"),
                                  group="metric")
    # ---- schedule
    steps: int = setting(1000, "optimiser steps", range=_n("steps", 1, BIG, integer=True), group="schedule",
                         form="main")
    batch_size: int = setting(6, "images per process per micro-step", range=_n("batch_size", 1, 4096, integer=True),
                              group="schedule", form="main", label="batch size")
    grad_accum: int = setting(1, "micro-steps per optimiser step", range=_n("grad_accum", 1, 1024, integer=True),
                              group="schedule")
    lr_encoder: float = setting(5e-6, "encoder learning rate", range=_n("lr_encoder", 1e-9, 1.0), option="--lr",
                                group="schedule", form="main", label="encoder learning rate")
    decoder_lr_mult: float = setting(10.0, "decoder lr = encoder lr x this", range=_n("decoder_lr_mult", 1e-3, 1e4),
                                     group="schedule", form="main", label="decoder lr = encoder lr ×")
    weight_decay: float = setting(0.01, "AdamW weight decay", range=_n("weight_decay", 0.0, 10.0), group="schedule")
    warmup_steps: int = setting(0, "warm-up steps", range=_n("warmup_steps", 0, BIG, integer=True),
                                option="--warmup", group="schedule")
    decay: str | None = setting(None, "lr decay after warm-up; default linear (poly for metric runs)",
                                choices=DECAYS, group="schedule")
    poly_power: float = setting(0.9, "power of the poly decay", range=_n("poly_power", 0.01, 10.0), group="schedule")
    # ---- batch composition and augmentation
    input_size: int = setting(518, "crop size, a multiple of 14",
                              range=_n("input_size", PATCH_SIZE, MAX_INPUT_SIZE, integer=True, multiple_of=PATCH_SIZE),
                              form="main", label="crop size")
    labelled_ratio: tuple[int, int] = setting((1, 2), "labelled:pseudo-labelled images per batch", option="--ratio",
                                              form="main", label="labelled : pseudo-labelled per batch")
    pseudo_labels: bool = setting(True, "train on pseudo-labelled images (off: V1 Table 9, row 1)")
    perturbations: bool = setting(True, "colour jitter / grayscale / blur of the student's pseudo-labelled view")
    cutmix: bool = setting(True, "CutMix pseudo-labelled images (with probability cutmix_p)")
    cutmix_p: float = setting(0.5, "CutMix probability on pseudo-labelled images", range=_p("cutmix_p"))
    jitter_p: float = setting(0.8, "colour-jitter probability (UniMatch's strengths; the papers state none)",
                              range=_p("jitter_p"))
    brightness: float = setting(0.5, "colour-jitter brightness strength", range=_n("brightness", 0.0, 10.0))
    contrast: float = setting(0.5, "colour-jitter contrast strength", range=_n("contrast", 0.0, 10.0))
    saturation: float = setting(0.5, "colour-jitter saturation strength", range=_n("saturation", 0.0, 10.0))
    hue: float = setting(0.25, "colour-jitter hue strength", range=_n("hue", 0.0, 0.5))
    grayscale_p: float = setting(0.2, "grayscale probability", range=_p("grayscale_p"))
    blur_p: float = setting(0.5, "Gaussian-blur probability", range=_p("blur_p"))
    blur_sigma: tuple[float, float] = setting((0.1, 2.0), "Gaussian-blur sigma range in px (low,high)")
    # ---- loss
    loss_reduction: str = setting("mean", "mean (V1: the average of the terms present) or sum of the loss terms",
                                  choices=LOSS_REDUCTIONS, group="loss")
    gradient_weight: float = setting(2.0, "gradient-matching weight", range=_n("gradient_weight", 0.0, 1e3),
                                     group="loss")
    trim: float = setting(0.1, "share of largest-loss pixels ignored on pseudo-labels", range=_share("trim"),
                          group="loss")
    feature_alignment: bool = setting(True, "feature-alignment term (alpha = feature_alpha)", group="loss",
                                      form="main", label="feature alignment")
    feature_weight: float = setting(1.0, "feature-alignment weight, 0 = off", range=_n("feature_weight", 0.0, 1e3),
                                    group="loss")
    feature_alpha: float = setting(0.85, "feature-alignment tolerance margin", range=_n("feature_alpha", -1.0, 1.0),
                                   group="loss")
    ranking_weight: float = setting(1.0, "point-pair ranking loss weight", range=_n("ranking_weight", 0.0, 1e3),
                                    group="loss")
    # ---- run
    seed: int = setting(0, "random seed", range=_n("seed", 0, 2**31 - 1, integer=True), group="run")
    save_every: int = setting(500, "write a checkpoint every N steps", range=_n("save_every", 1, BIG, integer=True),
                              group="run", form="main", label="checkpoint every N steps")
    log_every: int = setting(1, "log every N steps", range=_n("log_every", 1, BIG, integer=True), group="run")
    device: str | None = setting(None, "cuda, cuda:1, cpu (default: cuda when available)", group="run", form=None)
    amp: bool = setting(True, "bf16 autocast (CUDA only)", group="run")
    min_items: int = setting(1, "fewest usable training images", range=_n("min_items", 1, BIG, integer=True),
                             group="run")

    def __post_init__(self):
        for s in describe(type(self)):
            self._check_setting(s)
        self._resolve_inits()
        _check(self.db or self.data_dir or self.unlabelled_dir or self.shards,
               "no training data: give --db (label store), --data (folder of image/ground-truth pairs) and/or "
               "--shards (pseudo-label shards)")
        _check(self.unlabelled_dir is None or self.teacher,
               f"--unlabelled {self.unlabelled_dir!r} needs --teacher CKPT to label those images")
        _check(self.warmup_steps < self.steps, f"warmup_steps must be in [0, steps={self.steps}), "
                                               f"got {self.warmup_steps!r}")
        ratio = self.labelled_ratio
        _check(len(ratio) == 2 and all(isinstance(r, int) and r >= 0 for r in ratio) and sum(ratio) > 0,
               f"labelled_ratio must be two whole numbers like 1:2, got {self.labelled_ratio!r}")
        sigma = tuple(float(v) for v in self.blur_sigma)
        _check(len(sigma) == 2 and 0 < sigma[0] <= sigma[1], f"blur_sigma must be (low, high) with 0 < low <= high, "
                                                             f"got {self.blur_sigma!r}")
        object.__setattr__(self, "blur_sigma", sigma)
        if self.metric:
            self._check_metric()

    def _check_setting(self, s) -> None:
        """Range, choices and type of one field (numbers given as text are read as numbers)."""
        value = getattr(self, s.name)
        if value is None and s.default is None:
            return
        if s.name == "encoder":
            _check(value in ENCODERS, f"unknown encoder {value!r}; choose one of {', '.join(ENCODERS)}")
        elif s.name == "version":
            _check(value in VERSIONS, f"unknown version {value!r}; choose v1 or v2")
        elif s.choices:
            _check(value in s.choices, f"{s.name} must be one of {', '.join(s.choices)}, got {value!r}")
        elif s.range is not None:
            object.__setattr__(self, s.name, s.range.check(value))
        elif s.kind == "bool":
            _check(isinstance(value, bool), f"{s.name} must be true or false, got {value!r}")
        elif s.kind in ("ratio", "pair"):
            _check(isinstance(value, (list, tuple)), f"{s.name} must be two numbers, got {value!r}")
            object.__setattr__(self, s.name, tuple(value))

    def _resolve_inits(self) -> None:
        """Fill student_init / feature_target / decay from what was given; refuse contradictions."""
        student = self.student_init or ("checkpoint" if self.init else "dinov2")
        _check((student == "checkpoint") == bool(self.init),
               f"student_init {student!r} and init {self.init!r} disagree: fine-tuning needs --init CKPT "
               "(student_init 'checkpoint'); 'dinov2' and 'random' start without one")
        _check(not (self.encoder_init and student != "dinov2"),
               f"--encoder-init {self.encoder_init!r} is for student_init 'dinov2', not {student!r}")
        target = self.feature_target or "dinov2"
        _check(not (self.dinov2 and target != "dinov2"), f"--dinov2 {self.dinov2!r} is for feature_target 'dinov2'")
        object.__setattr__(self, "student_init", student)
        object.__setattr__(self, "feature_target", target)
        object.__setattr__(self, "decay", self.decay or ("poly" if self.metric else "linear"))

    def _check_metric(self) -> None:
        _check(self.version == "v2", "metric models exist only for version v2; drop --version v1 or --metric")
        _check(not (self.data_dir and self.gt_kind != "depth"),
               "metric fine-tuning needs ground truth in metres: --gt-kind depth (disparity has no metric scale)")
        _check(not self.shards, "metric fine-tuning trains on metric ground truth only; drop --shards (pseudo-labels "
                                "are relative disparity)")
        _check(not self.unlabelled_dir and not self.teacher,
               "metric fine-tuning trains on metric ground truth only (V2's recipe): drop --unlabelled / --teacher")
        _check(self.min_depth < self.max_depth,
               f"min_depth ({self.min_depth} m) must be below max_depth ({self.max_depth} m)")

    @property
    def uses_feature_alignment(self) -> bool:
        return self.feature_alignment and self.feature_weight > 0 and self.pseudo_labels and not self.metric

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
        """Settings by field name (unknown names refused); fields left out take the defaults. Values may be
        given as a person types them (numbers as text, '1:2', '0.1,2.0')."""
        specs = {s.name: s for s in describe(cls)}
        unknown = sorted(set(d) - set(specs))
        if unknown:
            raise ConfigError(f"unknown training settings {unknown}; known: {sorted(specs)}")
        return cls(**{k: specs[k].parse(v) for k, v in d.items()})

    @staticmethod
    def saved_settings(d: dict) -> dict:
        """A run's saved settings (its settings file) as this code reads them. One written before
        `feature_target` existed gets what that code did: feature target = the student's initial
        encoder unless --dinov2 was given, the student as initialised then, and the terms summed."""
        d = dict(d)
        if "feature_target" not in d:
            d["feature_target"] = "dinov2" if d.get("dinov2") else "init"
            d.setdefault("student_init", "checkpoint" if d.get("init") else
                         "dinov2" if d.get("encoder_init") else "random")
            d.setdefault("loss_reduction", "sum")
        return d


SETTINGS = describe(TrainConfig)


def _check(ok, message: str) -> None:
    if not ok:
        raise ConfigError(message)


__all__ = ["TrainConfig", "SETTINGS", "in_holdout", "parse_ratio", "parse_pair"]
