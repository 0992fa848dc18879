"""`python -m pipeline accept|reject|reopen [FILTER] --db DB`: review decisions for many labels at once.

    python -m pipeline accept --db data/studio.db --min-confidence 0.8            # confident pseudo-labels
    python -m pipeline reject --db data/studio.db --name 'blurry_*' --dry-run      # see what would change
    python -m pipeline accept --db data/studio.db --tag indoor --status pending,corrected
    python -m pipeline reopen --db data/studio.db --clip 'walk.mp4#0123456789ab'   # back to pending

The filter is the Curate tab's: --status (default: pending, i.e. labels nobody reviewed yet), --name
(a case-sensitive glob on the file name: `*`, `?`, `[a-z]`), --tag, --min/--max-confidence, --clip,
or explicit --id's. Images without a label are skipped (nothing to accept). Every change is printed
(`#12 kitchen1.png: pending -> accepted`), then a summary; --dry-run prints the same and writes
nothing. Exit status 0 when something matched, 1 when the filter matched no labelled image (with
what the store holds), 2 for a bad filter.
"""
from __future__ import annotations

import argparse
import getpass
from pathlib import Path

from ..errors import ConfigError
from ..store import Store
from ..store.errors import StoreError
from .import_images import default_db

ACTIONS = {"accept": "accepted", "reject": "rejected", "reopen": "pending"}
HELPS = {"accept": "accept labels by filter (status, name glob, tag, confidence range, clip); --dry-run shows what",
         "reject": "reject labels by filter (status, name glob, tag, confidence range, clip); --dry-run shows what",
         "reopen": "set labels back to pending by filter (status, name glob, tag, confidence range, clip)"}


def add_filter_arguments(parser: argparse.ArgumentParser, *, default_status: str | None) -> None:
    parser.add_argument("--db", type=Path, default=None, help="label database (default: the studio's data folder)")
    parser.add_argument("--status", default=default_status,
                        help=f"comma-separated statuses to change (default {default_status or 'all'}; 'all' = any)")
    parser.add_argument("--name", help="glob on the file name, case-sensitive (e.g. 'kitchen_*.jpg')")
    parser.add_argument("--tag", help="only images with this tag")
    parser.add_argument("--min-confidence", type=float, help="only labels with at least this confidence (0..1)")
    parser.add_argument("--max-confidence", type=float, help="only labels with at most this confidence (0..1)")
    parser.add_argument("--clip", help="only this video's frames (as the gallery's clip filter names it)")
    parser.add_argument("--id", type=int, nargs="+", dest="ids", metavar="ID", help="these image ids (no other filter)")
    parser.add_argument("--dry-run", action="store_true", help="print what would change; change nothing")
    parser.add_argument("--author", default=None, help="name recorded in the audit log (default: your user name)")


def filter_of(args) -> dict:
    """The store filter the arguments ask for (ConfigError for a contradiction)."""
    for name in ("min_confidence", "max_confidence"):
        value = getattr(args, name)
        if value is not None and not 0.0 <= value <= 1.0:
            raise ConfigError(f"--{name.replace('_', '-')} is a confidence from 0 to 1; got {value}")
    flt = {"status": None if args.status in (None, "", "all") else args.status, "name": args.name, "tag": args.tag,
           "min_confidence": args.min_confidence, "max_confidence": args.max_confidence, "clip": args.clip}
    given = {k: v for k, v in flt.items() if v is not None}
    if args.ids and set(given) - {"status"}:
        raise ConfigError("give either --id's or a filter (--name, --tag, --min/--max-confidence, --clip), not both")
    return given


def open_store(args) -> Store:
    db = args.db or default_db()
    if not Path(db).is_file():
        raise StoreError(f"no label database at {db}; import images first or pass --db")
    return Store(db)


def run_action(args: argparse.Namespace, action: str) -> int:
    status = ACTIONS[action]
    flt = filter_of(args)
    store = open_store(args)
    author = args.author or getpass.getuser()
    if args.ids:
        changes = store.set_statuses(args.ids, status, author=author, dry_run=args.dry_run)
    else:
        changes = store.set_statuses_where(status, author=author, dry_run=args.dry_run, **flt)
    verb = "would set" if args.dry_run else "set"
    for image_id, name, old in changes.changed:
        print(f"#{image_id} {name}: {old} -> {status}" + (" (dry run)" if args.dry_run else ""))
    for image_id, name, why in changes.skipped:
        print(f"skipped #{image_id} {name}: {why}")
    print(f"{verb} {len(changes.changed)} image(s) to {status}; {len(changes.unchanged)} already {status}; "
          f"{len(changes.skipped)} skipped" + (" (dry run: nothing written)" if args.dry_run else ""))
    if changes.changed or changes.unchanged:
        return 0
    held = ", ".join(f"{n} {s}" for s, n in store.count_by_status().items() if n) or "no images"
    what = ", ".join(f"{k}={v}" for k, v in flt.items()) if not args.ids else f"ids {args.ids}"
    print(f"nothing matched ({what or 'every image'}) among the labelled images; the store holds {held}")
    return 1
