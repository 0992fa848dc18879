"""Ranges of the numbers a user can send, declared once per service and enforced there.

A widget's minimum and maximum are a convenience for the page; an API client sends what it likes,
so each service keeps a small table and checks every number it is given:

    RANGES = {"sigma": Range("smoothing sigma (pixels)", 0.1, 100)}
    sigma = RANGES["sigma"].check(value)          # -> float, or ConfigError in one line

`check` accepts numbers and numeric strings (what an API client may send) and refuses anything
else, NaN and infinities with the accepted range in the message. `optional=True`: None, "" and 0
mean "not given" (e.g. a focal length of 0 = automatic) and come back as None.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from .errors import ConfigError

MAX_ID = 2 ** 62          # database ids (SQLite INTEGER PRIMARY KEY is 64-bit)


@dataclass(frozen=True)
class Range:
    what: str                        # how the page names it, e.g. "smoothing sigma (pixels)"
    low: float
    high: float
    integer: bool = False
    multiple_of: int | None = None
    optional: bool = False           # None / "" / 0 -> None ("not given")
    text: str | None = None          # how to say the range when low..high would mislead, e.g. "a share in [0, 1)"

    def describe(self) -> str:
        if self.text:
            return self.text
        kind = "a whole number" if self.integer else "a number"
        step = f", a multiple of {self.multiple_of}" if self.multiple_of else ""
        zero = " (or 0 for automatic)" if self.optional else ""
        return f"{kind} from {self.low:g} to {self.high:g}{step}{zero}"

    def check(self, value):
        """The value as int/float within the range (None when optional and not given)."""
        if self.optional and (value is None or value == "" or (_is_number(value) and float(value) == 0)):
            return None
        number = _number(value)
        bad = (number is None or not math.isfinite(number) or not self.low <= number <= self.high
               or (self.integer and number != int(number))
               or (self.multiple_of is not None and number % self.multiple_of != 0))
        if bad:
            shown = repr(value) if not isinstance(value, str) else repr(value[:40])
            raise ConfigError(f"{self.what} must be {self.describe()}, got {shown}")
        return int(number) if self.integer else float(number)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _number(value) -> float | None:
    if _is_number(value):
        return float(value) if not isinstance(value, int) else value
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            return None
    try:                                              # numpy scalars
        import numpy as np
        if isinstance(value, np.generic) and np.issubdtype(type(value), np.number):
            return float(value)
    except ImportError:                               # pragma: no cover
        pass
    return None


def check_all(ranges: dict[str, Range], **values) -> dict:
    """{name: checked value} for each given value, by the range of that name."""
    return {name: ranges[name].check(v) for name, v in values.items()}
