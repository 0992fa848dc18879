"""The held-out split: which images `train --holdout` keeps out of training and the teacher-vs-student
comparison scores on. This module is the one owner of the rule; the store applies it as one condition
of its queries (`holdout_where`), and `in_holdout` answers the same for items that have no store row
(pseudo-label shards).

An image is held out at share `fraction` when the first 64 bits of its content hash (the sha256 hex
of its bytes), read as an integer x, satisfy x < fraction * 2^64: the same on every call and machine,
and nested as the share grows (an image held out at 10 % is held out at 20 %). A sha256 hex is 64
lower-case digits, so that is the text comparison `sha256 < bound`, where `bound` is
ceil(fraction * 2^64) in 16 hex digits (a longer text with the bound as its prefix sorts after it,
so x == bound is not held out, as in the integer rule): a range of the unique index on
images.sha256, and no per-image query.
"""
from __future__ import annotations

import math

RULE = "held-out images: first 64 bits of the image's sha256 / 2^64 < the held-out share"   # what reports say


def holdout_bound(fraction: float) -> str | None:
    """The 16-hex-digit bound of the split (hashes below it are held out); None when every image is
    (a share of 1 or more). A share of 0 or less gives '0' * 16: nothing is below it."""
    fraction = float(fraction)
    if fraction >= 1:
        return None
    return f"{math.ceil(max(fraction, 0.0) * 2.0 ** 64):016x}"


def in_holdout(sha256: str, fraction: float) -> bool:
    """Whether the image with this content hash is in the held-out split at share `fraction`."""
    bound = holdout_bound(fraction)
    return bound is None or str(sha256).lower() < bound


def holdout_where(fraction: float, column: str = "sha256", *, held: bool) -> tuple[str, list[str]]:
    """(SQL condition, params) selecting the held-out images (held=True) or the others (held=False)
    by their `column` (an images.sha256). The store's queries add it to their WHERE."""
    bound = holdout_bound(fraction)
    if bound is None:
        return ("1", []) if held else ("0", [])
    return (f"{column} < ?" if held else f"{column} >= ?"), [bound]
