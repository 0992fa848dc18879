"""`python -m pipeline tag TAGS [FILTER] --db DB`: put tags on (or, with --remove, take them off) the images
of a filter, so the Curate tab's and the accept / reject commands' --tag filter can find them.

    python -m pipeline tag indoor,kitchen --name 'kitchen_*' --db data/studio.db
    python -m pipeline tag glass --id 12 15 --db data/studio.db
    python -m pipeline tag night --remove --tag night --max-confidence 0.2 --db data/studio.db

The filter is review.py's (default: every status). Prints how many images matched and how many tags
were added or removed; --dry-run changes nothing. Exit status 1 when nothing matched.
"""
from __future__ import annotations

import argparse
import getpass

from ..store import check_tags
from .review import add_filter_arguments, filter_of, open_store

HELP = "tag (or untag) images by filter (status, name glob, tag, confidence range, clip) for later filtering"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("tags", help="comma-separated tags (letters, digits, _ - . : / @ +)")
    parser.add_argument("--remove", action="store_true", help="take the tags off instead of putting them on")
    add_filter_arguments(parser, default_status=None)


def run(args: argparse.Namespace) -> int:
    tags = check_tags(args.tags)
    flt = filter_of(args)
    store = open_store(args)
    ids = list(args.ids) if args.ids else list(store.filtered_ids(**flt))
    if not ids:
        print("nothing matched the filter; no tags changed")
        return 1
    if args.dry_run:
        print(f"would {'remove' if args.remove else 'add'} {', '.join(tags)} on {len(ids)} image(s) (dry run)")
        return 0
    change = store.remove_tags if args.remove else store.add_tags
    n = change(ids, tags, author=args.author or getpass.getuser())
    print(f"{len(ids)} image(s) matched; {n} tag(s) {'removed' if args.remove else 'added'} ({', '.join(tags)})")
    return 0
