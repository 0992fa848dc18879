"""`python -m pipeline COMMAND ...`: one module per command under pipeline/cli/.

Each command module defines `HELP` (one line), `add_arguments(parser)` and `run(args) -> int`.
User errors (`StudioError`) are printed as one clear line and exit with status 2, never a
stack trace.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from ..errors import StudioError, one_line

# command name -> module under pipeline.cli
COMMANDS = {
    "predict": "predict",
    "import": "import_images",
    "import-ground-truth": "import_ground_truth",
    "pseudo-label": "pseudo_label",
    "import-shards": "import_shards",
    "export": "export",
    "export-model": "export_model",
    "accept": "accept",
    "reject": "reject",
    "reopen": "reopen",
    "tag": "tag",
    "train": "train",
    "evaluate": "evaluate",
    "checkpoints": "checkpoints",
    "gc": "gc",
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser; with `only`, just that command's module is imported (some pull in torch)."""
    parser = argparse.ArgumentParser(prog="python -m pipeline", description="Depth Anything Studio command line")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module_name in COMMANDS.items():
        if only is not None and name != only:
            continue
        module = importlib.import_module(f"{__name__}.{module_name}")
        p = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    only = argv[0] if argv and argv[0] in COMMANDS else None
    args = build_parser(only).parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except StudioError as e:
        print(f"error: {one_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
