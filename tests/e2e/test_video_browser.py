"""The depth tab's video panel in headless Chromium: upload a short clip, see the depth video play."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from skimage.data import astronaut

from pipeline.video import synthetic

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    photo = astronaut()[::4, ::4]
    return synthetic.write_clip(tmp_path_factory.mktemp("clip") / "pan.mp4",
                                synthetic.pan_frames(photo, 6, (48, 64), 3, y0=20), fps=6)


def playing(page, selector: str) -> dict:
    """Mute, play and report the <video>'s state once its clock has moved (or the timeout ran out)."""
    return page.evaluate("""async (sel) => {
        const v = document.querySelector(sel);
        if (!v) return {found: false};
        v.muted = true;
        try { await v.play(); } catch (e) { return {found: true, error: String(e)}; }
        const t0 = performance.now();
        while (v.currentTime === 0 && performance.now() - t0 < 10000) await new Promise(r => setTimeout(r, 100));
        return {found: true, time: v.currentTime, width: v.videoWidth, height: v.videoHeight,
                ready: v.readyState, error: v.error ? v.error.code : null, src: v.currentSrc};
    }""", selector)


def test_upload_a_clip_and_the_depth_video_plays(studio, open_page, clip):
    from playwright.sync_api import expect
    page = open_page(1600)
    page.goto(studio.url)
    size = page.locator("#depth-size input[type=number]")
    size.fill("140")
    size.press("Enter")
    page.get_by_text("Video: temporally consistent depth for a clip").click()     # the panel's fold
    page.locator("#depth-video-input input[type=file]").set_input_files(str(clip))
    expect(page.locator("#depth-video-input video")).to_have_count(1, timeout=30_000)
    page.locator("#depth-video-run").click()
    expect(page.locator("#depth-video-summary-text")).to_contain_text("6 frames", timeout=120_000)
    expect(page.locator("#depth-video-summary-text")).to_contain_text("input size 140")
    state = playing(page, "#depth-video-output video")
    assert state.get("error") is None and state["time"] > 0, state
    assert (state["width"], state["height"]) == (64, 48) and state["src"].endswith("pan_depth.mp4"), state
    side = playing(page, "#depth-video-sbs video")
    assert side["time"] > 0 and (side["width"], side["height"]) == (128, 48), side
    expect(page.locator("#depth-video-npz a").first).to_have_attribute("download", "pan.npz")


def test_api_predict_video(studio, client_for, clip):
    from gradio_client import handle_file
    client = client_for(studio)
    try:
        depth, side, npz, summary, text = client.predict(handle_file(str(clip)), None, 140, "magma", 2, 10, True,
                                                   api_name="/predict_video")
    except Exception:
        print(studio.log()[-3000:])
        raise
    z = np.load(npz)
    assert z["depth"].shape == (3, 48, 64) and float(z["fps"]) == 3.0 and summary["frames"] == 3
    assert summary["input_size"] == 140 and summary["aligned"] is True and "3 frames" in text
    assert Path(depth).name == "pan_depth.mp4" and Path(side).name == "pan_side_by_side.mp4"
