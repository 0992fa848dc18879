"""The train tab in headless Chromium (../shared/BROWSER-TESTS.md): start a tiny real run from the page,
watch it progress to 'done', see its loss curve, log and registered checkpoint; checked in the store too.

Slow: the run is a real `python -m pipeline train` process (tiny vitt, 3 steps on three 28x36 image /
depth pairs in a folder under the import root); most of its time is Python and torch start-up.
"""
from __future__ import annotations

import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

RUN = "browser-run"


def write_pairs(folder: Path) -> None:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    v, u = np.mgrid[0:28, 0:36].astype(np.float32)
    for i in range(3):
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (28, 36, 3), dtype=np.uint8)).save(buf, format="PNG")
        (folder / f"p{i}.png").write_bytes(buf.getvalue())
        np.save(folder / f"p{i}.npy", (1.0 / (0.05 * u + 0.1 * v + 1.0 + i)).astype(np.float32))


@pytest.fixture(scope="module")
def train_studio(tmp_path_factory, app_runner, vitt_checkpoint):
    """app.py with a tiny vitt checkpoint and a folder of image/depth pairs under its import root."""
    work = tmp_path_factory.mktemp("train_studio")
    write_pairs(work / "data" / "import" / "pairs")
    app = app_runner.start(work, ["--checkpoint", str(vitt_checkpoint), "--device", "cpu"])
    yield app
    app_runner.stop(app)


@pytest.fixture
def train_page(open_page):
    return open_page(1400)


def fill(page, elem_id: str, value: str) -> None:
    box = page.locator(f"#{elem_id} input, #{elem_id} textarea").first
    box.fill(value)
    box.press("Tab")


def test_start_a_run_and_watch_it_finish(train_studio, train_page):
    from playwright.sync_api import expect

    from pipeline.store import Store
    page = train_page
    page.goto(train_studio.url)
    page.get_by_role("tab", name="Train").click()
    expect(page.locator("#train-status")).to_contain_text("No training run yet", timeout=30_000)
    fill(page, "train-name", RUN)
    page.locator("#train-encoder input").click()
    page.get_by_role("option", name="vitt", exact=True).click()
    expect(page.locator("#train-start-note")).to_contain_text("Fine-tunes", timeout=30_000)   # the loaded model
    for elem_id, value in (("train-steps", "3"), ("train-batch-size", "2"), ("train-input-size", "28"),
                           ("train-save-every", "2"), ("train-folder", "pairs")):
        fill(page, elem_id, value)
    page.locator("#train-feature-alignment input[type=checkbox]").uncheck()
    page.locator("#train-start").click()

    status = page.locator("#train-status")
    expect(status).to_contain_text(f"{RUN} (job 1)", timeout=30_000)
    expect(status).to_contain_text("done", timeout=300_000)
    expect(status).to_contain_text("step 3/3")
    expect(page.locator("#train-log textarea")).to_have_value(re.compile(r"step 3/3 loss"))
    expect(page.locator("#train-checkpoints")).to_contain_text(RUN, timeout=10_000)
    expect(page.locator("#train-curves canvas, #train-curves svg").first).to_be_visible(timeout=10_000)
    expect(page.locator("#train-resume")).to_be_disabled()

    store = Store(train_studio.data_dir / "studio.db")
    job = store.get_job(1)
    assert (job.status, job.done, job.total) == ("done", 3, 3)
    assert 3 in {step for step, name, _ in store.job_metrics(1) if name == "loss"}   # the store's copy is throttled
    from pipeline.train.run_folder import RunFolder
    logged = RunFolder(train_studio.data_dir / "runs" / RUN).metrics.read_text().splitlines()
    assert [json.loads(line)["step"] for line in logged] == [1, 2, 3]                 # the curve's every step
    assert [c.model_id for c in store.list_checkpoints()] == [RUN]
