"""The shard folder: webdataset-style tar shards, one JSON manifest per complete shard, run.json.

    SHARDS/run.json                    what made the folder (manifest hash, shard size, model, dtype)
    SHARDS/shard-000000.tar            items 0 .. S-1 of the manifest (those that could be read)
    SHARDS/shard-000000.jsonl          written last, atomically: the shard is complete iff it exists
    SHARDS/summary.json, failures.jsonl, ranks/rank-R-of-W.json      the last run's report

Inside a tar, per item (key = the manifest line number, 9 digits; webdataset groups members by
the key before the first dot): `KEY.json` (index, source, sha256, nbytes, width, height,
model_id, kind, confidence, dtype, and for uint16 the scale/offset/nodata of
`pipeline.files.depth_png.encode`) and `KEY.depth.png` (16-bit codes) or `KEY.depth.npy` (float16 /
float32, no pickle). Headers carry no time or owner, so the same labels give the same bytes.

The shard manifest is JSON Lines: line 1 describes the shard (entries it covers, counts, the
items that failed with the reason, model, dtype, the tar's sha256 and size), so a summary of
thousands of shards reads one line of each; then one line per item (key, source, content hash,
confidence, the label's sha256 and its tar member offsets, so readers seek straight to one label
and check it).
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ..atomic import atomic_write, discard, publish, temp_beside
from ..errors import StudioError
from ..files import depth_png

FORMAT = 1
DTYPES = ("uint16", "float16", "float32")
RUN_FILE = "run.json"


class ShardError(StudioError):
    """A shard folder, shard or item that cannot be used as asked; the message says what to do."""


def shard_stem(shard: int) -> str:
    return f"shard-{shard:06d}"


def item_key(index: int) -> str:
    return f"{index:09d}"


def write_json_atomic(path: Path, data, *, lines: list | None = None) -> None:
    """Write JSON (with `lines`: JSON Lines, `data` first) atomically (pipeline.atomic)."""
    if lines is None:
        text = json.dumps(data, indent=1, sort_keys=True)
    else:
        text = "".join(json.dumps(x, sort_keys=True) + "\n" for x in [data, *lines])
    atomic_write(path, text)


# ----------------------------------------------------------------------------- labels
def encode_label(array: np.ndarray, dtype: str) -> tuple[str, bytes, dict]:
    """(H, W) float prediction -> (member suffix, bytes, metadata for the item's JSON)."""
    if dtype == "uint16":
        codes, meta = depth_png.encode(array)                          # the project's 16-bit rule
        buf = io.BytesIO()
        Image.fromarray(codes).save(buf, format="PNG", compress_level=1)
        return "depth.png", buf.getvalue(), {k: meta[k] for k in ("offset", "scale", "nodata")}
    if dtype not in DTYPES:
        raise ShardError(f"unknown label dtype {dtype!r}; use one of {', '.join(DTYPES)}")
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array, dtype=dtype), allow_pickle=False)
    return "depth.npy", buf.getvalue(), {}


def decode_label(data: bytes, meta: dict, what: str) -> np.ndarray:
    """A stored label's bytes + its item JSON -> (H, W) float32."""
    try:
        if meta["dtype"] == "uint16":
            with Image.open(io.BytesIO(data)) as im:
                codes = np.asarray(im).astype(np.uint16)
            nodata = meta.get("nodata")
            array = depth_png.decode(codes, float(meta["offset"]), float(meta["scale"]),
                                     None if nodata is None else int(nodata))
        else:
            array = np.load(io.BytesIO(data), allow_pickle=False)
    except (OSError, ValueError, KeyError) as e:
        raise ShardError(f"{what}: the label cannot be read ({e}); relabel its shard") from None
    if array.shape != (meta["height"], meta["width"]):
        raise ShardError(f"{what}: label shape {array.shape} does not match the image "
                         f"{meta['height']}x{meta['width']}; relabel its shard")
    return array.astype(np.float32)


@dataclass(frozen=True)
class ShardItem:
    """One labelled image of a shard: what its JSON says, and its label decoded."""
    index: int                  # line of the labelling manifest
    source: str                 # path or URL it was read from
    sha256: str                 # of the file's bytes (the store's content hash)
    nbytes: int
    width: int                  # after EXIF orientation
    height: int
    model_id: str
    kind: str                   # disparity | metric_depth
    confidence: float           # flip consistency, low = review first
    dtype: str                  # how the label was stored: uint16 | float16 | float32
    depth: np.ndarray           # (H, W) float32 (uint16: the recovered values)

    @classmethod
    def from_meta(cls, meta: dict, depth: np.ndarray) -> ShardItem:
        return cls(int(meta["index"]), meta["source"], meta["sha256"], int(meta["nbytes"]), int(meta["width"]),
                   int(meta["height"]), meta["model_id"], meta["kind"], float(meta["confidence"]),
                   meta["dtype"], depth)


# ----------------------------------------------------------------------------- writing
class _HashingFile:
    """A write-only file that hashes what passes through (the tar's sha256 without a re-read)."""

    def __init__(self, f):
        self.f, self.sha, self.n = f, hashlib.sha256(), 0

    def write(self, data) -> int:
        self.sha.update(data)
        self.n += len(data)
        return self.f.write(data)

    def tell(self) -> int:
        return self.n


class ShardWriter:
    """Writes one shard: items go to a temporary tar; `close` renames it and then writes the
    manifest (the mark of a complete shard); `abort` (or a kill) leaves no shard behind."""

    def __init__(self, folder: Path, shard: int, first: int, count: int, header: dict):
        self.folder, self.shard, self.stem = Path(folder), shard, shard_stem(shard)
        self.header = {**header, "format": FORMAT, "shard": shard, "first": first, "count": count, "failed": []}
        self.items: list[dict] = []
        for stale in self.folder.glob(f".{self.stem}.*"):                 # a killed run's partial shard
            stale.unlink(missing_ok=True)
        (self.folder / f"{self.stem}.jsonl").unlink(missing_ok=True)
        self.tmp = temp_beside(self.folder / f"{self.stem}.tar")
        self._file = open(self.tmp, "wb")
        self._hashing = _HashingFile(self._file)
        self._tar = tarfile.open(fileobj=self._hashing, mode="w", format=tarfile.GNU_FORMAT)

    def _member(self, name: str, data: bytes) -> list[int]:
        info = tarfile.TarInfo(name)
        info.size, info.mode, info.mtime = len(data), 0o644, 0
        self._tar.addfile(info, io.BytesIO(data))
        padded = -(-len(data) // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE      # data, then zero padding
        return [self._tar.offset - padded, len(data)]

    def add(self, meta: dict, label_suffix: str, label: bytes) -> None:
        key = item_key(meta["index"])
        text = json.dumps(meta, sort_keys=True).encode()
        members = {"json": self._member(f"{key}.json", text), "depth": self._member(f"{key}.{label_suffix}", label)}
        self.items.append({"key": key, "index": meta["index"], "source": meta["source"],
                                       "sha256": meta["sha256"], "confidence": meta["confidence"],
                                       "label_sha256": hashlib.sha256(label).hexdigest(), "members": members})

    def fail(self, index: int, source: str, reason: str) -> None:
        self.header["failed"].append({"index": index, "source": source, "reason": reason})

    def close(self, **extra) -> Path:
        """Finish the tar, put it in place, then write the manifest. Returns the manifest path."""
        self._tar.close()
        self._file.close()
        tar = publish(self.tmp, self.folder / f"{self.stem}.tar")
        self.header.update(extra, done=len(self.items), tar={"file": tar.name, "bytes": self._hashing.n,
                                                              "sha256": self._hashing.sha.hexdigest()})
        path = self.folder / f"{self.stem}.jsonl"
        write_json_atomic(path, self.header, lines=self.items)
        return path

    def abort(self) -> None:
        with contextlib.suppress(Exception):
            self._tar.close()
        self._file.close()
        discard(self.tmp)


# ----------------------------------------------------------------------------- reading
def read_json(path: Path, what: str) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise ShardError(f"{what} {path} cannot be read ({e}); delete it and rerun the labelling") from None


def read_shard_manifest(path: Path, *, items: bool = True) -> dict:
    """A shard's manifest: its first line, plus "items" (the other lines) unless items=False."""
    try:
        with open(path) as f:
            header = json.loads(f.readline())
            if header.get("format", 0) > FORMAT:
                raise ShardError(f"{path} was written by a newer version (format {header['format']}); update "
                                 "the studio")
            if items:
                header["items"] = [json.loads(line) for line in f if line.strip()]
    except (OSError, ValueError) as e:
        raise ShardError(f"shard manifest {path} cannot be read ({e}); delete it and its .tar and rerun "
                         "the labelling") from None
    return header


def shard_manifests(folder: str | os.PathLike, *, items: bool = True) -> list[dict]:
    """The manifests of the complete shards in `folder`, in shard order (items=False: first lines only)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ShardError(f"shard folder {folder} does not exist; pass the --out folder of a labelling run")
    return [read_shard_manifest(p, items=items) for p in sorted(folder.glob("shard-*.jsonl"))]


def shard_is_complete(folder: Path, shard: int) -> bool:
    """True when the shard's manifest exists and its tar has the recorded size (cheap check)."""
    path = Path(folder) / f"{shard_stem(shard)}.jsonl"
    try:
        m = read_shard_manifest(path, items=False)
        return (Path(folder) / m["tar"]["file"]).stat().st_size == m["tar"]["bytes"]
    except (ShardError, OSError, KeyError, TypeError):
        return False


def verify_shard(folder: Path, manifest: dict) -> Path:
    """The shard's tar after checking its size and sha256 against the manifest (ShardError if not)."""
    tar = Path(folder) / manifest["tar"]["file"]
    sha = hashlib.sha256()
    try:
        with open(tar, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                sha.update(block)
    except OSError as e:
        raise ShardError(f"{tar.name}: cannot be read ({e.strerror or e}); rerun the labelling to redo it") from None
    if sha.hexdigest() != manifest["tar"]["sha256"]:
        raise ShardError(f"{tar.name} does not match the checksum in {shard_stem(manifest['shard'])}.jsonl "
                         "(damaged or replaced); delete both files and rerun the labelling to redo the shard")
    return tar


def read_member(tar: Path, members: dict, name: str) -> bytes:
    """One member's bytes by its recorded offset (no tar parsing)."""
    offset, size = members[name]
    with open(tar, "rb") as f:
        f.seek(offset)
        data = f.read(size)
    if len(data) != size:
        raise ShardError(f"{tar.name} is truncated; delete it and its .jsonl and rerun the labelling")
    return data


def read_item(tar: Path, entry: dict) -> ShardItem:
    """One item of a shard by its manifest entry: its JSON and decoded label (label hash checked)."""
    meta = json.loads(read_member(tar, entry["members"], "json"))
    what = f"{tar.name} item {entry['key']} ({meta.get('source')})"
    label = read_member(tar, entry["members"], "depth")
    if hashlib.sha256(label).hexdigest() != entry["label_sha256"]:
        raise ShardError(f"{what}: the label does not match its checksum (damaged); delete the shard's "
                         ".tar and .jsonl and rerun the labelling to redo it")
    return ShardItem.from_meta(meta, decode_label(label, meta, what))


def iter_items(folder: Path, manifest: dict, *, verify: bool = True) -> Iterator[ShardItem]:
    """Every item of a complete shard, in manifest order (checksum checked first unless verify=False)."""
    tar = verify_shard(folder, manifest) if verify else Path(folder) / manifest["tar"]["file"]
    for entry in manifest["items"]:
        yield read_item(tar, entry)
