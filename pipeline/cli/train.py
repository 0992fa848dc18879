"""`python -m pipeline train`: train a student on the store's curated labels and/or a folder.

    python -m pipeline train --db studio.db --encoder vits --init teacher.pth --steps 2000 \\
        --batch-size 6 --out runs/student1
    torchrun --nproc-per-node=4 -m pipeline train --db studio.db ... --out runs/student1
    python -m pipeline train --out runs/student1 --resume          # continue where it stopped
    python -m pipeline train --config SETTINGS.json       # a run's saved settings (its run folder's)
    python -m pipeline train --data DIR --gt-kind depth --metric --max-depth 20 --init CK --out runs/m1

Every setting option, its default, range and help come from TrainConfig (pipeline/train/train_config.py).
`--config FILE` reads settings saved as JSON (what the studio writes into the run folder); with
--resume the run's saved settings are used; options given on the command line override either
(e.g. --steps to train longer, --device).
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from ..errors import ConfigError
from ..train.config_fields import GROUPS, describe, parse_pair, parse_ratio
from ..train.run_folder import CONFIG_FILE, RunFolder
from ..train.train_config import TrainConfig

HELP = "train a student model (teacher-student recipe, or metric fine-tuning) on curated labels; works under torchrun"
CLI_TYPES = {"int": int, "float": float, "str": str, "ratio": parse_ratio, "pair": parse_pair}


def _help(s) -> str:
    text = s.help
    if s.range is not None:
        text += f"; {s.range.describe()}"
    shown = s.shown_default()
    return (text + (f" (default {shown})" if shown else "")).replace("%", "%%")


def add_config_options(p: argparse.ArgumentParser, config_cls=TrainConfig) -> None:
    """One option per setting of `config_cls`, by group; every default None (= "not given": the config's,
    the saved run's, or --config's value applies)."""
    groups = {g: p.add_argument_group(g) for g in GROUPS}
    for s in describe(config_cls):
        kwargs = dict(dest=s.name, default=None, help=_help(s))
        if s.kind == "bool":
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs["type"] = CLI_TYPES[s.kind]
            if s.choices:
                kwargs["choices"] = s.choices
        groups[s.group].add_argument(s.option, **kwargs)


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_config_options(p)
    g = p.add_argument_group("this process")
    g.add_argument("--config", metavar="JSON", help=f"read the settings from this file (a run's {CONFIG_FILE}); "
                                                    "options given here override them")
    g.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    g.add_argument("--keep-data", action="store_true",
                   help="with --resume: train on the data snapshot the run started with (the store's revisions "
                        "then), even if labels changed since")
    g.add_argument("--auto-resume", action="store_true",
                   help="resume when --out holds a saved state, else start (default for --job-id runs, so "
                        "re-running a cancelled or crashed job continues it)")
    g.add_argument("--threads", type=int, help="torch CPU threads per process")
    g.add_argument("--job-id", type=int, help="report progress to this job of --db's store (the studio's train tab)")


def _given(args: argparse.Namespace) -> dict:
    return {s.name: getattr(args, s.name) for s in describe(TrainConfig) if getattr(args, s.name, None) is not None}


def _read_settings(path: Path, what: str) -> dict:
    if not path.is_file():
        raise ConfigError(f"{what}: {path} not found; is it the settings file of a run (--out)?")
    try:
        return TrainConfig.saved_settings(json.loads(path.read_text()))
    except ValueError as e:
        raise ConfigError(f"{what}: {path} is not a settings file ({e})") from None


def _base(args: argparse.Namespace, given: dict) -> dict:
    """The settings the command line overrides: --config's, or with --resume the run's saved ones."""
    if args.config:
        return _read_settings(Path(args.config), "--config")
    if args.resume:
        run = RunFolder(given.get("out_dir", TrainConfig.out_dir))
        return _read_settings(run.config, "--resume")
    return {}


def wants_resume(args: argparse.Namespace) -> bool:
    if args.resume:
        return True
    if args.auto_resume or args.job_id is not None:
        given = _given(args)
        out = given.get("out_dir") or (_base(args, given).get("out_dir") if args.config else None)
        return RunFolder(out or TrainConfig.out_dir).resumable
    return False


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    given = _given(args)
    return TrainConfig.from_dict({**_base(args, given), **given})


def _reporter(args, cfg: TrainConfig):
    if args.job_id is None or int(os.environ.get("RANK", "0")) != 0:
        return None
    if not cfg.db:
        raise ConfigError("--job-id needs --db (the store that holds the job)")
    from ..jobs.reporter import JobReporter
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
    from ..jobs.stop_signal import StopLatch
    from ..train.recipe import train

    args.resume = wants_resume(args)
    cfg = config_from_args(args)
    reporter = _reporter(args, cfg)
    # From here to the job's last record a SIGTERM is recorded, not fatal (the recipe latches it too
    # while it trains): a cancel reaches a torchrun rank more than once, and a late copy arriving
    # after training stopped must not kill the rank before the outcome is written.
    with StopLatch(orphan_exits=True) as latch:
        try:
            result = train(cfg, resume=args.resume, keep_data=args.keep_data, reporter=reporter, job_id=args.job_id,
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
