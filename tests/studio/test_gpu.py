"""studio.gpu: spaces.GPU when the `spaces` package is importable, the function itself otherwise."""
import sys
import types

import studio.gpu as g


def work(x):
    return x + 1


def test_without_spaces_the_function_is_returned_unchanged(monkeypatch):
    monkeypatch.setattr(g, "spaces_available", lambda: False)
    assert g.gpu(work) is work


def test_with_spaces_the_function_is_wrapped_with_a_duration(monkeypatch):
    calls = []

    def GPU(duration):
        def wrap(fn):
            calls.append((fn, duration))
            return lambda *a: ("on gpu", fn(*a))
        return wrap
    monkeypatch.setitem(sys.modules, "spaces", types.SimpleNamespace(GPU=GPU))
    monkeypatch.setattr(g, "spaces_available", lambda: True)
    wrapped = g.gpu(work, duration=30)
    assert calls == [(work, 30)] and wrapped(1) == ("on gpu", 2)


def test_every_network_call_of_the_studio_goes_through_gpu(monkeypatch):
    """/predict, /predict_batch and the teacher-vs-student comparison all get a GPU on ZeroGPU."""
    from studio import depth_batch, depth_handlers, train_handlers

    wrapped = []
    fake = lambda fn, duration=60: wrapped.append(fn.__name__) or fn   # noqa: E731
    for module in (depth_handlers, depth_batch, train_handlers):
        monkeypatch.setattr(module, "gpu", fake)
    service = types.SimpleNamespace(infer=lambda *a: None, compare=lambda *a: None, results=None)
    service.infer.__name__, service.compare.__name__ = "infer", "compare"
    depth_handlers.DepthHandlers(service)
    depth_batch.BatchHandlers(service)
    train_handlers.TrainHandlers(service)
    assert wrapped == ["infer", "infer", "compare"]
