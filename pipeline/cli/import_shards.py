"""`python -m pipeline import-shards SHARDS/ --db DB`: a sharded labelling run's results into the store.

    python -m pipeline import-shards shards/ --db data/studio.db

Adds each complete shard's images (read from the paths / URLs the shards name, checked against
the content hash recorded at labelling) and their pseudo-labels: the same prediction, revision 1
and confidence the single-machine `pseudo-label --db` job writes. Shards are checksum-verified;
images already in the store with this model's label are skipped, so rerunning is a no-op.
Exit status: 0 all imported, 1 some images or shards could not be (listed on stderr).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HELP = "add the images and pseudo-labels of a sharded labelling run (pseudo-label --out) to the store"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("shards", metavar="SHARDS", help="the folder a `pseudo-label --manifest ... --out` run wrote")
    parser.add_argument("--db", required=True, metavar="DB", help="label store database file (created if missing)")
    parser.add_argument("--chunk", type=int, default=500, metavar="N",
                        help="images per store transaction (default 500)")
    parser.add_argument("--author", default="import-shards", help="who the image imports are recorded as")


def run(args: argparse.Namespace) -> int:
    from ..errors import ConfigError
    from ..shards import import_shards
    from ..store import Store

    if args.chunk < 1:
        raise ConfigError(f"--chunk must be at least 1, got {args.chunk}")
    db = Path(args.db).expanduser()
    report = import_shards(Store(db), args.shards, author=args.author, chunk=args.chunk,
                           progress=True)
    for source, reason in report.failed[:50]:
        print(f"skipped {source}: {reason}", file=sys.stderr)
    for shard, reason in report.bad_shards:
        print(f"damaged shard {shard}: {reason}", file=sys.stderr)
    print(report.summary(), file=sys.stderr)
    print(json.dumps(report.as_dict()))
    return 1 if report.failed or report.bad_shards else 0
