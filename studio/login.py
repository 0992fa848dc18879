"""`LoginLimiter`: the studio's `--auth` check with a back-off after failed logins.

Gradio accepts a callable `auth(username, password) -> bool`. Without a limit a password can be
tried as fast as the server answers (50 tries in 2.5 s). The limiter counts failures per user
name, and for all names together (so spraying many names is slowed too); after `free_failures`
failures in a row, that name (or every name) is refused without checking the password for
`base_delay_s`, doubling with each further failure (tries while locked count too) up to
`max_delay_s`. A success resets the name's count, and so does a quiet `max_delay_s` without
failures. Unknown names share one counter, so guessing names cannot grow the table.

Gradio's login route gives the callable no client address, so the limit is per user name, not
per client: an attacker can lock a user out for at most `max_delay_s` at a time, by design the
lesser evil. The page shows Gradio's usual "Incorrect credentials." either way.
"""
from __future__ import annotations

import hmac
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

UNKNOWN = "\0unknown"          # the shared counter of names that are not accounts


@dataclass
class _Failures:
    count: int = 0
    locked_until: float = 0.0
    last: float = float("-inf")        # time of the latest failure


class LoginLimiter:
    def __init__(self, users: dict[str, str], *, free_failures: int = 5, base_delay_s: float = 1.0,
                 max_delay_s: float = 300.0, clock: Callable[[], float] = time.monotonic):
        if free_failures < 1 or base_delay_s <= 0 or max_delay_s < base_delay_s:
            raise ValueError("free_failures >= 1 and 0 < base_delay_s <= max_delay_s")
        self.users = dict(users)
        self.free_failures, self.base_delay_s, self.max_delay_s = free_failures, base_delay_s, max_delay_s
        self.clock = clock
        self._lock = threading.Lock()
        self._per_name: dict[str, _Failures] = {}
        self._all = _Failures()

    def __call__(self, username: str, password: str) -> bool:
        name = username if username in self.users else UNKNOWN
        now = self.clock()
        with self._lock:
            if self.locked(name, now):
                self._fail(name, now)             # a try while locked counts: the wait keeps growing
                return False
        ok = name != UNKNOWN and hmac.compare_digest(password.encode(), self.users[name].encode())
        with self._lock:
            if ok:
                self._per_name.pop(name, None)
            else:
                self._fail(name, now)
        return ok

    def locked(self, username: str, now: float | None = None) -> bool:
        now = self.clock() if now is None else now
        mine = self._per_name.get(username)
        return (mine is not None and now < mine.locked_until) or now < self._all.locked_until

    def _fail(self, name: str, now: float) -> None:
        self._bump(self._per_name.setdefault(name, _Failures()), self.free_failures, now)
        self._bump(self._all, 10 * self.free_failures, now)

    def _bump(self, f: _Failures, free: int, now: float) -> None:
        if now - f.last > self.max_delay_s:             # quiet for a while: start counting again
            f.count = 0
        f.count, f.last = f.count + 1, now
        if f.count > free:
            delay = min(self.max_delay_s, self.base_delay_s * 2 ** min(f.count - free - 1, 30))
            f.locked_until = max(f.locked_until, now + delay)
