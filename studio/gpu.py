"""`gpu(fn)`: ZeroGPU's `spaces.GPU` when the `spaces` package is importable, the function itself otherwise.

On a ZeroGPU Space the decorated function gets a GPU for each call; on a normal GPU Space or a
laptop the decorator is a no-op. Decorate at start-up (ZeroGPU registers functions then).
"""
from __future__ import annotations

import importlib.util
from collections.abc import Callable

CONCURRENCY_ID = "gpu"      # the one concurrency group of every event that runs a network


def spaces_available() -> bool:
    return importlib.util.find_spec("spaces") is not None


def gpu(fn: Callable, duration: int = 60) -> Callable:
    if not spaces_available():
        return fn
    import spaces  # only present on Hugging Face Spaces
    return spaces.GPU(duration=duration)(fn)
