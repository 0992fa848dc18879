"""`pipeline.cli.train` as a script: what `python -m pipeline train` runs, without the dispatcher.

Used by the tests only while another command module of the dispatcher is missing.
"""
import argparse
import sys

from pipeline.cli import train
from pipeline.errors import StudioError

if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="train")
    train.add_arguments(parser)
    args = parser.parse_args()
    try:
        sys.exit(train.run(args))
    except StudioError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
