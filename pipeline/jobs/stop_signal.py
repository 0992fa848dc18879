"""`StopLatch`: a SIGTERM handler that only records the request, safe however often the signal comes.

A cancelled torchrun job gets SIGTERM more than once: `jobs.signal_job` signals every rank's
process group and torchrun forwards its own SIGTERM a moment later (and again when it gives up,
and PR_SET_PDEATHSIG when the launcher dies). Python runs a handler between bytecodes, also
between the bytecodes of a handler that is already running, so the handler must be re-entrant.
`threading.Event.set()` is not: it takes the event's (non-reentrant) lock, and a second SIGTERM
arriving inside it waits for that lock forever. One rank then hangs in its handler, the other
blocks in the next collective waiting for it, and torchrun kills both after its 30 s grace
period: no checkpoint, no log line (issue 12, point 10; the ranks' stacks showed exactly this).

The latch's handler assigns one attribute: no lock, no I/O, nothing that can block.
`StopLatch(orphan_exits=True)` (a job's command, around the whole run) keeps the old default for a
process whose parent is gone (torchrun killed, PR_SET_PDEATHSIG): it exits at once, as SIG_DFL
would, instead of carrying on alone.
"""
from __future__ import annotations

import os
import signal
import threading


class StopLatch:
    """`install()` a SIGTERM handler that sets `requested`; `restore()` puts the previous one back.

    Installing from a thread other than the main one is a no-op (Python allows handlers only
    there); `requested` can still be set by hand.
    """

    def __init__(self, signum: int = signal.SIGTERM, *, orphan_exits: bool = False):
        self.signum = signum
        self.requested = False
        self._parent = os.getppid() if orphan_exits else None
        self._previous = None
        self._installed = False

    def _trip(self, signum, frame) -> None:
        if self._parent is not None and os.getppid() != self._parent:
            os._exit(128 + signum)       # orphaned: what the default action would do
        self.requested = True            # the whole handler: re-entrant by construction

    def install(self) -> StopLatch:
        if not self._installed and threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(self.signum, self._trip)
            self._installed = True
        return self

    def restore(self) -> None:
        if self._installed:
            signal.signal(self.signum, self._previous if self._previous is not None else signal.SIG_DFL)
            self._installed = False

    def __enter__(self) -> StopLatch:
        return self.install()

    def __exit__(self, *exc) -> None:
        self.restore()
