"""`python -m pipeline pseudo-label`: teacher predictions into the store, or into shards at scale.

    python -m pipeline pseudo-label --db data/studio.db --checkpoint depth_anything_v2_vitl.pth
    torchrun --nproc-per-node=8 -m pipeline pseudo-label --manifest images.txt --checkpoint CK --out shards/

--db: every image in the store without a prediction from this model gets one, plus its first
label revision and a flip-consistency confidence, one transaction per image (see
pipeline/intake/pseudo_label.py). Safe to interrupt and re-run: finished images are skipped.
With --job-id (set by pipeline.jobs.manager when it runs as a background job) progress, logs and
cancel go through the store instead of the progress bar. Exit status: 0 done, 1 some images
failed, 3 cancelled.

--manifest/--out: the manifest's images (paths or fsspec URLs, one a line) are labelled into
shards of --shard-size images, one process alone or one per device under torchrun (also across
machines with torchrun's rendezvous; --out must then be a folder all machines share). Rerun the
same command after any kill: complete shards are skipped, partial ones redone; torchrun
--max-restarts does that by itself. `python -m pipeline import-shards OUT --db DB` puts the
result into a store (see pipeline/shards/). Exit status: 0 every shard complete (unreadable
images are listed in OUT/failures.jsonl), 1 shards missing.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..config import DEFAULT_INPUT_SIZE, ENCODERS, VERSIONS
from ..errors import ConfigError
from ..predictor import Predictor
from ..runtime.registry import CHOICES
from ..shards.format import DTYPES
from ..weights import registry as checkpoint_registry

HELP = "pseudo-label the store's images with a teacher checkpoint (prediction + label + confidence)"
EXIT_CANCELLED = 3


def add_arguments(parser: argparse.ArgumentParser) -> None:
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--db", metavar="DB", help="label store database file: label its images")
    where.add_argument("--manifest", metavar="FILE", help="text file, one image path or URL a line: label "
                       "them into shards under --out (torchrun shares them out over its processes)")
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
    parser.add_argument("--job-id", type=int, help="report as this background job (set by pipeline.jobs.manager)")
    shards = parser.add_argument_group("sharded labelling (--manifest)")
    shards.add_argument("--out", metavar="DIR", help="shard folder (created; resumed when it exists)")
    shards.add_argument("--shard-size", type=int, default=1000, metavar="N", help="images per shard (default 1000)")
    shards.add_argument("--dtype", choices=DTYPES, default="uint16",
                        help="label storage: uint16 = 16-bit PNG with scale/offset (default), float16, float32")
    shards.add_argument("--batch-size", type=int, default=8, metavar="N",
                        help="images per forward pass, each with its flip (default 8)")
    shards.add_argument("--workers", type=int, default=2, metavar="N",
                        help="DataLoader processes decoding images while the model runs (default 2; 0 = none)")
    parser.add_argument("--delay", type=float, default=0.0, help=argparse.SUPPRESS)  # tests: image in flight


def run(args: argparse.Namespace) -> int:
    from ..intake.pseudo_label import run_pseudo_label
    from ..store import Store

    if args.manifest is not None:
        return _run_sharded(args)
    if args.out is not None:
        raise ConfigError("--out is the shard folder of a --manifest run; with --db the labels go into the store")
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
    from ..intake.pseudo_label import run_pseudo_label
    from ..jobs.reporter import JobReporter

    with JobReporter(db, args.job_id) as rep:
        rep.log(f"loading {args.checkpoint}")
        predictor = _predictor(args)
        rep.log(f"model {predictor.model_id} on {predictor.device} ({predictor.runner().detail}), "
                f"input size {predictor.input_size}")
        summary = run_pseudo_label(store, predictor, limit=args.limit, job_id=args.job_id,
                                   reporter=rep, delay=args.delay)
        rep.log(summary.describe())                     # people read the log; the result keeps the numbers
        status = "cancelled" if summary.cancelled else "done"
        error = f"{len(summary.failed)} image(s) could not be read" if summary.failed else None
        rep.finish(status, error=error, result=summary.as_dict())
    return EXIT_CANCELLED if summary.cancelled else (1 if summary.failed else 0)


def _run_sharded(args) -> int:
    """One torchrun rank (or the only process): label this rank's shards; rank 0 then reports."""
    from ..shards import labeller
    from ..shards.sources import read_manifest

    if args.out is None:
        raise ConfigError("--manifest needs --out DIR, the folder the shards are written to")
    if args.limit is not None or args.job_id is not None:
        raise ConfigError("--limit and --job-id are for --db runs; a --manifest run labels every line (shorten "
                          "the manifest to label fewer)")
    ctx = labeller.RankContext.from_env()
    opts = labeller.LabelOptions(shard_size=args.shard_size, dtype=args.dtype, batch_size=args.batch_size,
                                 workers=args.workers, delay=args.delay, progress=ctx.rank == 0)
    out = Path(args.out).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    manifest = read_manifest(args.manifest, keep=lambda i: labeller.owner(i, opts.shard_size, ctx.world) == ctx.rank)
    predictor = Predictor.from_checkpoint(args.checkpoint, device=ctx.device(args.device), input_size=args.input_size,
                                          model_id=args.model_id, encoder=args.encoder, version=args.version,
                                          metric=args.metric, max_depth=args.max_depth)
    spec = labeller.run_spec(manifest, opts, predictor.model_id, predictor.kind, predictor.input_size)
    labeller.ensure_run(out, spec)
    labeller.write_rank_stats(out, labeller.label_rank(predictor, manifest, out, spec, opts, ctx))
    if ctx.rank != 0:
        return 0
    summary = labeller.write_summary(out, spec, labeller.wait_for_ranks(out, ctx))
    print(json.dumps(summary))
    return 0 if not summary["missing_shards"] else 1
