"""The Curate tab in headless Chromium at 1440x900 (../shared/BROWSER-TESTS.md): the layout keeps image,
label and tools on screen; a magic-wand click selects a wall and a tool applies to it; brush strokes and
the brush-size keys; bulk accept; calibration from a known distance makes a metric revision; the API.

The store is prepared before the app starts (a ray-cast room whose pseudo-label is disparity with no
shift, two more images), then app.py is launched with --db on it. Checks are made in the page AND in
the store. Every test opens the page fresh; the app is shared by the module, so the tests run in order
on the same store.
"""
from __future__ import annotations

import io
import time

import numpy as np
import pytest
from PIL import Image
from synthetic_geometry import room

pytestmark = pytest.mark.e2e

H, W = 120, 160
S0 = 2.0                                       # label = 1 / (S0 * Z): disparity without a shift
VIEWPORT = {"width": 1440, "height": 900}


@pytest.fixture(scope="module")
def scene():
    return room(H, W, focal=140.0)


def png_of(rgb: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def curate_studio(tmp_path_factory, app_runner, vitt_checkpoint, scene):
    """app.py on a store holding the room (image 1, least confident) and two plain images."""
    from pipeline.store import Store
    work = tmp_path_factory.mktemp("curate_studio")
    db = work / "labels.db"
    store = Store(db)
    shade = np.clip(255 * (1.0 - scene.depth / scene.depth.max()), 0, 255).astype(np.uint8)
    rgb = np.stack([shade, (scene.floor * 180).astype(np.uint8), (scene.wall * 200).astype(np.uint8)], -1)
    rec, _ = store.add_image(png_of(rgb), "room.png", width=W, height=H)
    store.add_prediction(rec.id, "teacher", "disparity", (1.0 / (S0 * scene.depth)).astype(np.float32),
                         confidence=0.2)
    for i in (1, 2):
        other = np.random.default_rng(i).integers(0, 256, (H, W, 3), dtype=np.uint8)
        r, _ = store.add_image(png_of(other), f"other{i}.png", width=W, height=H)
        store.add_prediction(r.id, "teacher", "disparity", np.full((H, W), float(i), np.float32),
                             confidence=0.5 + 0.1 * i)
    app = app_runner.start(work, ["--checkpoint", str(vitt_checkpoint), "--db", str(db)])
    yield app, db, rec.id
    app_runner.stop(app)


@pytest.fixture
def page(open_page):
    """A 1440x900 page (conftest's `open_page`: no JavaScript error allowed)."""
    return open_page(height=VIEWPORT["height"], width=VIEWPORT["width"])


def wait_until(check, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.25)
    return check()


def open_room(page, app) -> None:
    from playwright.sync_api import expect
    page.goto(app.url)
    page.get_by_role("tab", name="Curate").click()
    page.locator("#curate-gallery img").first.click()              # worst first: the room
    expect(page.locator("#curate-header")).to_contain_text("room.png", timeout=60_000)


def drawn_share(png: bytes) -> float:
    """Share of pixels that differ from the most common colour (an empty canvas ~0, the image ~1)."""
    px = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).reshape(-1, 3)
    _, counts = np.unique(px, axis=0, return_counts=True)
    return 1.0 - counts.max() / len(px)


def toasts(page) -> list[str]:
    return [t.inner_text()[:300] for t in page.locator("[data-testid='toast-text']").all()]


def click_pixel(page, hw) -> None:
    """Click the view at the image's pixel [h, w]: the picture (the image enlarged for display) is shown
    scaled down to fit, centred in the <img> box (object-fit: scale-down)."""
    img = page.locator("#curate-view img").first
    box = img.bounding_box()
    natural_w, natural_h = img.evaluate("e => [e.naturalWidth, e.naturalHeight]")
    scale = min(1.0, box["width"] / natural_w, box["height"] / natural_h) * natural_w / W
    x0, y0 = box["x"] + (box["width"] - W * scale) / 2, box["y"] + (box["height"] - H * scale) / 2
    page.mouse.click(x0 + (hw[1] + 0.5) * scale, y0 + (hw[0] + 0.5) * scale)


def choose(page, elem_id: str, option: str) -> None:
    page.locator(f"#{elem_id} input").first.click()
    page.get_by_role("option", name=option, exact=True).click()


def inside_viewport(box) -> bool:
    return box is not None and box["x"] >= 0 and box["y"] >= 0 and box["x"] + box["width"] <= VIEWPORT["width"] \
        and box["y"] + box["height"] <= VIEWPORT["height"]


def test_image_label_and_tools_fit_one_1440x900_screen(curate_studio, page):
    app, _, _ = curate_studio
    open_room(page, app)
    for elem in ("#curate-view", "#curate-header", "#curate-accept", "#curate-opacity", "#curate-mode",
                 "#curate-tool", "#curate-apply", "#curate-undo", "#curate-gallery"):
        box = page.locator(elem).first.bounding_box()
        assert inside_viewport(box), (elem, box)
    view = page.locator("#curate-view").bounding_box()
    assert view["height"] >= 450 and view["width"] >= 550                   # not a 350 px canvas
    # pickers show their choice whole: the longest tool name and sort order are not cut off
    page.locator("#curate-tool input").first.click()
    page.get_by_role("option", name="Ignore (glass, mirrors, reflections)", exact=True).click()
    for elem in ("#curate-tool input", "#curate-sort input", "#curate-mode input"):
        widths = page.locator(elem).first.evaluate("e => [e.scrollWidth, e.clientWidth]")
        assert widths[0] <= widths[1], (elem, widths)
    page_info = page.locator("#curate-page-info").first.evaluate("e => [e.scrollWidth, e.clientWidth]")
    assert page_info[0] <= page_info[1], page_info
    assert page.evaluate("window.scrollY") == 0
    # the label is over the image: at opacity 1 the view shows the label's colours, at 0 the image's
    shown = page.locator("#curate-view img").first.get_attribute("src")
    track = page.locator("#curate-opacity input[type=range]").bounding_box()
    page.mouse.click(track["x"] + track["width"] - 1, track["y"] + track["height"] / 2)     # opacity 1: the label
    assert wait_until(lambda: page.locator("#curate-view img").first.get_attribute("src") != shown, 30)


def test_a_magic_wand_click_selects_the_wall_and_apply_marks_it(curate_studio, page, scene):
    from playwright.sync_api import expect

    from pipeline.store import Store
    app, db, image_id = curate_studio
    store = Store(db)
    before = store.head(image_id)
    open_room(page, app)
    choose(page, "curate-mode", "Magic wand: same plane (floors, walls)")
    page.locator("#curate-tolerance input[type=number]").fill("0.02")
    page.locator("#curate-tolerance input[type=number]").press("Enter")
    wall = np.argwhere(scene.wall)
    click_pixel(page, wall[len(wall) // 2])
    expect(page.locator("#curate-selection-info")).to_contain_text("Selected:", timeout=60_000)
    choose(page, "curate-tool", "Ignore (glass, mirrors, reflections)")
    page.locator("#curate-apply").click()
    head = wait_until(lambda: (h := store.head(image_id)) and h.id != before.id and h, 60)
    assert head and head.tool == "ignore_mask", f"no new revision; app log:\n{app.log()[-3000:]}"
    ignored = store.load_label(head).masks["ignore"].astype(bool)
    assert (ignored & scene.wall).sum() >= 0.9 * scene.wall.sum() and (ignored & ~scene.wall).sum() <= 0.05 * ignored.sum()
    expect(page.locator("#curate-header")).to_contain_text("corrected", timeout=30_000)
    expect(page.locator("#curate-header")).to_contain_text("revision 2 of 2")
    page.locator("#curate-header").click()                          # focus off any field: shortcuts apply
    page.keyboard.press("u")                                        # undo: the only correction
    assert wait_until(lambda: store.head(image_id).id == before.id), "the 'u' key did not undo"
    expect(page.locator("#curate-header")).to_contain_text("pending", timeout=30_000)
    expect(page.locator("#curate-header")).to_contain_text("at the first revision: nothing to undo")


@pytest.mark.slow          # about 35 s: the canvas is polled until the image is drawn (SwiftShader)
def test_brush_strokes_and_the_brush_size_keys(curate_studio, page):
    from pipeline.store import Store
    app, db, image_id = curate_studio
    store = Store(db)
    before = store.head(image_id).id
    open_room(page, app)
    page.get_by_role("tab", name="Brush").click()
    canvas = page.locator("#curate-editor canvas").first
    canvas.wait_for(timeout=30_000)
    page.locator("#curate-header").click()
    page.keyboard.press("]")
    page.keyboard.press("]")
    assert wait_until(lambda: page.locator("#curate-editor").get_attribute("data-brush-size") not in (None, ""), 10)
    bigger = int(page.locator("#curate-editor").get_attribute("data-brush-size"))
    page.keyboard.press("[")
    assert wait_until(lambda: int(page.locator("#curate-editor").get_attribute("data-brush-size")) == bigger - 5, 10)
    assert page.locator("#curate-editor input[type=range]").count() == 0            # the size popup closed again
    page.locator("#curate-editor button[aria-label='Brush Size']").click()
    assert int(page.locator("#curate-editor input[type=range]").input_value()) == bigger - 5   # the editor's own size
    page.locator("#curate-header").click()                                         # a click outside closes it
    # the background arrives after the tab opens: painting before it is drawn would be reset
    assert wait_until(lambda: drawn_share(canvas.screenshot()) > 0.1, 60), "the editor never showed the image"
    box = canvas.bounding_box()
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(cx - 30, cy)
    page.mouse.down()
    for i in range(1, 6):
        page.mouse.move(cx - 30 + 12 * i, cy + 4 * i, steps=2)
    page.mouse.up()
    choose(page, "curate-tool", "Ignore (glass, mirrors, reflections)")
    page.locator("#curate-apply").click()
    head = wait_until(lambda: (h := store.head(image_id)) and h.id != before and h, 60)
    assert head and head.tool == "ignore_mask", f"no revision from the strokes: {toasts(page)}\n{app.log()[-3000:]}"
    painted = int(store.load_label(head).masks["ignore"].sum())
    assert 0.002 * H * W < painted < 0.5 * H * W, painted


def test_bulk_accept_of_ticked_images(curate_studio, page):
    from playwright.sync_api import expect

    from pipeline.store import Store
    app, db, _ = curate_studio
    store = Store(db)
    page.goto(app.url)
    page.get_by_role("tab", name="Curate").click()
    page.locator("#curate-gallery img").first.wait_for(timeout=60_000)
    page.locator("#curate-bulk").click()
    page.locator("#curate-ticked label", has_text="other1.png").click()
    page.locator("#curate-ticked label", has_text="other2.png").click()
    page.locator("#curate-bulk-accept").click()
    expect(page.locator("#curate-bulk-report")).to_contain_text("Set 2 image(s) to accepted", timeout=60_000)
    assert [store.get_image(i).status for i in (2, 3)] == ["accepted", "accepted"]
    expect(page.locator("#curate-counts")).to_contain_text("accepted: 2", timeout=30_000)


def test_calibration_from_a_known_distance_makes_a_metric_revision(curate_studio, page, scene):
    from playwright.sync_api import expect

    from pipeline.store import Store
    app, db, image_id = curate_studio
    store = Store(db)
    open_room(page, app)
    choose(page, "curate-mode", "Points (pairs, calibration)")
    box_px, floor_px = np.argwhere(scene.box), np.argwhere(scene.floor)
    a, b = box_px[len(box_px) // 2], floor_px[3 * len(floor_px) // 4]                      # [h, w], away from edges
    metres = float(np.linalg.norm(scene.points[tuple(a)] - scene.points[tuple(b)]))
    click_pixel(page, a)
    expect(page.locator("#curate-selection-info")).to_be_visible()
    time.sleep(1.0)
    click_pixel(page, b)
    time.sleep(1.0)
    page.locator("#curate-calibrate-panel").click()
    page.locator("#curate-ref-metres input, #curate-ref-metres textarea").first.fill(f"{metres:.4f}")
    page.locator("#curate-add-ref").click()
    expect(page.locator("#curate-refs")).to_contain_text("distance", timeout=30_000)
    page.locator("#curate-focal input, #curate-focal textarea").first.fill(f"{scene.focal:g}")
    page.locator("#curate-zero-shift input").check()
    page.locator("#curate-calibrate").click()
    expect(page.locator("#curate-calib-info")).to_contain_text("is metric depth", timeout=60_000)
    head = store.head(image_id)
    assert (head.tool, head.kind, head.source) == ("calibrate", "metric_depth", "human")
    depth = store.load_label(head).depth
    assert np.nanmedian(np.abs(depth / scene.depth - 1)) < 0.02        # clicks land within a pixel of the points
    expect(page.locator("#curate-header")).to_contain_text("metres")


def test_named_endpoints_keep_the_selection_in_the_session(curate_studio, tmp_path, scene):
    """gradio_client: open an image, select by pixel, calibrate by two points and a distance, undo, all
    through the API (one session keeps the selection, the points and the references)."""
    from gradio_client import Client
    from gradio_client.exceptions import AppError

    from pipeline.store import Store
    app, db, image_id = curate_studio
    store = Store(db)
    client = Client(app.url, download_files=str(tmp_path / "downloads"), verbose=False)
    opened = client.predict(str(image_id), 0.5, api_name="/curate_open")
    assert "room.png" in opened[0]
    picked = client.predict(5, 5, "wand_depth", "replace", 0.05, "slic", 300, api_name="/curate_select_at")
    assert "Selected:" in picked[-1]
    box_px, wall_px = np.argwhere(scene.box), np.argwhere(scene.wall)
    a, b = box_px[len(box_px) // 2], wall_px[len(wall_px) // 2]
    for point in (a, b):
        client.predict(int(point[0]), int(point[1]), "points", "add", 0.05, "slic", 300, api_name="/curate_select_at")
    metres = float(np.linalg.norm(scene.points[tuple(a)] - scene.points[tuple(b)]))
    refs = client.predict("distance", f"{metres:.4f}", api_name="/curate_add_reference")
    assert refs[0]["data"][0][1] == "distance"
    head = store.head(image_id)                                             # someone else saves a label
    store.save_revision(image_id, store.load_label(head).depth, expected_head=head.id, tool="import", author="bob")
    with pytest.raises(AppError, match="changed since you opened it"):
        client.predict(f"{scene.focal:g}", True, api_name="/curate_calibrate")
    client.predict(str(image_id), 0.5, api_name="/curate_open")
    for point in (a, b):
        client.predict(int(point[0]), int(point[1]), "points", "add", 0.05, "slic", 300, api_name="/curate_select_at")
    client.predict("distance", f"{metres:.4f}", api_name="/curate_add_reference")
    *_, report = client.predict(f"{scene.focal:g}", True, api_name="/curate_calibrate")
    head = store.head(image_id)
    assert "is metric depth" in report and (head.tool, head.kind) == ("calibrate", "metric_depth")
    before = store.history(image_id)
    undone = client.predict(api_name="/curate_undo")
    after = store.history(image_id)
    assert len(after.revisions) == len(before.revisions) and after.head_id == before.head.parent_id
    assert f"revision {after.head.number} of" in undone[0]
