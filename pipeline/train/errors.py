"""Errors a training run reports to the user (all `StudioError`s: one clear line, no stack trace)."""
from __future__ import annotations

from ..errors import StudioError


class TrainingError(StudioError):
    """A training run that cannot start or continue; the message says what to do."""


class TrainDataError(TrainingError):
    """No usable training data: empty or tiny dataset, all labels masked, NaN-only labels."""


class CheckpointWriteError(TrainingError):
    """A checkpoint or training state could not be written (disk full, no permission).

    The previous checkpoint is left intact; the message names it.
    """


class ResumeError(TrainingError):
    """`--resume` was asked for but there is nothing (or nothing consistent) to resume from."""
