"""`python -m pipeline import-ground-truth FOLDER --kind depth|disparity --source NAME --db DB`.

    python -m pipeline import-ground-truth lidar_set/ --kind depth --source lidar-2025 --db data/studio.db
    python -m pipeline import-ground-truth stereo/ --kind disparity --source middlebury --db data/studio.db

FOLDER holds images with same-named ground truth (pipeline.files.dataset_layout: a.jpg + a.npy /
a_depth.png / depth/a.npy, optional a_mask.png). New images are added; each ground truth becomes a
ground-truth revision beside the image's labels (the training label does not change), so the
teacher-vs-student comparison and `evaluate --db` can score against it. Exit status 1 when a pair
was rejected.
"""
from __future__ import annotations

import argparse
import getpass
from pathlib import Path

from tqdm import tqdm

from ..files.image_io import MAX_PIXELS
from ..intake.ground_truth import KINDS, import_ground_truth
from ..store import Store

HELP = "import measured depth / disparity (images + ground-truth files) into the label store as ground truth"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("folder", type=Path, help="folder of images with same-named ground truth (dataset layout)")
    parser.add_argument("--kind", required=True, choices=tuple(KINDS),
                        help="depth: metres (use --scale for other units); disparity: stereo disparity or inverse depth")
    parser.add_argument("--source", required=True, help="where the measurements come from, e.g. lidar-2025 or middlebury")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply the values (e.g. 0.001 for millimetres)")
    parser.add_argument("--db", type=Path, default=None,
                        help="label database (default: $DA_STUDIO_DATA/studio.db or ./data/studio.db); created if missing")
    parser.add_argument("--author", default=None, help="name recorded with the revisions (default: your user name)")
    parser.add_argument("--max-pixels", type=int, default=MAX_PIXELS, help=f"refuse larger images (default {MAX_PIXELS:,})")
    parser.add_argument("--quiet", action="store_true", help="no progress bar; print only the summary")


def run(args: argparse.Namespace) -> int:
    from .import_images import default_db
    db = args.db or default_db()
    if args.db is None:
        db.parent.mkdir(parents=True, exist_ok=True)
    report = import_ground_truth(Store(db), args.folder, kind=args.kind, source=args.source, scale=args.scale,
                                 author=args.author or getpass.getuser(), max_pixels=args.max_pixels,
                                 progress=lambda pairs: tqdm(pairs, desc="ground truth", unit="pair",
                                                             disable=args.quiet))
    for name, why in report.rejected:
        print(f"rejected: {name}: {why}")
    print(report.summary())
    return 1 if report.rejected else 0
