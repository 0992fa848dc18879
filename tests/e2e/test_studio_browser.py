"""The studio in headless Chromium (../shared/BROWSER-TESTS.md): upload, slider, a point cloud really drawn."""
from __future__ import annotations

import io
import re
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.e2e

EXAMPLE = Path(__file__).resolve().parents[2] / "assets" / "examples" / "chelsea.jpg"


@pytest.fixture
def studio_page(open_page):
    return open_page(1100)


def drawn_share(png: bytes) -> float:
    """Share of pixels that differ from the most common colour (blank canvas ~0.02, a cloud ~0.2)."""
    px = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).reshape(-1, 3)
    colours, counts = np.unique(px, axis=0, return_counts=True)
    return 1.0 - counts.max() / len(px)


BLANK = 0.02          # share of a canvas Babylon drew nothing on (../shared/BROWSER-TESTS.md)
DRAWN = 2 * BLANK     # the recipe weights' odd cloud fills about 0.057 of the wide 3D tab; real clouds 0.2-0.3


def wait_for_drawing(locator, threshold=DRAWN, timeout=120.0) -> float:
    """Poll the canvas until it is drawn. A screenshot waits for the element to be stable, which a
    busy machine can delay past one screenshot's own limit: that counts as "not yet", not a failure
    (software WebGL under a full test run has needed more than a minute)."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    deadline, share, taken = time.monotonic() + timeout, 0.0, 0
    while time.monotonic() < deadline:
        try:
            share = drawn_share(locator.screenshot(timeout=max(1000, 1000 * (deadline - time.monotonic()))))
            taken += 1
        except PlaywrightTimeout:
            continue
        if share > threshold:
            return share
        time.sleep(0.25)
    assert taken, f"no screenshot of the canvas could be taken in {timeout:.0f} s (each one timed out)"
    return share


def names_fit(page, selector: str) -> list[str]:
    """File names in a gr.File list that the page cuts short (Gradio truncates the stem in narrow boxes)."""
    return page.evaluate("""(sel) => [...document.querySelectorAll(sel + ' td.filename')]
        .filter(td => td.scrollWidth > td.clientWidth + 1 || [...td.querySelectorAll('span')]
            .some(s => s.scrollWidth > s.clientWidth + 1))
        .map(td => td.getAttribute('aria-label'))""", selector)


def test_upload_predict_slider_and_point_cloud(studio, studio_page):
    from playwright.sync_api import expect
    page = studio_page
    page.goto(studio.url)
    page.locator("#depth-input input[type=file]").set_input_files(str(EXAMPLE))
    expect(page.locator("#depth-image-info")).to_contain_text("451×300 pixels", timeout=30_000)
    page.locator("#depth-run").click()
    expect(page.locator("#depth-summary-text")).to_contain_text("Relative disparity", timeout=90_000)
    expect(page.locator("#depth-measure img")).to_have_count(1)
    expect(page.locator("#depth-legend .depth-bar")).to_have_count(1)
    page.get_by_role("tab", name="Image | depth").click()
    expect(page.locator("#depth-slider img")).to_have_count(2, timeout=30_000)
    page.get_by_role("tab", name="3D").click()
    expect(page.locator("#depth-cloud a[data-testid=model3d-download-link]")).to_have_attribute(
        "href", re.compile(r"chelsea_points\.ply"), timeout=30_000)
    share = wait_for_drawing(page.locator("#depth-cloud canvas"))
    assert share > DRAWN, f"the point cloud canvas looks blank ({share:.3f} of pixels differ)"
    print(f"point cloud canvas: {share:.3f} of pixels drawn")
    page.get_by_role("tab", name="Downloads").click()
    downloads = page.locator("#depth-downloads")
    expect(downloads.locator("a[download='chelsea_depth16.png']")).to_have_count(1, timeout=30_000)
    assert names_fit(page, "#depth-downloads") == []                      # names shown whole, not ".p" / ".r"
    page.locator("#depth-export").click()
    expect(page.locator("#depth-zip a[download='chelsea_all.zip']")).to_have_count(1, timeout=60_000)
    for name in ("chelsea_points_full.ply", "chelsea_depth.exr", "chelsea_mesh.glb", "chelsea_normals.png"):
        expect(downloads.locator(f"a[download='{name}']")).to_have_count(1)
    assert names_fit(page, "#depth-downloads") == []


def test_new_colours_reach_the_page_under_a_new_url(studio, studio_page):
    """The request's files are served where they lie (Gradio static paths); a re-colouring moves the picture."""
    from playwright.sync_api import expect
    page = studio_page
    page.goto(studio.url)
    page.locator("#depth-input input[type=file]").set_input_files(str(EXAMPLE))
    page.locator("#depth-run").click()
    picture = page.locator("#depth-measure img")
    expect(picture).to_have_count(1, timeout=90_000)
    before = picture.get_attribute("src")
    assert "/gradio_api/file=" in before and before.endswith("/chelsea_depth_color.png")
    page.get_by_text("Colour range (clip)").click()
    page.locator("#depth-vmax input").fill("0.5")
    page.locator("#depth-apply-range").click()
    expect(picture).to_have_attribute("src", re.compile(r"/colour-1/chelsea_depth_color\.png$"), timeout=30_000)
    old, new = (page.request.get(u).body() for u in (before, picture.get_attribute("src")))
    assert old[:8] == new[:8] == b"\x89PNG\r\n\x1a\n" and old != new


def test_a_failed_prediction_clears_the_previous_result(studio, studio_page, tmp_path):
    from playwright.sync_api import expect
    page = studio_page
    page.goto(studio.url)
    page.locator("#depth-input input[type=file]").set_input_files(str(EXAMPLE))
    page.locator("#depth-run").click()
    expect(page.locator("#depth-measure img")).to_have_count(1, timeout=90_000)
    bad = tmp_path / "holiday.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 definitely not a whole JPEG")
    page.locator("#depth-input input[type=file]").set_input_files(str(bad))
    expect(page.locator("#depth-image-info")).to_contain_text("Cannot use this image", timeout=30_000)
    page.locator("#depth-run").click()
    expect(page.get_by_text("holiday.jpg").first).to_be_visible(timeout=30_000)
    expect(page.locator("#depth-measure img")).to_have_count(0, timeout=30_000)     # the cat's depth is gone
    expect(page.locator("#depth-summary-text")).to_have_text("")
    expect(page.locator("#depth-legend")).to_contain_text("Compute depth to see")


def test_missing_weights_banner_is_one_line_with_details(studio_no_weights, studio_page):
    from playwright.sync_api import expect
    page = studio_page
    page.goto(studio_no_weights.url)
    banner = page.locator("#studio-banner")
    expect(banner).to_contain_text("Untrained weights in use", timeout=30_000)
    line = banner.locator(".studio-warning-line")
    expect(line).to_contain_text("Weights for Depth Anything V2 Small are missing")
    box = banner.locator(".studio-warning").bounding_box()
    assert box["height"] < 80, box                                  # one line and a closed fold, not a wall
    details = banner.locator("details")
    expect(details).not_to_have_attribute("open", "")
    expect(details).to_contain_text("depth_anything_v2_vits.pth")
    expect(details).to_contain_text("--checkpoint")
    banner.get_by_text("Details and how to fix").click()
    expect(details.get_by_text("--checkpoint FILE")).to_be_visible()
