"""`python -m pipeline gc --db DB`: remove stored files (and array rows) nothing refers to any more.

    python -m pipeline gc --db data/studio.db --dry-run      # what would go
    python -m pipeline gc --db data/studio.db                # remove it

Safe while the studio and jobs run: files younger than the grace period (default 60 minutes)
are kept, because a writer puts its file before the row that refers to it. See
pipeline/store/gc.py for how concurrent writers and a kill -9 in the middle are handled.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import ConfigError

HELP = "remove label-store files nothing refers to any more (safe while the studio runs)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--db", type=Path, required=True, help="label database (e.g. data/studio.db)")
    parser.add_argument("--grace-minutes", type=float, default=60.0,
                        help="keep unreferenced files younger than this (a writer may be about to refer to them; "
                             "default 60)")
    parser.add_argument("--dry-run", action="store_true", help="only count what would be removed")


def run(args: argparse.Namespace) -> int:
    if not args.grace_minutes >= 0:
        raise ConfigError(f"--grace-minutes must be 0 or more, got {args.grace_minutes}")
    if not args.db.is_file():
        raise ConfigError(f"{args.db} does not exist; pass the studio's label database with --db")
    from ..store import Store
    report = Store(args.db).collect_garbage(grace_s=args.grace_minutes * 60, dry_run=args.dry_run)
    print(("dry run: " if args.dry_run else "") + report.summary())
    return 0
