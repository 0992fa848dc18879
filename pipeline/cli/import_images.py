"""`python -m pipeline import PATH... --db DB`: add images (files, folders, zips, videos) to the label store.

    python -m pipeline import photos/ more.zip one.jpg --db data/studio.db
    python -m pipeline import walk.mp4 --frame-rate 2 --db data/studio.db     # 2 frames per second of video

A video's frames are added as images (lossless PNG) grouped by their clip and frame time; the
curate tab's gallery can show one clip's frames.

Duplicates (same bytes as an image already there) are reported, not added again; files that
are not images, or are corrupt, are listed as rejected with the reason. Exit status 0 when
every path was readable, 1 when something was rejected.
"""
from __future__ import annotations

import argparse
import getpass
from pathlib import Path

from tqdm import tqdm

from ..files.image_io import MAX_PIXELS
from ..intake.images import import_paths
from ..intake.video import DEFAULT_RATE, check_rate
from ..settings import StudioSettings
from ..store import Store

HELP = "import images (files, folders, zips) and video frames into the label store, skipping duplicates"


def default_db() -> Path:
    return StudioSettings.from_env().database


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paths", nargs="+", metavar="PATH", help="image files, folders (searched recursively) or .zip files")
    parser.add_argument("--db", type=Path, default=None,
                        help="label database (default: $DA_STUDIO_DATA/studio.db or ./data/studio.db); created if missing")
    parser.add_argument("--author", default=None, help="name recorded in the audit log (default: your user name)")
    parser.add_argument("--max-pixels", type=int, default=MAX_PIXELS, help=f"refuse larger images (default {MAX_PIXELS:,})")
    parser.add_argument("--quiet", action="store_true", help="no progress bar; print only the summary")
    parser.add_argument("--frame-rate", type=float, default=DEFAULT_RATE, metavar="FPS",
                        help=f"frames per second taken from each video (default {DEFAULT_RATE:g})")


def run(args: argparse.Namespace) -> int:
    check_rate(args.frame_rate)
    db = args.db or default_db()
    if args.db is None:
        db.parent.mkdir(parents=True, exist_ok=True)
    store = Store(db)
    author = args.author or getpass.getuser()

    def progress(entries):
        return tqdm(entries, desc="importing", unit="file", disable=args.quiet)

    report = import_paths(store, args.paths, author=author, max_pixels=args.max_pixels, progress=progress,
                          video_rate=args.frame_rate)
    for d in report.duplicates:
        print(f"duplicate: {d.name} (same bytes as image {d.image_id}, {d.existing_name})")
    for name, reason in report.rejected:
        print(f"rejected: {name}: {reason}")
    print(f"{report.summary()} -> {store.path}")
    return 1 if report.rejected else 0
