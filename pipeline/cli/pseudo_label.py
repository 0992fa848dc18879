"""`python -m pipeline pseudo-label --db DB --checkpoint CK`: teacher predictions into the store.

    python -m pipeline pseudo-label --db data/studio.db --checkpoint depth_anything_v2_vitl.pth

Every image in the store without a prediction from this model gets one, plus its first label
revision and a flip-consistency confidence, one transaction per image (see
pipeline/pseudo_label.py). Safe to interrupt and re-run: finished images are skipped.
With --job-id (set by pipeline.jobs when it runs as a background job) progress, logs and
cancel go through the store instead of the progress bar. Exit status: 0 done, 1 some images
failed, 3 cancelled.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from .. import checkpoint_registry
from ..config import DEFAULT_INPUT_SIZE, ENCODERS, VERSIONS
from ..errors import ConfigError
from ..predictor import Predictor
from ..runtime.registry import CHOICES

HELP = "pseudo-label the store's images with a teacher checkpoint (prediction + label + confidence)"
EXIT_CANCELLED = 3


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--db", required=True, metavar="DB", help="label store database file")
    parser.add_argument("--checkpoint", default=checkpoint_registry.DEFAULT_NAME, metavar="FILE|NAME",
                        help=f"teacher checkpoint file or registry name (default {checkpoint_registry.DEFAULT_NAME})")
    parser.add_argument("--encoder", choices=list(ENCODERS), help="encoder size (default: read from the weights)")
    parser.add_argument("--version", choices=VERSIONS, help="v1 or v2 (default: from the checkpoint)")
    parser.add_argument("--metric", action="store_true", default=None, help="the checkpoint is a V2 metric model")
    parser.add_argument("--max-depth", type=float, metavar="M", help="metric models: 20 indoor, 80 outdoor")
    parser.add_argument("--model-id", help="name the predictions are stored under (default: the checkpoint's)")
    parser.add_argument("--input-size", type=int, default=DEFAULT_INPUT_SIZE, metavar="N",
                        help=f"network input size, a multiple of 14 (default {DEFAULT_INPUT_SIZE})")
    parser.add_argument("--limit", type=int, metavar="N", help="pseudo-label at most N images this run")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:N or mps (default: best available)")
    parser.add_argument("--backend", choices=CHOICES, default="auto",
                        help="what runs the network (default auto: torch on a GPU, OpenVINO > ONNX Runtime > torch "
                             "on a CPU)")
    parser.add_argument("--job-id", type=int, help="report as this background job (set by pipeline.jobs)")
    parser.add_argument("--delay", type=float, default=0.0, help=argparse.SUPPRESS)  # tests: image in flight


def run(args: argparse.Namespace) -> int:
    from ..pseudo_label import run_pseudo_label
    from ..store import Store

    db = Path(args.db).expanduser()
    if not db.exists():
        raise ConfigError(f"label database {db} does not exist; import images first "
                          "(python -m pipeline import PATH... --db DB)")
    if args.limit is not None and args.limit < 0:
        raise ConfigError(f"--limit must be 0 or more, got {args.limit}")
    store = Store(db)
    if args.job_id is None:
        predictor = _predictor(args)
        summary = run_pseudo_label(store, predictor, limit=args.limit, progress_bar=True, delay=args.delay)
        print(json.dumps(summary.as_dict()))
        return 1 if summary.failed else 0
    return _run_as_job(args, store, db)


def _predictor(args) -> Predictor:
    return Predictor.from_checkpoint(args.checkpoint, device=args.device, input_size=args.input_size,
                                     model_id=args.model_id, encoder=args.encoder, version=args.version,
                                     metric=args.metric, max_depth=args.max_depth, backend=args.backend)


def _run_as_job(args, store, db: Path) -> int:
    from ..job_reporter import JobReporter
    from ..pseudo_label import run_pseudo_label

    with JobReporter(db, args.job_id) as rep:
        rep.log(f"loading {args.checkpoint}")
        predictor = _predictor(args)
        rep.log(f"model {predictor.model_id} on {predictor.device} ({predictor.runner().detail}), "
                f"input size {predictor.input_size}")
        summary = run_pseudo_label(store, predictor, limit=args.limit, job_id=args.job_id,
                                   reporter=rep, delay=args.delay)
        rep.log(json.dumps(summary.as_dict()))
        status = "cancelled" if summary.cancelled else "done"
        error = f"{len(summary.failed)} image(s) could not be read" if summary.failed else None
        rep.finish(status, error=error, result=summary.as_dict())
    return EXIT_CANCELLED if summary.cancelled else (1 if summary.failed else 0)
