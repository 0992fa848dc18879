"""`python -m pipeline export --db DB --out DIR`: write the curated set (and optionally push it).

    python -m pipeline export --db data/studio.db --out curated/ --status accepted,corrected
    python -m pipeline export --db data/studio.db --out curated/ --push-to-hub me/my-depth-labels

Writes images, float32 .npy and 16-bit PNG labels, masks, point pairs and manifest.jsonl (see
pipeline/intake/dataset_export.py). `--import-from DIR` reads such a folder back into the database.
"""
from __future__ import annotations

import argparse
import getpass
from pathlib import Path

from tqdm import tqdm

from ..intake.dataset_export import DEFAULT_STATUSES, export_dataset, import_dataset, push_to_hub
from ..store import Store
from ..store.errors import StoreError
from .import_images import default_db

HELP = "export the curated labels (images, 16-bit + float labels, masks, point pairs, manifest); optional Hub push"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--db", type=Path, default=None, help="label database (default: the studio's data folder)")
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--out", type=Path, help="folder to write (new, empty, or an earlier export)")
    target.add_argument("--import-from", type=Path, metavar="DIR", help="read an export folder back into --db")
    parser.add_argument("--status", default=",".join(DEFAULT_STATUSES),
                        help="comma-separated statuses to export (default accepted,corrected)")
    parser.add_argument("--push-to-hub", metavar="REPO", help="also upload the folder as a Hub dataset (user/name)")
    parser.add_argument("--public", action="store_true", help="with --push-to-hub: make a new dataset public")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    db = args.db or default_db()
    if args.import_from is None and not Path(db).is_file():
        raise StoreError(f"no label database at {db}; import images first or pass --db")
    store = Store(db)

    def progress(items):
        return tqdm(items, desc="exporting" if args.out else "importing", unit="image", disable=args.quiet)

    if args.import_from is not None:
        rep = import_dataset(args.import_from, store, author=getpass.getuser(), progress=progress)
        for key, reason in rep.problems:
            print(f"problem: {key}: {reason}")
        print(f"{rep.images_added} images added ({rep.images_existing} already there), "
              f"{rep.revisions_added} labels, {rep.point_pairs_added} point pairs -> {store.path}")
        return 1 if rep.problems else 0
    report = export_dataset(store, args.out, statuses=args.status, progress=progress)
    if args.push_to_hub:
        report.url = push_to_hub(args.out, args.push_to_hub, private=not args.public)
    print(report.summary())
    return 0
