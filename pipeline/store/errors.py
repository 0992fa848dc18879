"""Errors the label store raises. Each message names the record and says what to do."""
from __future__ import annotations

from ..errors import StudioError


class StoreError(StudioError):
    """Base class for label-store problems a user can act on."""


class NotFoundError(StoreError, LookupError):
    """An image, revision, job or checkpoint id that is not in the store."""


class StaleRevisionError(StoreError):
    """A save/undo/redo/status change based on a head that has moved since it was read.

    `current` is the Revision now at the head (None when the image has no label yet).
    """

    def __init__(self, message: str, *, image_id: int, expected: int | None, current=None):
        super().__init__(message)
        self.image_id = image_id
        self.expected = expected
        self.current = current


class CorruptRecordError(StoreError):
    """Stored bytes (an array or an image file) that are missing or fail their sha256 check."""


class HistoryError(StoreError):
    """Nothing to undo or redo."""


class SchemaVersionError(StoreError):
    """The database was written by a newer version of the code (or is not a studio db)."""


class InvalidValueError(StoreError, ValueError):
    """A value the store cannot accept (unknown status, wrong array dtype, bad point)."""


class JobStateError(StoreError):
    """A job transition that is not allowed (e.g. claiming a job that already runs)."""
