"""Pseudo-labelling into the store: one prediction + label + confidence per image, resumable."""
from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline.config import ModelConfig
from pipeline.intake.pseudo_label import predict_with_flip, run_pseudo_label
from pipeline.labels.corrections import flip_consistency
from pipeline.model import DepthAnything
from pipeline.predictor import Predictor
from pipeline.store import Store
from pipeline.weights.loading import save_checkpoint

ROOT = Path(__file__).resolve().parents[1]
INPUT_SIZE = 42
MODEL_ID = "vitt-teacher"


def make_checkpoint(path: Path) -> Path:
    torch.manual_seed(0)
    return save_checkpoint(DepthAnything(ModelConfig(encoder="vitt")).eval(), path, model_id=MODEL_ID)


def png_bytes(rgb: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "PNG")
    return buf.getvalue()


def make_store(path: Path, n: int, seed: int = 0) -> Store:
    """A store with n small random images of different heights."""
    store = Store(path)
    rng = np.random.default_rng(seed)
    for i in range(n):
        rgb = rng.integers(0, 256, (28 + 2 * i, 36, 3), dtype=np.uint8)
        store.add_image(png_bytes(rgb), f"im{i}.png", width=36, height=28 + 2 * i, source="test")
    return store


def job_env() -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2"}


def prediction_rows(store: Store) -> list[tuple]:
    return [tuple(r) for r in store.db.execute(
        "SELECT image_id, model_id, COUNT(*) FROM predictions GROUP BY image_id, model_id ORDER BY image_id")]


def arrays_by_image(store: Store) -> dict[int, np.ndarray]:
    return {i: store.prediction_array(store.get_prediction(i, MODEL_ID)) for i in store.image_ids()}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("ck") / "teacher.safetensors")


@pytest.fixture(scope="module")
def predictor(checkpoint) -> Predictor:
    return Predictor.from_checkpoint(checkpoint, device="cpu", input_size=INPUT_SIZE)


def test_pseudo_label_writes_prediction_label_and_flip_confidence(tmp_path, predictor):
    store = make_store(tmp_path / "s.db", 2)
    summary = run_pseudo_label(store, predictor)
    assert (summary.total, summary.done, summary.already, summary.failed) == (2, 2, 0, [])
    for image_id in store.image_ids():
        img = store.get_image(image_id)
        pred = store.get_prediction(image_id, MODEL_ID)
        rgb = np.asarray(Image.open(img.path))
        # the confidence is the flip consistency of the model's own two forward passes
        plain = predictor.predict(rgb).array
        expected, _ = flip_consistency(plain, predictor.predict(rgb[:, ::-1].copy()).array)
        assert pred.confidence == pytest.approx(expected, abs=1e-4) and 0 < pred.confidence < 1
        assert img.confidence == pred.confidence and img.status == "pending"
        label = store.load_label(store.head(image_id))
        assert label.revision.tool == "pseudo_label" and label.revision.number == 1
        assert label.revision.author == f"model:{MODEL_ID}" and label.revision.prediction_id == pred.id
        np.testing.assert_array_equal(label.depth, store.prediction_array(pred))
        np.testing.assert_allclose(label.depth, plain, rtol=1e-4, atol=1e-5)
    # a second run has nothing to do and writes nothing
    again = run_pseudo_label(store, predictor)
    assert (again.total, again.done) == (0, 0)
    assert prediction_rows(store) == [(i, MODEL_ID, 1) for i in store.image_ids()]
    assert all(len(store.history(i).revisions) == 1 for i in store.image_ids())


def test_limit_and_unreadable_images_are_skipped_and_reported(tmp_path, predictor):
    store = make_store(tmp_path / "s.db", 2)
    bad, _ = store.add_image(b"this is not an image", "broken.png", width=10, height=10)
    first = run_pseudo_label(store, predictor, limit=1)
    assert (first.total, first.done) == (1, 1)
    rest = run_pseudo_label(store, predictor)
    assert rest.total == 2 and rest.done == 1
    assert [i for i, _ in rest.failed] == [bad.id] and f"image {bad.id}" in rest.failed[0][1]
    assert store.get_prediction(bad.id, MODEL_ID) is None


def test_overlapped_writer_gives_the_same_rows_and_values(tmp_path, predictor):
    plain = make_store(tmp_path / "plain.db", 3)
    over = make_store(tmp_path / "over.db", 3)
    for st in (plain, over):
        st.add_image(b"not an image either", "broken.png", width=8, height=8)
    a = run_pseudo_label(plain, predictor, overlap=False)
    b = run_pseudo_label(over, predictor, overlap=True)
    assert (a.done, len(a.failed)) == (b.done, len(b.failed)) == (3, 1)
    # the same values to float rounding: OpenVINO answers a shape's 3rd call on with a static model
    assert a.confidences == pytest.approx(b.confidences, abs=1e-6)
    assert prediction_rows(over) == prediction_rows(plain)
    for i in plain.image_ids()[:3]:
        want = plain.prediction_array(plain.get_prediction(i, MODEL_ID))
        np.testing.assert_allclose(over.prediction_array(over.get_prediction(i, MODEL_ID)), want,
                                   rtol=0, atol=1e-5 * float(np.ptp(want)))
    assert run_pseudo_label(over, predictor, overlap=True).done == 0


def test_predict_with_flip_is_one_batch_of_two(predictor, monkeypatch):
    calls = []
    real = predictor._run_batch
    monkeypatch.setattr(predictor, "_run_batch", lambda decoded: calls.append(len(decoded)) or real(decoded))
    rgb = np.random.default_rng(5).integers(0, 256, (30, 40, 3), dtype=np.uint8)
    array, score, conf_map = predict_with_flip(predictor, rgb)
    assert calls == [2] and array.shape == (30, 40) and conf_map.shape == (30, 40)
    assert score == pytest.approx(float(conf_map.mean()), abs=1e-6)


def _cli(db: Path, checkpoint: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "pipeline", "pseudo-label", "--db", str(db), "--checkpoint",
            str(checkpoint), "--input-size", str(INPUT_SIZE), "--device", "cpu", *extra]


@pytest.mark.slow
def test_kill_9_mid_run_then_resume_equals_an_uninterrupted_run(tmp_path, checkpoint):
    n = 6
    store = make_store(tmp_path / "killed.db", n)
    proc = subprocess.Popen(_cli(store.path, checkpoint, "--delay", "0.4"), env=job_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while store.db.execute("SELECT COUNT(*) FROM predictions").fetchone()[0] < 2:
        assert proc.poll() is None and time.monotonic() < deadline, "pseudo-label ended too early"
        time.sleep(0.05)
    time.sleep(0.2)                                    # the next image is in flight (in its delay)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    kept = store.db.execute("SELECT COUNT(*) FROM predictions").fetchone()[0]
    assert 2 <= kept < n
    # every kept prediction has its label: the transaction never leaves half an image
    assert store.db.execute("SELECT COUNT(*) FROM revisions").fetchone()[0] == kept
    subprocess.run(_cli(store.path, checkpoint), env=job_env(), check=True, capture_output=True)
    assert prediction_rows(store) == [(i, MODEL_ID, 1) for i in store.image_ids()]
    assert all(len(store.history(i).revisions) == 1 for i in store.image_ids())

    clean = make_store(tmp_path / "clean.db", n)
    subprocess.run(_cli(clean.path, checkpoint), env=job_env(), check=True, capture_output=True)
    resumed, uninterrupted = arrays_by_image(store), arrays_by_image(clean)
    assert resumed.keys() == uninterrupted.keys()
    for i in resumed:
        np.testing.assert_array_equal(resumed[i], uninterrupted[i])
    conf = lambda s: [s.get_image(i).confidence for i in s.image_ids()]  # noqa: E731
    assert conf(store) == conf(clean)
