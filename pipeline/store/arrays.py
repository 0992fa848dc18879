"""The `arrays` table (one row per stored .npy file: dtype, shape, size) and the checks of what a
label, a prediction or a mask may store. The files themselves are in blobs.py."""
from __future__ import annotations

import json

import numpy as np

from .blobs import StoredArray
from .db import utc_now
from .errors import InvalidValueError
from .schema import MASK_NAMES


def check_depth(depth, shape: tuple[int, int], what: str) -> np.ndarray:
    arr = np.asarray(depth)
    if arr.dtype != np.float32:
        raise InvalidValueError(f"{what} must be float32 (stored losslessly); got {arr.dtype} - "
                                "convert it with .astype(np.float32) first")
    if arr.shape != shape:
        raise InvalidValueError(f"{what} has shape {arr.shape}, the image is {shape} (H, W)")
    return arr


def check_mask(mask, name: str, shape: tuple[int, int], names: tuple[str, ...] = MASK_NAMES) -> np.ndarray:
    """A label mask (`names`: 'ignore', 'sky') or a provenance mask ('human', 'valid'): bool/uint8 (H, W)."""
    if name not in names:
        raise InvalidValueError(f"unknown mask {name!r}; use one of {', '.join(MASK_NAMES)}")
    arr = np.asarray(mask)
    if arr.dtype not in (np.bool_, np.uint8) or arr.shape != shape:
        raise InvalidValueError(f"the {name} mask must be a bool or uint8 array of shape {shape}; "
                                f"got {arr.dtype} {arr.shape}")
    return arr


def add_array_row(db, stored: StoredArray) -> str:
    """The `arrays` row of a file already written (inside the caller's transaction); its sha256."""
    db.conn.execute("INSERT OR IGNORE INTO arrays (sha256, dtype, shape, nbytes, created_at) "
                    "VALUES (?, ?, ?, ?, ?)", (stored.sha256, stored.dtype,
                                               json.dumps(list(stored.shape)), stored.nbytes, utc_now()))
    return stored.sha256


def stored_array(db, sha256: str) -> StoredArray:
    """The StoredArray of an `arrays` row (what a new revision re-uses without copying the file)."""
    r = db.execute("SELECT dtype, shape, nbytes FROM arrays WHERE sha256 = ?", [sha256]).fetchone()
    return StoredArray(sha256, r[0], tuple(json.loads(r[1])), r[2])
