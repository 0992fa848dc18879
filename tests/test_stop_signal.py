"""SIGTERM handlers of jobs must be re-entrant: a cancelled torchrun rank gets SIGTERM several times.

The cause of the flaky torchrun cancel (issue 12, point 10): the training recipe's handler called
`threading.Event.set()`, whose lock is not re-entrant; a second SIGTERM arriving while the first
handler held it deadlocked the rank (stack dump: nested `Event.set` frames in `__enter__`), and the
other rank then waited in the next all_reduce. These tests call a handler again at every line it
executes, which is where Python may run a second signal's handler, deterministically.
"""
from __future__ import annotations

import signal
import sys
import threading

from pipeline.jobs.stop_signal import StopLatch
from pipeline.train.recipe import Recipe
from pipeline.train.train_config import TrainConfig


def call_reentrantly(handler) -> bool:
    """Run handler(SIGTERM); at each line it executes, run it again once (a second signal arriving
    there). True when everything returned within 5 s; False when a nested call blocked."""
    nested = {"depth": 0, "calls": 0}

    def tracer(frame, event, arg):
        if event == "line" and nested["depth"] == 0 and nested["calls"] < 50:
            nested["depth"] += 1
            nested["calls"] += 1
            try:
                handler(signal.SIGTERM, None)
            finally:
                nested["depth"] -= 1
        return tracer

    def run():
        sys.settrace(tracer)
        try:
            handler(signal.SIGTERM, None)
        finally:
            sys.settrace(None)

    worker = threading.Thread(target=run, daemon=True)      # a deadlocked worker cannot hang the test run
    worker.start()
    worker.join(5)
    return not worker.is_alive()


def test_the_latch_handler_is_reentrant_and_restores_the_previous_handler():
    before = signal.getsignal(signal.SIGTERM)
    with StopLatch() as latch:
        handler = signal.getsignal(signal.SIGTERM)
        assert handler == latch._trip and not latch.requested
        assert call_reentrantly(handler)
        assert latch.requested
    assert signal.getsignal(signal.SIGTERM) == before


def test_the_training_recipes_sigterm_handler_is_reentrant(tmp_path):
    recipe = Recipe(TrainConfig(out_dir=str(tmp_path / "run"), data_dir=str(tmp_path), encoder="vitt", steps=1))
    before = signal.getsignal(signal.SIGTERM)
    recipe._install_sigterm()
    try:
        handler = signal.getsignal(signal.SIGTERM)
        assert handler != before
        assert call_reentrantly(handler), "a second SIGTERM inside the handler deadlocked it"
    finally:
        signal.signal(signal.SIGTERM, before)


def test_a_real_signal_sets_the_latch():
    import os
    with StopLatch() as latch:
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(1000):                     # the handler runs at the next bytecode boundaries
            if latch.requested:
                break
        assert latch.requested


def test_outside_the_main_thread_install_is_a_no_op():
    result = {}

    def run():
        latch = StopLatch().install()
        result["installed"] = latch._installed
        latch.restore()
    t = threading.Thread(target=run)
    t.start()
    t.join()
    assert result == {"installed": False}


def test_an_orphan_ends_at_once_as_the_default_action_would():
    """orphan_exits: a rank whose launcher died (PR_SET_PDEATHSIG) must not carry on alone."""
    import subprocess
    code = ("import os, signal, subprocess, sys, time\n"
            "from pipeline.jobs.stop_signal import StopLatch\n"
            "latch = StopLatch(orphan_exits=True).install()\n"
            "os.kill(os.getpid(), signal.SIGTERM)\n"
            "time.sleep(0.2)\n"
            "assert latch.requested\n"                                  # parent alive: recorded
            "latch._parent = -1\n"                                      # as if the parent were gone
            "os.kill(os.getpid(), signal.SIGTERM)\n"
            "time.sleep(5)\n"
            "print('still running')\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 128 + signal.SIGTERM and "still running" not in done.stdout, done.stderr


ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]
