"""The labelling manifest (one image per line: a path or a URL) and reading its entries.

Lines: a local path (relative paths are relative to the manifest's folder) or a URL
`scheme://...` read through fsspec (`s3://`, `gs://`, `https://`, `file://` ...; fsspec and the
scheme's package, e.g. s3fs, are optional: installed only where they are used). Blank lines
and lines starting with `#` are skipped. An entry's number is its position among the entries
(0-based): shards, keys and failures refer to it.
"""
from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from .format import ShardError

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def is_url(source: str) -> bool:
    return bool(_URL.match(source))


@dataclass(frozen=True)
class Manifest:
    count: int                  # entries in the whole manifest
    digest: str                 # sha256 over all entries (resolved), each followed by a newline
    entries: dict[int, str]     # entry number -> path or URL, for the entries asked for


def read_manifest(path: str | os.PathLike, keep: Callable[[int], bool] | None = None) -> Manifest:
    """Scan the manifest once: its size and digest, and the entries `keep(number)` accepts (all
    when None), so a rank of a many-million-line manifest holds only its own share."""
    path = Path(path).expanduser()
    digest, entries, count = hashlib.sha256(), {}, 0
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                entry = line.strip()
                if not entry or entry.startswith("#"):
                    continue
                if not is_url(entry):
                    entry = str((path.parent / Path(entry).expanduser()).resolve())
                digest.update(entry.encode() + b"\n")
                if keep is None or keep(count):
                    entries[count] = entry
                count += 1
    except FileNotFoundError:
        raise ShardError(f"manifest {path} not found; write one image path or URL per line") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ShardError(f"manifest {path} cannot be read as UTF-8 text ({e})") from None
    if not count:
        raise ShardError(f"manifest {path} lists no images; write one image path or URL per line")
    return Manifest(count, digest.hexdigest(), entries)


def read_source(source: str) -> bytes:
    """The bytes of a local file or URL. Raises OSError-like errors from the filesystem, or
    ShardError when a URL needs fsspec and it is not installed."""
    if not is_url(source):
        return Path(source).read_bytes()
    try:
        import fsspec
    except ImportError:
        raise ShardError(f"{source} is a URL: install fsspec (and the package for its scheme, e.g. s3fs "
                         "for s3://) with pip to read it") from None
    with fsspec.open(source, "rb") as f:
        return f.read()


def display_name(source: str) -> str:
    """The file name shown for an entry (its last path part)."""
    name = PurePosixPath(source.split("?", 1)[0].rstrip("/")).name if is_url(source) else Path(source).name
    return name or source
