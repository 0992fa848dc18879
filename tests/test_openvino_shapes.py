"""The OpenVINO backend's static per-shape models: a shape seen twice gets its own compiled model
(built in the background), the numbers stay those of the dynamic model, memory stays bounded."""
from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from tiny_models import random_vitt

from pipeline import Predictor, build_model
from pipeline.runtime import registry

pytestmark = pytest.mark.skipif(not registry.BACKENDS["openvino"].installed(), reason="openvino is not installed")
SMALL = 140


def _image(h=45, w=70):
    y, x = np.mgrid[0:h, 0:w]
    return (np.stack([x * 3, y * 5, (x + y) * 2], -1) % 256).astype(np.uint8)


class _Refuses:
    """Stands in for the dynamic model's infer request: proves a call went to a static model."""

    def infer(self, *a, **k):
        raise AssertionError("the dynamic model ran a shape that has a static model")


def _predictor(tmp_path, model=None):
    return Predictor(model or random_vitt(), device="cpu", input_size=SMALL, backend="openvino", cache_dir=tmp_path)


def test_a_shape_seen_twice_runs_on_its_own_static_model_with_the_same_numbers(tmp_path):
    model = random_vitt()
    p = _predictor(tmp_path, model)
    runner, image = p.runner(), _image()
    first = p.predict(image).array
    assert not runner.static and not runner.pending                   # once: nothing compiled
    second = p.predict(image).array                                    # twice: compiled in the background
    dynamic, runner.request = runner.request, _Refuses()
    third = p.predict(image).array                                     # the 3rd call waits for it if need be
    runner.request = dynamic
    [shape] = runner.static
    assert shape == (1, 3, 140, 224)                                  # 45x70 -> 140 high, width a multiple of 14
    np.testing.assert_array_equal(first, second)
    np.testing.assert_allclose(third, first, atol=1e-5 * float(first.max() - first.min()))
    exact = Predictor(model, device="cpu", input_size=SMALL, backend="torch").predict(image).array
    np.testing.assert_allclose(third, exact, atol=2e-5)


def test_the_same_sequence_of_calls_gives_the_same_bits(tmp_path, monkeypatch):
    """Which model answers depends on the calls made, never on how fast the background compile was:
    two runners (the same weights) fed the same sequence agree to the bit, static switch included,
    one of them with its static compiles slowed down."""
    import time

    from pipeline.runtime import openvino_rt
    images = [_image(), _image(), _image(70, 45), _image(), _image(70, 45), _image(70, 45), _image()]
    a = _predictor(tmp_path / "a", random_vitt())
    out_a = [a.predict(im).array for im in images]
    real = openvino_rt.compile_model

    def slow(model, threads):
        if not isinstance(model, (str, openvino_rt.Path)):
            time.sleep(0.5)                                            # a busy machine
        return real(model, threads)
    monkeypatch.setattr(openvino_rt, "compile_model", slow)
    b = _predictor(tmp_path / "b", random_vitt())
    out_b = [b.predict(im).array for im in images]
    assert all(np.array_equal(x, y) for x, y in zip(out_a, out_b, strict=True))
    assert len(a.runner().static) == len(b.runner().static) == 2


def test_static_models_are_bounded_least_recently_used_first(tmp_path):
    p = _predictor(tmp_path)
    runner = p.runner()
    assert runner.slots == 2                                           # a tiny model: the most kept
    images = {k: _image(*hw) for k, hw in {"a": (45, 70), "b": (70, 45), "c": (45, 45)}.items()}
    for key in "abab":
        p.predict(images[key])
    runner.settle(120)
    a, b = runner.static                                               # compiled in the order seen twice
    assert a != b
    p.predict(images["a"])                                             # a: most recently used
    for _ in range(2):
        p.predict(images["c"])
    runner.settle(120)
    assert list(runner.static)[0] == a and len(runner.static) == 2 and b not in runner.static
    dynamic, runner.request = runner.request, _Refuses()
    for key in "ac":
        p.predict(images[key])
    runner.request = dynamic


def test_a_static_model_that_fails_to_compile_leaves_the_dynamic_one_answering(tmp_path, monkeypatch, caplog):
    from pipeline.runtime import openvino_rt
    p = _predictor(tmp_path)
    runner, image = p.runner(), _image()
    real = openvino_rt.compile_model

    def no_static(model, threads):
        if not isinstance(model, (str, openvino_rt.Path)):
            raise RuntimeError("no memory for another model")
        return real(model, threads)
    monkeypatch.setattr(openvino_rt, "compile_model", no_static)
    want = p.predict(image).array
    with caplog.at_level(logging.WARNING, logger=openvino_rt.__name__):
        p.predict(image)
        runner.settle(120)
        for _ in range(2):
            np.testing.assert_array_equal(p.predict(image).array, want)
    assert not runner.static and not runner.pending and len(runner.failed) == 1
    assert sum("could not compile a static model" in r.getMessage() for r in caplog.records) == 1   # no retries


def test_how_many_static_models_fit_follows_the_weights():
    from pipeline.runtime.openvino_rt import static_slots

    def weights(encoder):
        with torch.device("meta"):                                     # counts, no memory
            return sum(p.numel() * 4 for p in build_model(encoder).parameters())
    assert static_slots(weights("vits")) == 2
    assert static_slots(weights("vitb")) == 1
    assert static_slots(weights("vitl")) == 0
