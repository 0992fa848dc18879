"""`python -m pipeline train`: train a student on the store's curated labels and/or a folder.

    python -m pipeline train --db studio.db --encoder vits --init teacher.pth --steps 2000 \\
        --batch-size 6 --out runs/student1
    torchrun --nproc-per-node=4 -m pipeline train --db studio.db ... --out runs/student1
    python -m pipeline train --out runs/student1 --resume          # continue where it stopped

With --resume the run's saved settings (OUT/train_config.json) are used; options given on the
command line override them (e.g. --steps to train longer, --device).
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from ..errors import ConfigError
from ..train.train_config import TrainConfig, parse_ratio

HELP = "train a student model (teacher-student recipe) on curated labels; works under torchrun"

# option -> TrainConfig field (all options default to None: "not given")
FIELDS = {
    "db": "db", "data": "data_dir", "gt_kind": "gt_kind", "unlabelled": "unlabelled_dir", "encoder": "encoder",
    "version": "version", "init": "init", "encoder_init": "encoder_init", "teacher": "teacher", "dinov2": "dinov2",
    "steps": "steps", "batch_size": "batch_size", "grad_accum": "grad_accum", "lr": "lr_encoder",
    "decoder_lr_mult": "decoder_lr_mult", "weight_decay": "weight_decay", "warmup": "warmup_steps",
    "decay": "decay", "input_size": "input_size", "ratio": "labelled_ratio", "cutmix_p": "cutmix_p",
    "gradient_weight": "gradient_weight", "trim": "trim", "feature_weight": "feature_weight",
    "feature_alpha": "feature_alpha", "ranking_weight": "ranking_weight", "seed": "seed",
    "save_every": "save_every", "log_every": "log_every", "device": "device", "out": "out_dir",
    "holdout": "holdout", "train_on_ground_truth": "train_on_ground_truth", "student_init": "student_init",
    "feature_target": "feature_target", "loss_reduction": "loss_reduction", "pseudo_labels": "pseudo_labels",
    "perturbations": "perturbations", "cutmix": "cutmix", "feature_alignment": "feature_alignment",
    "jitter_p": "jitter_p", "brightness": "brightness", "contrast": "contrast", "saturation": "saturation",
    "hue": "hue", "grayscale_p": "grayscale_p", "blur_p": "blur_p", "blur_sigma": "blur_sigma",
}
SWITCH = argparse.BooleanOptionalAction        # --x / --no-x; unset = the config's (or the resumed run's) value


def parse_pair(text: str) -> tuple[float, float]:
    """'0.1,2.0' -> (0.1, 2.0). Raises ConfigError quoting the text."""
    try:
        lo, hi = (float(x) for x in str(text).split(","))
    except ValueError:
        raise ConfigError(f"expected two numbers like 0.1,2.0, got {text!r}") from None
    return lo, hi


def add_arguments(p: argparse.ArgumentParser) -> None:
    d = TrainConfig.__dataclass_fields__
    g = p.add_argument_group("data")
    g.add_argument("--db", help="label store (newest accepted / corrected labels, masks, point pairs)")
    g.add_argument("--data", help="folder of images with same-named ground truth (.npy or 16-bit .png)")
    g.add_argument("--gt-kind", choices=("depth", "disparity"), help="what --data's ground truth holds (default depth)")
    g.add_argument("--unlabelled", help="folder of images without labels; --teacher labels them while training")
    g.add_argument("--holdout", type=float,
                   help="share of the store's images held out of training, chosen by image hash (the train "
                        "tab's teacher-vs-student split); 0.1 = 10 %% (default 0: none)")
    g.add_argument("--train-on-ground-truth", action=SWITCH,
                   help="store images outside the held-out split train on their imported ground truth instead of "
                        "their label (default off: ground truth stays evidence for the comparison)")
    g = p.add_argument_group("model")
    g.add_argument("--encoder", help=f"student encoder size (default {d['encoder'].default})")
    g.add_argument("--version", choices=("v1", "v2"), help="model version when not fine-tuning (default v2)")
    g.add_argument("--student-init", choices=("dinov2", "checkpoint", "random"),
                   help="dinov2 (default, the paper's: DINOv2 encoder, new decoder), checkpoint (fine-tune --init; "
                        "the default when --init is given) or random")
    g.add_argument("--init", help="checkpoint to fine-tune (file or registry name)")
    g.add_argument("--encoder-init", help="DINOv2 encoder weights file for --student-init dinov2 (default: timm's "
                                          "vit_*_patch14_dinov2.lvd142m from the Hugging Face cache)")
    g.add_argument("--teacher", help="frozen teacher checkpoint for images without a label")
    g.add_argument("--feature-target", choices=("dinov2", "init"),
                   help="frozen target of feature alignment: dinov2 (default, the paper's) or init (a copy of the "
                        "student's initial encoder; recorded in the run)")
    g.add_argument("--dinov2", help="frozen DINOv2 weights file for --feature-target dinov2 (default: timm's, "
                                    "from the Hugging Face cache; offline and not cached is an error)")
    g = p.add_argument_group("schedule")
    g.add_argument("--steps", type=int, help=f"optimiser steps (default {d['steps'].default})")
    g.add_argument("--batch-size", type=int, help=f"images per process per micro-step (default {d['batch_size'].default})")
    g.add_argument("--grad-accum", type=int, help="micro-steps per optimiser step (default 1)")
    g.add_argument("--lr", type=float, help="encoder learning rate (default 5e-6)")
    g.add_argument("--decoder-lr-mult", type=float, help="decoder lr = lr x this (default 10)")
    g.add_argument("--weight-decay", type=float, help="AdamW weight decay (default 0.01)")
    g.add_argument("--warmup", type=int, help="warm-up steps (default 0)")
    g.add_argument("--decay", choices=("linear", "poly", "constant"), help="lr decay after warm-up (default linear)")
    g = p.add_argument_group("recipe")
    g.add_argument("--input-size", type=int, help="crop size, a multiple of 14 (default 518)")
    g.add_argument("--ratio", type=parse_ratio, help="labelled:pseudo-labelled images per batch (default 1:2)")
    g.add_argument("--pseudo-labels", action=SWITCH, help="train on pseudo-labelled images (default on)")
    g.add_argument("--perturbations", action=SWITCH, help="colour jitter / grayscale / blur of pseudo-labelled "
                                                           "images (default on)")
    g.add_argument("--cutmix", action=SWITCH, help="CutMix pseudo-labelled images (default on)")
    g.add_argument("--feature-alignment", action=SWITCH, help="feature-alignment term (default on)")
    g.add_argument("--cutmix-p", type=float, help="CutMix probability on pseudo-labelled images (default 0.5)")
    g.add_argument("--jitter-p", type=float, help=f"colour-jitter probability (default {d['jitter_p'].default})")
    g.add_argument("--brightness", type=float, help=f"colour-jitter brightness strength (default {d['brightness'].default})")
    g.add_argument("--contrast", type=float, help=f"colour-jitter contrast strength (default {d['contrast'].default})")
    g.add_argument("--saturation", type=float, help=f"colour-jitter saturation strength (default {d['saturation'].default})")
    g.add_argument("--hue", type=float, help=f"colour-jitter hue strength (default {d['hue'].default})")
    g.add_argument("--grayscale-p", type=float, help=f"grayscale probability (default {d['grayscale_p'].default})")
    g.add_argument("--blur-p", type=float, help=f"Gaussian-blur probability (default {d['blur_p'].default})")
    g.add_argument("--blur-sigma", type=parse_pair,
                   help=f"Gaussian-blur sigma range in px (default {','.join(map(str, d['blur_sigma'].default))})")
    g.add_argument("--loss-reduction", choices=("mean", "sum"),
                   help="mean (default, V1: the average of the terms present) or sum of the loss terms")
    g.add_argument("--gradient-weight", type=float, help="gradient-matching weight (default 2)")
    g.add_argument("--trim", type=float, help="share of largest-loss pixels ignored on pseudo-labels (default 0.1)")
    g.add_argument("--feature-weight", type=float, help="feature-alignment weight, 0 = off (default 1)")
    g.add_argument("--feature-alpha", type=float, help="feature-alignment tolerance margin (default 0.85)")
    g.add_argument("--ranking-weight", type=float, help="point-pair ranking loss weight (default 1)")
    g = p.add_argument_group("run")
    g.add_argument("--out", help="run folder: checkpoints, training state, metrics.jsonl (default runs/train)")
    g.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    g.add_argument("--auto-resume", action="store_true",
                   help="resume when --out holds a saved state, else start (default for --job-id runs, so "
                        "re-running a cancelled or crashed job continues it)")
    g.add_argument("--seed", type=int)
    g.add_argument("--save-every", type=int, help="write a checkpoint every N steps (default 500)")
    g.add_argument("--log-every", type=int)
    g.add_argument("--device", help="cuda, cuda:1, cpu (default: cuda when available)")
    g.add_argument("--no-amp", action="store_true", help="no bf16 autocast on CUDA")
    g.add_argument("--threads", type=int, help="torch CPU threads per process")
    g.add_argument("--job-id", type=int, help="report progress to this job of --db's store (the studio's train tab)")


def wants_resume(args: argparse.Namespace) -> bool:
    if args.resume:
        return True
    if args.auto_resume or args.job_id is not None:
        out = Path(args.out or TrainConfig.out_dir)
        return (out / "train_state.pt").is_file() and (out / "train_config.json").is_file()
    return False


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    given = {f: getattr(args, opt) for opt, f in FIELDS.items() if getattr(args, opt, None) is not None}
    if args.no_amp:
        given["amp"] = False
    base: dict = {}
    if args.resume:
        out = Path(given.get("out_dir", TrainConfig.out_dir))
        saved = out / "train_config.json"
        if not saved.is_file():
            raise ConfigError(f"--resume: {saved} not found; is {out} the folder of an earlier run (--out)?")
        base = TrainConfig.saved_settings(json.loads(saved.read_text()))
    return TrainConfig.from_dict({**base, **given})


def _reporter(args, cfg: TrainConfig):
    if args.job_id is None or int(os.environ.get("RANK", "0")) != 0:
        return None
    if not cfg.db:
        raise ConfigError("--job-id needs --db (the store that holds the job)")
    from ..job_reporter import JobReporter
    return JobReporter(cfg.db, args.job_id, handle_sigterm=False)     # the recipe handles SIGTERM


def _die_with_launcher() -> None:
    """Under torchrun (a studio job), a rank gets SIGTERM when its launcher dies (e.g. kill -9), so no
    rank outlives the process the job runner watches. Linux only; a no-op elsewhere."""
    if "TORCHELASTIC_RUN_ID" not in os.environ:
        return
    import contextlib
    import ctypes
    import signal
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM), 0, 0, 0)     # PR_SET_PDEATHSIG
        if os.getppid() == 1:                                                       # already orphaned
            os.kill(os.getpid(), signal.SIGTERM)


def run(args: argparse.Namespace) -> int:
    _die_with_launcher()
    if args.threads:
        import torch
        torch.set_num_threads(args.threads)
    from ..stop_signal import StopLatch
    from ..train.recipe import train

    args.resume = wants_resume(args)
    cfg = config_from_args(args)
    reporter = _reporter(args, cfg)
    # From here to the job's last record a SIGTERM is recorded, not fatal (the recipe latches it too
    # while it trains): a cancel reaches a torchrun rank more than once, and a late copy arriving
    # after training stopped must not kill the rank before the outcome is written.
    with StopLatch(orphan_exits=True) as latch:
        try:
            result = train(cfg, resume=args.resume, reporter=reporter, job_id=args.job_id,
                           should_stop=lambda step: latch.requested)
        except BaseException as e:
            if reporter is not None:
                reporter.finish("failed", str(e) or type(e).__name__)
            raise
        if reporter is not None:
            reporter.finish("done" if result.status == "finished" else "cancelled", None,
                            {"checkpoint": str(result.checkpoint), "step": result.step})
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"{result.status} at step {result.step}: {result.checkpoint}")
    return 0
