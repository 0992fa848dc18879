"""Content-addressed files beside the database: image bytes and arrays (.npy), named by sha256.

Layout: `<db folder>/<db stem>-files/ab/cdef0123....npy` (arrays) or `....jpg` (images), where
`abcdef0123...` is the sha256 of the file's bytes. Reading recomputes the hash: a missing,
truncated or altered file raises CorruptRecordError naming it, never returns wrong data.
Writes go to a unique temporary name and are renamed into place, so a killed process leaves
at most an unreferenced temporary file, never a half-written blob under a real name.

Arrays are saved losslessly as .npy (no pickle): float32 depth, bool or uint8 masks.
Needs no database connection, so a BlobStore can be handed to DataLoader workers.

Garbage collection (`pipeline/store/gc.py`) removes files no row refers to. A writer puts its
file before the row that refers to it, so a file may be young and not yet referenced: the
collector leaves files modified within a grace period alone, and `put_bytes` refreshes the
modification time of a file that already exists (a deduplicated write counts as new). The
collector moves a stale file to a trash name (`.<name>.gc`) before deleting it and re-reads its
time there: a writer that touched it just before the move is seen and the file is put back; one
that comes after the move finds no file and writes it again. A collector killed between move and
delete leaves the trash file, which the next collection (or a read that misses the file) restores.
"""
from __future__ import annotations

import hashlib
import io
import os
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import CorruptRecordError, InvalidValueError

ARRAY_DTYPES = ("float32", "bool", "uint8")
BLOB_NAME = re.compile(r"^([0-9a-f]{62})(\.[A-Za-z0-9]{1,10})$")     # inside a 2-hex-digit folder
TRASH_SUFFIX = ".gc"


@dataclass(frozen=True)
class StoredArray:
    sha256: str
    dtype: str
    shape: tuple[int, ...]
    nbytes: int            # size of the .npy file


def sha256_bytes(data: bytes | memoryview) -> str:
    return hashlib.sha256(data).hexdigest()


def encode_array(array: np.ndarray) -> bytes:
    """The exact .npy bytes of `array` (C order); refuses dtypes the store does not keep."""
    arr = np.asarray(array)
    if arr.dtype.name not in ARRAY_DTYPES:
        raise InvalidValueError(
            f"the store keeps {', '.join(ARRAY_DTYPES)} arrays; got {arr.dtype} - convert it first "
            "(depth: .astype(np.float32), masks: bool or uint8)")
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(arr), allow_pickle=False)
    return buf.getvalue()


class BlobStore:
    """Files named by their content hash under one folder."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"BlobStore({str(self.root)!r})"

    def path(self, sha256: str, ext: str) -> Path:
        return self.root / sha256[:2] / f"{sha256[2:]}{ext}"

    def put_bytes(self, data: bytes, ext: str) -> tuple[str, Path]:
        """Store `data` (idempotent); return (sha256, path)."""
        sha = sha256_bytes(data)
        dest = self.path(sha, ext)
        if not _touch_if_complete(dest, len(data)):
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp = dest.with_name(f".{dest.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp")
            try:
                with open(tmp, "wb") as f:
                    f.write(data)
                os.replace(tmp, dest)
            finally:
                if tmp.exists():
                    tmp.unlink()
        return sha, dest

    def read_bytes(self, sha256: str, ext: str, *, what: str = "file") -> bytes:
        """The stored bytes, after checking their hash; CorruptRecordError otherwise."""
        p = self.path(sha256, ext)
        try:
            data = _read_or_restore(p)
        except FileNotFoundError:
            raise CorruptRecordError(f"{what} {sha256[:12]} is missing from the store ({p}); "
                                     "restore the store folder from a backup or re-import it") from None
        if sha256_bytes(data) != sha256:
            raise CorruptRecordError(f"{what} {sha256[:12]} is damaged: {p} no longer matches its "
                                     "sha256; restore it from a backup or re-create this record")
        return data

    def temp_files(self) -> list[Path]:
        """Half-written files a killed writer left behind (never referenced by any row)."""
        return sorted(self.root.glob("*/.*.tmp")) if self.root.is_dir() else []

    # ---- garbage collection (pipeline/store/gc.py decides what is referenced) ------------------
    def blob_files(self) -> Iterator[tuple[str, str, Path]]:
        """(sha256, ext, path) of every stored file (temporary and trash files left out)."""
        if not self.root.is_dir():
            return
        for folder in sorted(self.root.iterdir()):
            if len(folder.name) != 2 or not folder.is_dir():
                continue
            for p in sorted(folder.iterdir()):
                m = BLOB_NAME.match(p.name)
                if m:
                    yield folder.name + m.group(1), m.group(2), p

    def trash_files(self) -> list[Path]:
        return sorted(self.root.glob(f"*/.*{TRASH_SUFFIX}")) if self.root.is_dir() else []

    def restore_trash(self) -> int:
        """Put back files a killed collector left under a trash name; count them."""
        n = 0
        for t in self.trash_files():
            if _restore(t):
                n += 1
        return n

    def remove_if_stale(self, path: Path, cutoff: float) -> int:
        """Delete `path` when it was last modified before `cutoff` (POSIX time), safely against a
        writer touching it at the same moment (see the module docstring). Returns bytes removed."""
        try:
            if path.stat().st_mtime >= cutoff:
                return 0
            trash = _trash_of(path)
            os.rename(path, trash)
        except FileNotFoundError:
            return 0
        _after_move(path)                                 # (a test hook: a writer may come here)
        st = trash.stat()
        if st.st_mtime >= cutoff:                         # touched just before the move: keep it
            os.replace(trash, path)
            return 0
        trash.unlink()
        return st.st_size

    def put_array(self, array: np.ndarray) -> StoredArray:
        data = encode_array(array)
        sha, _ = self.put_bytes(data, ".npy")
        arr = np.asarray(array)
        return StoredArray(sha, arr.dtype.name, tuple(int(s) for s in arr.shape), len(data))

    def read_array(self, sha256: str, *, what: str = "array") -> np.ndarray:
        """The array, checked against its sha256 (CorruptRecordError when it fails)."""
        data = self.read_bytes(sha256, ".npy", what=what)
        try:
            return np.load(io.BytesIO(data), allow_pickle=False)
        except ValueError as e:  # pragma: no cover - a hash-valid file is one we wrote
            raise CorruptRecordError(f"{what} {sha256[:12]} cannot be read as an array: {e}") from None


def _trash_of(path: Path) -> Path:
    return path.with_name(f".{path.name}{TRASH_SUFFIX}")


def _restore(trash: Path) -> bool:
    """Move a trash file back to its name (an identical file already there wins)."""
    real = trash.with_name(trash.name[1:-len(TRASH_SUFFIX)])
    try:
        if real.exists():
            trash.unlink()
            return False
        os.replace(trash, real)
        return True
    except FileNotFoundError:
        return False


def _read_or_restore(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        _restore(_trash_of(path))                         # a collector killed mid-way
        return path.read_bytes()


def _touch_if_complete(path: Path, size: int) -> bool:
    """True when `path` holds `size` bytes already; its time is refreshed so a collector spares it."""
    try:
        if path.stat().st_size != size:
            return False
        os.utime(path)
        return True
    except FileNotFoundError:                             # absent, or moved away by a collector
        return False


def _after_move(path: Path) -> None:
    """Called between a collector's move and its second look; tests put a writer here."""
