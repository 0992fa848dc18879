"""Exception classes a user can act on. Each message says what went wrong and what to do.

The CLI and the studio catch `StudioError` and show its message instead of a stack trace;
anything else is a bug.
"""


class StudioError(Exception):
    """Base class for errors caused by user input (files, options, checkpoints)."""


class ConfigError(StudioError, ValueError):
    """An invalid model or run configuration; the message quotes the bad value."""


class ImageError(StudioError):
    """An input that is not a usable image (corrupt, not an image, too large, empty)."""


class CheckpointError(StudioError):
    """A checkpoint that cannot be found, read, or does not fit the requested model."""


class VideoError(ImageError):
    """A video that cannot be read or written (not a video, truncated, a frame that fails to decode).

    A subclass of ImageError: wherever a bad input image is reported and skipped, so is a bad video.
    """


def one_line(message: object, limit: int = 600) -> str:
    """A message as the one line the page, the API and the CLI show: newlines and other control
    characters become spaces (a NUL or a newline in a name cannot break it), runs of spaces one."""
    text = "".join(" " if (ord(c) < 32 or ord(c) == 127) else c for c in str(message))
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit - 1] + "…"
