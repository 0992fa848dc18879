"""The declared ranges services enforce on every number a user sends."""
from __future__ import annotations

import math

import numpy as np
import pytest

from pipeline.errors import ConfigError, one_line
from pipeline.ranges import Range, check_all

SIGMA = Range("smoothing sigma (pixels)", 0.1, 100)
ID = Range("image id", 1, 2 ** 62, integer=True)
SIZE = Range("input size", 14, 1036, integer=True, multiple_of=14)
FOCAL = Range("focal length (pixels)", 1, 1e6, optional=True)


@pytest.mark.parametrize("rng, value, expected", [
    (SIGMA, 2, 2.0), (SIGMA, "3.5", 3.5), (SIGMA, np.float32(0.5), 0.5), (ID, 7.0, 7), (ID, "12", 12),
    (SIZE, 518, 518), (FOCAL, 0, None), (FOCAL, None, None), (FOCAL, "", None), (FOCAL, 800, 800.0),
])
def test_values_in_range_come_back_as_numbers(rng, value, expected):
    got = rng.check(value)
    assert got == expected and type(got) is type(expected)


@pytest.mark.parametrize("rng, value", [
    (SIGMA, 2e7), (SIGMA, 1e9), (SIGMA, 0), (SIGMA, -1), (SIGMA, math.nan), (SIGMA, math.inf), (SIGMA, "abc"),
    (SIGMA, None), (SIGMA, True), (SIGMA, [1]), (ID, 1.5), (ID, "x1"), (ID, 0), (ID, 2 ** 70), (SIZE, 500),
    (SIZE, 14 * 10_000), (FOCAL, -5), (FOCAL, "many"),
])
def test_everything_else_is_one_line_naming_the_range(rng, value):
    with pytest.raises(ConfigError) as e:
        rng.check(value)
    message = str(e.value)
    assert message.startswith(rng.what + " must be ") and f"{rng.high:g}" in message and "\n" not in message


def test_check_all_uses_the_table():
    table = {"sigma": SIGMA, "image_id": ID}
    assert check_all(table, sigma="2", image_id=3) == {"sigma": 2.0, "image_id": 3}
    with pytest.raises(ConfigError, match="image id"):
        check_all(table, image_id="three")


def test_one_line_folds_control_characters():
    assert one_line("a\nb\x00c\t  d\r\n") == "a b c d"
    assert len(one_line("x" * 5000)) == 600
