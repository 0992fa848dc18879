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


def wait_for_drawing(locator, threshold=0.08, timeout=60.0) -> float:
    deadline, share = time.monotonic() + timeout, 0.0
    while time.monotonic() < deadline:
        share = drawn_share(locator.screenshot())
        if share > threshold:
            return share
        time.sleep(0.25)
    return share


def test_upload_predict_slider_and_point_cloud(studio, studio_page):
    from playwright.sync_api import expect
    page = studio_page
    page.goto(studio.url)
    page.locator("#depth-input input[type=file]").set_input_files(str(EXAMPLE))
    expect(page.locator("#depth-image-info")).to_contain_text("451×300 pixels", timeout=30_000)
    page.locator("#depth-run").click()
    expect(page.locator("#depth-slider img")).to_have_count(2, timeout=90_000)
    expect(page.locator("#depth-summary-text")).to_contain_text("Relative disparity", timeout=30_000)
    expect(page.locator("#depth-cloud a[data-testid=model3d-download-link]")).to_have_attribute(
        "href", re.compile(r"chelsea_points\.ply"), timeout=30_000)
    share = wait_for_drawing(page.locator("#depth-cloud canvas"))
    assert share > 0.08, f"the point cloud canvas looks blank ({share:.3f} of pixels differ)"
    print(f"point cloud canvas: {share:.3f} of pixels drawn")
    expect(page.locator("#depth-png16 a").first).to_have_attribute("download", "chelsea_depth16.png")


def test_a_bad_upload_shows_the_message_in_the_page(studio, studio_page, tmp_path):
    from playwright.sync_api import expect
    page = studio_page
    bad = tmp_path / "holiday.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 definitely not a whole JPEG")
    page.goto(studio.url)
    page.locator("#depth-input input[type=file]").set_input_files(str(bad))
    page.locator("#depth-run").click()
    expect(page.get_by_text("holiday.jpg").first).to_be_visible(timeout=30_000)
    expect(page.locator("#depth-image-info")).to_contain_text("Cannot use this image", timeout=30_000)


def test_missing_weights_banner_is_on_the_page(studio_no_weights, studio_page):
    from playwright.sync_api import expect
    page = studio_page
    page.goto(studio_no_weights.url)
    banner = page.locator("#studio-banner")
    expect(banner).to_contain_text("Untrained weights in use", timeout=30_000)
    expect(banner).to_contain_text("depth_anything_v2_vits.pth")
    expect(banner).to_contain_text("--checkpoint")
