"""The curate tab in headless Chromium (../shared/BROWSER-TESTS.md): paint a mask, apply it, see the revision.

The store is prepared before the app starts (one image with a pseudo-label), then app.py is
launched with --db on it. Checks are made in the page AND in the store.
"""
from __future__ import annotations

import io
import time

import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.e2e

H, W = 120, 160


def scene() -> tuple[bytes, np.ndarray]:
    """A 160x120 PNG and its disparity (a tilted floor: larger = closer towards the bottom)."""
    y, x = np.mgrid[0:H, 0:W]
    rgb = np.stack([x * 1.5, y * 2, 255 - y * 2], -1).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return buf.getvalue(), (1.0 + y / H).astype(np.float32)


@pytest.fixture(scope="module")
def curate_studio(tmp_path_factory, app_runner, vitt_checkpoint):
    """app.py on a store holding one pseudo-labelled image, with a tiny vitt checkpoint."""
    from pipeline.store import Store
    work = tmp_path_factory.mktemp("curate_studio")
    db = work / "labels.db"
    store = Store(db)
    data, disparity = scene()
    rec, _ = store.add_image(data, "floor.png", width=W, height=H)
    store.add_prediction(rec.id, "teacher", "disparity", disparity, confidence=0.4)
    app = app_runner.start(work, ["--checkpoint", str(vitt_checkpoint), "--db", str(db)])
    yield app, db, rec.id
    app_runner.stop(app)


@pytest.fixture
def curate_page(open_page):
    return open_page(1400)


def wait_until(check, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.25)
    return check()


def drawn_share(png: bytes) -> float:
    """Share of pixels that differ from the most common colour (an empty canvas ~0, the image ~1)."""
    px = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).reshape(-1, 3)
    _, counts = np.unique(px, axis=0, return_counts=True)
    return 1.0 - counts.max() / len(px)


def paint_stroke(page, canvas) -> None:
    """A short brush stroke near the canvas centre, inside the image (the canvas is wider than the
    image, and a stroke that starts beside the image draws nothing). Mouse events only land inside
    the viewport, hence the scroll."""
    canvas.scroll_into_view_if_needed()
    box = canvas.bounding_box()
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(cx - 0.08 * box["width"], cy - 0.1 * box["height"])
    page.mouse.down()
    for i in range(1, 7):
        page.mouse.move(cx - 0.08 * box["width"] + i * 0.025 * box["width"], cy - 0.1 * box["height"] + i * 0.03 * box["height"],
                        steps=2)
    page.mouse.up()


def test_paint_an_ignore_mask_and_see_the_new_revision(curate_studio, curate_page):
    from playwright.sync_api import expect

    from pipeline.store import Store
    app, db, image_id = curate_studio
    page = curate_page
    page.goto(app.url)
    page.get_by_role("tab", name="Curate").click()
    expect(page.locator("#curate-counts")).to_contain_text("pending: 1", timeout=30_000)
    page.locator("#curate-gallery img").first.click()
    expect(page.locator("#curate-header")).to_contain_text("floor.png", timeout=30_000)
    expect(page.locator("#curate-header")).to_contain_text("revision 1 (pseudo_label")

    canvas = page.locator("#curate-editor canvas").first
    expect(canvas).to_be_visible(timeout=30_000)
    canvas.scroll_into_view_if_needed()
    # the background image arrives after the event: painting before it is drawn would be reset
    assert wait_until(lambda: drawn_share(canvas.screenshot()) > 0.1, 60), "the editor never showed the image"
    expect(page.locator("#curate-editor button[aria-label='Brush']")).to_be_visible()   # the default tool
    paint_stroke(page, canvas)
    page.locator("#curate-apply").click()

    store = Store(db)
    head = wait_until(lambda: (h := store.head(image_id)) and h.tool == "ignore_mask" and h, 60)
    assert head, f"no new revision in the store; app log:\n{app.log()[-3000:]}"
    mask = store.load_label(head).masks["ignore"]
    painted = int(np.asarray(mask, bool).sum())
    assert 0.005 * H * W < painted < 0.5 * H * W, painted          # the stroke, not nothing and not everything
    assert store.load_label(head).revision.depth_sha256 == store.history(image_id).revisions[0].depth_sha256
    page.get_by_role("tab", name="History").click()
    expect(page.locator("#curate-history")).to_contain_text("ignore_mask", timeout=30_000)
    expect(page.locator("#curate-history")).to_contain_text("◀ head")
    expect(page.locator("#curate-header")).to_contain_text("corrected")

    page.locator("#curate-header").click()                         # focus off any field: shortcuts apply
    page.keyboard.press("a")
    assert wait_until(lambda: store.get_image(image_id).status == "accepted"), "the 'a' key did not accept"
    expect(page.locator("#curate-counts")).to_contain_text("accepted: 1", timeout=30_000)


def test_named_endpoints_keep_the_selected_image_in_the_session(curate_studio, tmp_path):
    """gradio_client: open an image by id, undo through the API (same session), see the store follow."""
    from gradio_client import Client

    from pipeline.store import Store
    app, db, image_id = curate_studio
    store = Store(db)
    before = store.history(image_id)
    client = Client(app.url, download_files=str(tmp_path / "downloads"), verbose=False)
    opened = client.predict(image_id, api_name="/curate_open")
    assert "floor.png" in opened[0]
    undone = client.predict(api_name="/curate_undo")
    after = store.history(image_id)
    assert len(after.revisions) == len(before.revisions)                 # undo adds nothing
    assert after.head_id == before.head.parent_id and f"revision {after.head.number}" in undone[0]
    redone = client.predict(api_name="/curate_redo")
    assert store.history(image_id).head_id == before.head_id and "floor.png" in redone[0]
