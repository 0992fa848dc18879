"""The backend registry as the Predictor uses it: choice, caching, fallback, concurrency."""
from __future__ import annotations

import threading
import warnings

import numpy as np
import pytest
import torch
from tiny_models import random_vitt

from pipeline import Predictor
from pipeline.errors import ConfigError
from pipeline.runtime import cache, registry
from pipeline.runtime.torch_rt import TorchRunner

SMALL = 140
EXPORTED = [b for b in ("openvino", "onnxruntime") if registry.BACKENDS[b].installed()]
needs_exported = pytest.mark.skipif(not EXPORTED, reason="neither openvino nor onnxruntime is installed")


@pytest.fixture
def image():
    y, x = np.mgrid[0:45, 0:70]
    return (np.stack([x * 3, y * 5, (x + y) * 2], -1) % 256).astype(np.uint8)


def test_auto_is_torch_on_gpus_and_the_first_installed_runtime_on_a_cpu(monkeypatch):
    assert registry.candidates("auto", torch.device("cuda")) == ["torch"]
    assert registry.candidates("auto", torch.device("mps")) == ["torch"]
    assert registry.candidates("auto", torch.device("cpu")) == [*EXPORTED, "torch"]
    monkeypatch.setattr(registry.BackendSpec, "installed", lambda self: self.package is None)
    assert registry.candidates("auto", torch.device("cpu")) == ["torch"]          # nothing else installed
    assert registry.candidates("openvino", torch.device("cpu")) == ["openvino", "torch"]


def test_bad_backend_names_and_devices_are_one_line_errors():
    with pytest.raises(ConfigError, match="unknown backend 'tensorrt'; choose one of auto, torch"):
        Predictor(random_vitt(), device="cpu", backend="tensorrt")
    with pytest.raises(ConfigError, match="backend openvino does not run on cuda"):
        registry.candidates("openvino", torch.device("cuda"))
    with pytest.raises(ConfigError, match="unknown backend"):
        from pipeline.settings import StudioSettings
        StudioSettings(backend="fast")


@needs_exported
def test_a_backend_that_cannot_build_falls_back_to_torch_with_one_warning(monkeypatch, image):
    def broken(*args, **kwargs):
        raise RuntimeError("simulated: the runtime's plugin did not load")
    monkeypatch.setattr(registry, "cache_entry", broken)
    model = random_vitt()
    with pytest.warns(RuntimeWarning, match=f"the {EXPORTED[0]} backend is unavailable.*simulated.*with torch") as w:
        p = Predictor(model, device="cpu", input_size=SMALL)
    assert len(w) == 1 and p.backend == "torch"
    with warnings.catch_warnings():
        warnings.simplefilter("error")                                 # no second warning on later requests
        pred = Predictor(model, device="cpu", input_size=SMALL).predict(image)
    assert pred.backend == "torch"
    np.testing.assert_array_equal(pred.array, Predictor(model, device="cpu", input_size=SMALL,
                                                        backend="torch").predict(image).array)


@needs_exported
def test_a_backend_failing_at_run_time_falls_back_to_torch_and_the_request_succeeds(image):
    from pipeline.predictor import _slot
    from pipeline.runtime.base import Runner

    class Broken(Runner):
        name = EXPORTED[0]

        def __call__(self, x):
            raise RuntimeError("simulated: out of memory in the runtime")

    model = random_vitt()
    p = Predictor(model, device="cpu", input_size=SMALL, backend=EXPORTED[0])
    _slot(model, p._key).runner = Broken()             # the built runner breaks on the next call
    with pytest.warns(RuntimeWarning, match=f"the {EXPORTED[0]} backend is unavailable.*simulated: out of memory"):
        pred = p.predict(image)
    assert pred.backend == "torch" and p.backend == "torch"
    torch_pred = Predictor(model, device="cpu", input_size=SMALL, backend="torch").predict(image)
    np.testing.assert_array_equal(pred.array, torch_pred.array)


@needs_exported
def test_equal_weights_reuse_the_export_on_disk_and_new_weights_never_see_a_stale_one(monkeypatch, tmp_path, image):
    exports = []                                          # each conversion the backend runs
    real = cache.build_once
    monkeypatch.setattr(cache, "build_once",
                        lambda folder, build: real(folder, lambda tmp: exports.append(folder) or build(tmp)))
    first = random_vitt(seed=3)
    a = Predictor(first, device="cpu", input_size=SMALL, backend=EXPORTED[0], cache_dir=tmp_path).predict(image)
    twin = random_vitt(seed=3)                                  # another object, the same weights (a restart)
    b = Predictor(twin, device="cpu", input_size=SMALL, backend=EXPORTED[0], cache_dir=tmp_path).predict(image)
    assert len(exports) == 1
    np.testing.assert_array_equal(a.array, b.array)
    entries = sorted(p.name for p in tmp_path.iterdir())
    assert len(entries) == 1 and entries[0].startswith("vitt-v2-") and cache.code_version() in entries[0]
    with torch.no_grad():
        twin.depth_head.scratch.output_conv2[2].bias += 0.5
    c = Predictor(twin, device="cpu", input_size=SMALL, backend=EXPORTED[0], cache_dir=tmp_path).predict(image)
    assert len(exports) == 2 and len(list(tmp_path.iterdir())) == 2
    expected = Predictor(twin, device="cpu", input_size=SMALL, backend="torch").predict(image)
    np.testing.assert_allclose(c.array, expected.array, atol=1e-5)
    assert np.abs(c.array - a.array).max() > 0.1


@needs_exported
def test_new_image_sizes_and_batches_reuse_one_runner(image):
    model = random_vitt()
    p = Predictor(model, device="cpu", input_size=SMALL, backend=EXPORTED[0])
    runner = p.runner()
    images = [image, image[:30], image[:, :20], image.transpose(1, 0, 2).copy(), image[::-1].copy()]
    preds = p.predict_many(images, batch_size=2)                              # batched, several sizes
    assert p.runner() is runner and {q.backend for q in preds} == {EXPORTED[0]}
    reference = Predictor(model, device="cpu", input_size=SMALL, backend="torch")
    for im, q in zip(images, preds, strict=True):
        np.testing.assert_allclose(q.array, reference.predict(im).array, atol=2e-5)


def test_building_one_network_never_blocks_another(monkeypatch, image):
    """The runner is built under its own entry's lock: a slow export of one model does not stop
    another model from loading and predicting."""
    started, release = threading.Event(), threading.Event()
    slow_model, other = random_vitt(seed=1), random_vitt(seed=2)
    real_build = registry.build_runner

    def build(name, network, *args, **kwargs):
        if network is slow_model:
            started.set()
            assert release.wait(60)
        return real_build(name, network, *args, **kwargs)
    monkeypatch.setattr(registry, "build_runner", build)
    worker = threading.Thread(target=Predictor, args=(slow_model,), kwargs={"device": "cpu", "backend": "torch"})
    worker.start()
    try:
        assert started.wait(60)
        pred = Predictor(other, device="cpu", input_size=SMALL, backend="torch").predict(image)   # not blocked
        assert pred.array.shape == (45, 70)
    finally:
        release.set()
        worker.join(60)
    assert not worker.is_alive()


def test_torch_runner_runs_the_live_network_without_rebuilds(image):
    model = random_vitt()
    p = Predictor(model, device="cpu", input_size=SMALL, backend="torch")
    runner = p.runner()
    assert isinstance(runner, TorchRunner) and runner.snapshot is False
    before = p.predict(image).array
    with torch.no_grad():
        model.depth_head.scratch.output_conv2[2].bias += 0.5
    after = p.predict(image).array
    assert p.runner() is runner and np.abs(after - before).max() > 0.1


def test_cli_backend_flag_reaches_the_predictor(tmp_path, image, capsys):
    from PIL import Image

    from pipeline.cli import build_parser, main
    from pipeline.weights.loading import save_checkpoint
    ckpt = save_checkpoint(random_vitt(seed=4), tmp_path / "tiny.safetensors", model_id="tiny")
    Image.fromarray(image).save(tmp_path / "a.png")
    arrays = {}
    for backend, says in [("torch", "PyTorch"), *[(b, {"openvino": "OpenVINO", "onnxruntime": "ONNX Runtime"}[b])
                                                  for b in EXPORTED]]:
        out = tmp_path / backend
        assert main(["predict", str(tmp_path / "a.png"), "--out", str(out), "--checkpoint", str(ckpt),
                     "--input-size", str(SMALL), "--backend", backend]) == 0
        assert f"with {says}" in capsys.readouterr().err
        arrays[backend] = np.load(out / "a.npy")
    for backend in EXPORTED:
        np.testing.assert_allclose(arrays[backend], arrays["torch"], atol=2e-5)
    args = build_parser("pseudo-label").parse_args(["pseudo-label", "--db", "x.db", "--backend", "onnxruntime"])
    assert args.backend == "onnxruntime"


def test_the_disk_cache_keeps_the_most_recently_used_entries(tmp_path):
    import os
    import time
    for i in range(5):
        (tmp_path / f"vitt-v2-{i}").mkdir()
        os.utime(tmp_path / f"vitt-v2-{i}", (time.time() - 100 + i, time.time() - 100 + i))
    crashed = tmp_path / ".vitt-v2-x.abc"
    crashed.mkdir()
    os.utime(crashed, (time.time() - 2 * cache.STALE_TMP_S,) * 2)
    building = tmp_path / ".vitt-v2-y.def"                       # another process's build in progress
    building.mkdir()
    inside = tmp_path / "vitt-v2-3" / ".openvino-pt-2026.4.1.xyz"   # a runtime's build that crashed in an entry
    inside.mkdir()
    os.utime(inside, (time.time() - 2 * cache.STALE_TMP_S,) * 2)
    (tmp_path / "vitt-v2-3" / "onnx").mkdir()
    os.utime(tmp_path / "vitt-v2-3", (time.time() - 97, time.time() - 97))
    cache.touch(tmp_path / "vitt-v2-0")                         # used just now
    removed = cache.prune(tmp_path, keep=3)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".vitt-v2-y.def", "vitt-v2-0", "vitt-v2-3", "vitt-v2-4"]
    assert sorted(p.name for p in removed) == [".openvino-pt-2026.4.1.xyz", ".vitt-v2-x.abc", "vitt-v2-1", "vitt-v2-2"]
    assert [p.name for p in (tmp_path / "vitt-v2-3").iterdir()] == ["onnx"]
    assert (tmp_path / "vitt-v2-3").stat().st_mtime < (tmp_path / "vitt-v2-4").stat().st_mtime   # order kept


def test_weights_over_the_size_limit_go_to_one_external_data_file(monkeypatch, tmp_path):
    """vitg (4.5 GB of float32) exceeds protobuf's 2 GB: its weights must go beside the file. Checked on
    vitt with the limit lowered: the written file names its .data file and runs from another folder."""
    ort = pytest.importorskip("onnxruntime")
    from pipeline.runtime import onnx_export
    from pipeline.runtime.export import _move_into_place
    monkeypatch.setattr(onnx_export, "EXTERNAL_DATA_BYTES", 10_000)
    model = random_vitt()
    made = onnx_export.export_onnx(model, tmp_path / "model.onnx", metadata={"encoder": "vitt"})
    assert (tmp_path / "model.onnx.data").stat().st_size > 1_000_000
    out = tmp_path / "elsewhere" / "tiny.onnx"
    out.parent.mkdir()
    _move_into_place(made, out)
    assert sorted(p.name for p in out.parent.iterdir()) == ["tiny.onnx", "tiny.onnx.data"]
    assert onnx_export.read_metadata(out)["encoder"] == "vitt"
    x = torch.randn(2, 3, 42, 56)
    got = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, {"pixel_values": x.numpy()})[0]
    with torch.inference_mode():
        np.testing.assert_allclose(got, model(x).numpy(), atol=1e-5)


@pytest.mark.skipif(not registry.BACKENDS["openvino"].installed(), reason="openvino is not installed")
def test_an_ir_of_the_older_onnx_conversion_in_the_cache_is_never_used(tmp_path, image):
    """Entries made before the IR came from the PyTorch frontend hold openvino-<version>/ converted from
    ONNX; the backend builds and uses openvino-pt-<version>/ beside it."""
    from pipeline.runtime.openvino_rt import ir_folder, release
    model = random_vitt(seed=5)
    entry, _ = registry.cache_entry(model, model.config, tmp_path)
    old = entry / f"openvino-{release()}"
    old.mkdir()
    (old / "model.xml").write_text("<net>an IR of the old layout</net>")
    with warnings.catch_warnings():
        warnings.simplefilter("error")                              # no fallback warning
        p = Predictor(model, device="cpu", input_size=SMALL, backend="openvino", cache_dir=tmp_path)
        got = p.predict(image).array
    assert p.backend == "openvino" and (ir_folder(entry) / "model.xml").is_file() and ir_folder(entry) != old
    expected = Predictor(model, device="cpu", input_size=SMALL, backend="torch").predict(image).array
    np.testing.assert_allclose(got, expected, atol=1e-5)
