"""`python -m pipeline checkpoints list|inspect|download`: the known checkpoints and what a file is."""
from __future__ import annotations

import argparse
import json

from ..weights import registry

HELP = "list the known public checkpoints (licence, cached or not), inspect a checkpoint file, download one"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    p = sub.add_parser("list", help="known public checkpoints with licence and whether they are cached")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p = sub.add_parser("inspect", help="what a checkpoint file is: format, encoder, variant, parameters")
    p.add_argument("file", help="a .pth / .bin / .safetensors file")
    p.add_argument("--json", action="store_true", help="print JSON")
    p = sub.add_parser("download", help="fetch a known checkpoint into the Hugging Face cache")
    p.add_argument("name", choices=list(registry.KNOWN), metavar="NAME", help="a name from `checkpoints list`")


def _variant(c: registry.KnownCheckpoint) -> str:
    return f"{c.version} metric {c.max_depth:g} m" if c.metric else f"{c.version} relative"


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = lambda r: "  ".join(str(v).ljust(w) for v, w in zip(r, widths, strict=True)).rstrip()  # noqa: E731
    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])


def _list(args) -> int:
    entries = []
    for c in registry.KNOWN.values():
        cached = registry.find_cached(c.name)
        entries.append({"name": c.name, "title": c.title, "encoder": c.encoder, "variant": _variant(c),
                        "kind": c.kind, "licence": c.licence, "licence_url": c.licence_url,
                        "repo": c.repo_id, "file": c.filename, "cached": str(cached) if cached else None,
                        "default": c.name == registry.DEFAULT_NAME})
    if args.json:
        print(json.dumps(entries, indent=2))
        return 0
    rows = [[e["name"] + (" (default)" if e["default"] else ""), e["encoder"], e["variant"],
             e["licence"].split(" ")[0] + ("*" if " " in e["licence"] else ""), "yes" if e["cached"] else "no", f"{e['repo']}/{e['file']}"]
            for e in entries]
    print(_table(rows, ["name", "encoder", "variant", "licence", "cached", "hub file"]))
    print("\nCC-BY-NC-4.0 weights are for non-commercial use only. * V1: the code repository's licence; "
          "the weights state none of their own.\nOffline? Pass a local file instead: --checkpoint FILE")
    return 0


def _inspect(args) -> int:
    from ..weights.loading import inspect_checkpoint

    info = inspect_checkpoint(args.file)
    if args.json:
        print(json.dumps(info, indent=2, default=str))
        return 0
    for k, v in info.items():
        if k == "meta":
            v = json.dumps(v, default=str)
        print(f"{k:>14}: {v}")
    return 0


def _download(args) -> int:
    path = registry.resolve(args.name)
    entry = registry.KNOWN[args.name]
    print(f"{path}\nlicence: {entry.licence} ({entry.licence_url})")
    return 0


def run(args) -> int:
    return {"list": _list, "inspect": _inspect, "download": _download}[args.action](args)
