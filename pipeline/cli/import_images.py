"""`python -m pipeline import PATH... --db DB`: add images (files, folders, zips) to the label store.

    python -m pipeline import photos/ more.zip one.jpg --db data/studio.db

Duplicates (same bytes as an image already there) are reported, not added again; files that
are not images, or are corrupt, are listed as rejected with the reason. Exit status 0 when
every path was readable, 1 when something was rejected.
"""
from __future__ import annotations

import argparse
import getpass
from pathlib import Path

from tqdm import tqdm

from ..image_io import MAX_PIXELS
from ..ingest import import_paths
from ..settings import StudioSettings
from ..store import Store

HELP = "import images (files, folders, zips) into the label store, skipping duplicates"


def default_db() -> Path:
    return StudioSettings.from_env().database


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paths", nargs="+", metavar="PATH", help="image files, folders (searched recursively) or .zip files")
    parser.add_argument("--db", type=Path, default=None,
                        help="label database (default: $DA_STUDIO_DATA/studio.db or ./data/studio.db); created if missing")
    parser.add_argument("--author", default=None, help="name recorded in the audit log (default: your user name)")
    parser.add_argument("--max-pixels", type=int, default=MAX_PIXELS, help=f"refuse larger images (default {MAX_PIXELS:,})")
    parser.add_argument("--quiet", action="store_true", help="no progress bar; print only the summary")


def run(args: argparse.Namespace) -> int:
    db = args.db or default_db()
    if args.db is None:
        db.parent.mkdir(parents=True, exist_ok=True)
    store = Store(db)
    author = args.author or getpass.getuser()

    def progress(entries):
        return tqdm(entries, desc="importing", unit="file", disable=args.quiet)

    report = import_paths(store, args.paths, author=author, max_pixels=args.max_pixels, progress=progress)
    for d in report.duplicates:
        print(f"duplicate: {d.name} (same bytes as image {d.image_id}, {d.existing_name})")
    for name, reason in report.rejected:
        print(f"rejected: {name}: {reason}")
    print(f"{report.summary()} -> {store.path}")
    return 1 if report.rejected else 0
