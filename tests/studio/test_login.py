"""Failed logins back off (studio/login.py): per user name, and for all names together."""
from __future__ import annotations

import pytest

from studio.login import LoginLimiter


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


@pytest.fixture
def clock():
    return Clock()


def test_right_password_passes_and_wrong_ones_fail(clock):
    auth = LoginLimiter({"ann": "s3cret"}, clock=clock)
    assert auth("ann", "s3cret") and not auth("ann", "nope") and not auth("bob", "s3cret")


def test_after_the_free_failures_even_the_right_password_waits_and_the_wait_doubles(clock):
    auth = LoginLimiter({"ann": "s3cret"}, free_failures=3, base_delay_s=2, max_delay_s=60, clock=clock)
    assert [auth("ann", "guess") for _ in range(3)] == [False] * 3
    assert auth("ann", "s3cret")                                   # three failures are free
    for _ in range(4):
        auth("ann", "guess")                                       # 4th failure: locked 2 s
    assert not auth("ann", "s3cret")                               # refused unchecked (and counted: 5th)
    clock.t += 2.5
    assert not auth("ann", "s3cret")                               # the 5th failure doubled it to 4 s
    clock.t += 8.5
    assert auth("ann", "s3cret")                                   # a success resets
    assert auth("ann", "s3cret") and not auth("ann", "guess") and auth("ann", "s3cret")


def test_fifty_fast_tries_get_nowhere(clock):
    """The issue: 50 tries in 2.5 s. Now at most the free ones are checked before waits build up."""
    auth = LoginLimiter({"ann": "s3cret"}, free_failures=5, base_delay_s=1, max_delay_s=300, clock=clock)
    checked = 0
    for i in range(50):
        clock.t += 0.05
        if not auth.locked("ann"):
            checked += 1
        auth("ann", f"guess{i}")
    assert checked <= 6 and auth.locked("ann")
    clock.t += 300.1
    assert auth("ann", "s3cret")                                   # the wait is capped


def test_spraying_many_names_is_slowed_for_everyone_and_unknown_names_share_a_counter(clock):
    auth = LoginLimiter({"ann": "s3cret"}, free_failures=2, base_delay_s=1, clock=clock)
    for i in range(25):
        auth(f"user{i}", "x")
    assert len(auth._per_name) == 1                                # one shared bucket for unknown names
    assert auth.locked("ann")                                      # 20+ failures in all: everyone waits
    clock.t += 400
    assert auth("ann", "s3cret")


def test_bad_settings_are_refused():
    with pytest.raises(ValueError):
        LoginLimiter({"a": "b"}, free_failures=0)
