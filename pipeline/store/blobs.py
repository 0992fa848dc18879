"""Content-addressed files beside the database: image bytes and arrays (.npy), named by sha256.

Layout: `<db folder>/<db stem>-files/ab/cdef0123....npy` (arrays) or `....jpg` (images), where
`abcdef0123...` is the sha256 of the file's bytes. Reading recomputes the hash: a missing,
truncated or altered file raises CorruptRecordError naming it, never returns wrong data.
Writes go to a unique temporary name and are renamed into place, so a killed process leaves
at most an unreferenced temporary file, never a half-written blob under a real name.

Arrays are saved losslessly as .npy (no pickle): float32 depth, bool or uint8 masks.
Needs no database connection, so a BlobStore can be handed to DataLoader workers.
"""
from __future__ import annotations

import hashlib
import io
import os
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import CorruptRecordError, InvalidValueError

ARRAY_DTYPES = ("float32", "bool", "uint8")


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
        if not dest.exists() or dest.stat().st_size != len(data):
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
            data = p.read_bytes()
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
