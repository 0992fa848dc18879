"""Metric depth in headless Chromium: hover read-out, two clicks give a distance in metres, the mesh opens in 3D.

The app serves a tiny random metric network (vitt, max depth 20 m): its metres are meaningless but
real metres all the same, so the distance the page shows is checked against pipeline.geometry.measure on the
prediction the server saved.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from pipeline.services import depth_readout

pytestmark = pytest.mark.e2e

EXAMPLE = Path(__file__).resolve().parents[2] / "assets" / "examples" / "chelsea.jpg"


@pytest.fixture(scope="module")
def metric_studio(app_runner, tmp_path_factory):
    import torch

    from pipeline.config import ModelConfig
    from pipeline.weights.loading import save_checkpoint, untrained_model
    work = tmp_path_factory.mktemp("metric_studio")
    torch.manual_seed(0)
    ckpt = save_checkpoint(untrained_model(ModelConfig(encoder="vitt", metric=True, max_depth=20.0)).model,
                           work / "tiny_metric.safetensors", model_id="tiny-metric")
    app = app_runner.start(work, ["--checkpoint", str(ckpt)])
    yield app
    app_runner.stop(app)


def client_point(page, selector: str, x: int, y: int) -> tuple[float, float]:
    """Where pixel (x, y) of an <img> is on screen, with Gradio's own mapping (contain-fit, never upscaled)."""
    return tuple(page.evaluate("""([sel, x, y]) => {
        const img = document.querySelector(sel), r = img.getBoundingClientRect();
        const s = Math.min(r.width / img.naturalWidth, r.height / img.naturalHeight, 1);
        return [r.left + (r.width - img.naturalWidth * s) / 2 + (x + 0.25) * s,
                r.top + (r.height - img.naturalHeight * s) / 2 + (y + 0.25) * s];
    }""", [selector, x, y]))


def newest_request(app) -> Path:
    folders = [p for p in (app.data_dir / "tmp").iterdir() if (p / "request.json").exists()]
    return max(folders, key=lambda p: p.stat().st_mtime)


def test_hover_and_two_clicks_measure_in_metres_and_the_mesh_opens(metric_studio, open_page):
    from playwright.sync_api import expect
    from test_studio_browser import DRAWN, wait_for_drawing
    page = open_page(1000)
    page.goto(metric_studio.url)
    page.locator("#depth-input input[type=file]").set_input_files(str(EXAMPLE))
    expect(page.locator("#depth-image-info")).to_contain_text("451×300 pixels", timeout=30_000)
    page.locator("#depth-run").click()
    expect(page.locator("#depth-summary-text")).to_contain_text("Depth in metres", timeout=90_000)
    expect(page.locator("#depth-legend")).to_contain_text("depth in metres from")
    picture = "#depth-measure img"
    expect(page.locator(picture)).to_have_count(1)

    page.mouse.move(*client_point(page, picture, 200, 150))
    hover = page.locator("#depth-hover")
    expect(hover).to_have_text(re.compile(r"^\(\d+, \d+\): \d+(\.\d+)? m$"), timeout=10_000)
    hx, hy, shown = re.match(r"^\((\d+), (\d+)\): (\S+) m$", hover.inner_text()).groups()
    assert abs(int(hx) - 200) <= 1 and abs(int(hy) - 150) <= 1            # the browser rounds the mouse position
    hover_pixel = (int(hx), int(hy))

    page.mouse.click(*client_point(page, picture, 90, 90))
    info = page.locator("#depth-measure-info")
    expect(info).to_contain_text("now click point B", timeout=30_000)
    page.mouse.click(*client_point(page, picture, 340, 240))
    expect(info).to_contain_text("distance", timeout=30_000)
    text = info.inner_text()
    match = re.search(r"A \((\d+), (\d+)\): .* B \((\d+), (\d+)\): .* distance (\d+\.\d+) m", text)
    assert match, text
    ax, ay, bx, by = (int(v) for v in match.groups()[:4])
    assert max(abs(ax - 90), abs(ay - 90), abs(bx - 340), abs(by - 240)) <= 1, text     # the pixels we clicked

    folder = newest_request(metric_studio)
    record = json.loads((folder / "request.json").read_text())
    depth = np.load(folder / f"{record['stem']}_depth.npy")
    expected = depth_readout.measure_points(depth, "metric_depth", record["focal_px"], [(ax, ay), (bx, by)])
    assert float(match.group(5)) == pytest.approx(expected["distance_m"], abs=0.0005)
    grid = depth_readout.hover_grid(depth)                                 # what the page was sent
    gx, gy = (int(np.floor(c / grid["step"] + 0.5)) for c in hover_pixel)
    assert float(shown) == pytest.approx(float(depth_readout.decode_grid(grid)[gy, gx]), rel=1e-3)

    page.get_by_role("tab", name="3D").click()
    expect(page.locator("#depth-summary-text")).to_contain_text("field of view 60.0°")
    page.locator("#depth-cloud-mode").get_by_label("mesh").check()
    expect(page.locator("#depth-cloud a[data-testid=model3d-download-link]")).to_have_attribute(
        "href", re.compile(r"chelsea_mesh\.glb"), timeout=60_000)
    share = wait_for_drawing(page.locator("#depth-cloud canvas"))
    assert share > DRAWN, f"the mesh canvas looks blank ({share:.3f} of pixels differ)"
    print(f"mesh canvas: {share:.3f} of pixels drawn")
