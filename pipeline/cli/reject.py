"""`python -m pipeline reject [FILTER] --db DB`: see pipeline/cli/review.py (filters, dry run, exit status)."""
from __future__ import annotations

import argparse

from .review import HELPS, add_filter_arguments, run_action

HELP = HELPS["reject"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_filter_arguments(parser, default_status="pending")


def run(args: argparse.Namespace) -> int:
    return run_action(args, "reject")
