"""The depth tab's video panel: handler by value, the named endpoint, errors as readable messages."""
from __future__ import annotations

import json
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
from services import make_services
from skimage.data import astronaut

from pipeline.predictor import Predictor
from pipeline.video import synthetic
from pipeline.video.io import VideoReader
from studio.app import build_app
from studio.depth_video import VideoHandlers, format_video_summary


class NoProgress:
    def __init__(self):
        self.calls = []

    def __call__(self, fraction, desc=None):
        self.calls.append((fraction, desc))


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    photo = astronaut()[::4, ::4]
    return synthetic.write_clip(tmp_path_factory.mktemp("clip") / "my clip.mp4",
                                synthetic.pan_frames(photo, 6, (48, 64), 2), fps=12)


def test_predict_video_returns_the_videos_npz_and_summary(vitt_service, clip):
    h = VideoHandlers(vitt_service, runner=VideoHandlers(vitt_service)._run)
    progress = NoProgress()
    depth, side, npz, summary, text = h.predict_video(str(clip), None, 70, "magma", 1, 0, True, progress=progress)
    assert Path(depth).name == "my_clip_depth.mp4" and Path(side).name == "my_clip_side_by_side.mp4"
    assert Path(depth).parent.parent == vitt_service.settings.temp_dir          # a served request folder
    with VideoReader(side) as r:
        assert (r.info.width, r.info.height, r.info.fps, sum(1 for _ in r.frames())) == (128, 48, 12.0, 6)
    z = np.load(npz)
    assert z["depth"].shape == (6, 48, 64)
    loaded = vitt_service.model(None)
    with VideoReader(clip) as r:
        first = next(r.frames()).rgb
    want = Predictor(loaded.checkpoint, device="cpu", input_size=70).predict(first).array
    np.testing.assert_allclose(z["depth"][0], want, rtol=1e-4, atol=1e-6)       # frame 0 keeps scale 1, shift 0
    json.dumps(summary)
    assert summary["frames"] == 6 and summary["input_size"] == 70 and summary["aligned"] is True
    assert "6 frames" in text and "aligned to one scale" in text
    fractions = [f for f, _ in progress.calls]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0 and any("predicting frame" in d for _, d in
                                                                             progress.calls)


def test_the_studio_frame_cap_cuts_long_clips(settings, vitt_checkpoint, clip):
    from pipeline.services.depth_service import DepthService
    service = DepthService(settings.with_overrides(max_video_frames=4), sources=[], default=str(vitt_checkpoint))
    h = VideoHandlers(service, runner=VideoHandlers(service)._run)
    _, _, npz, summary, text = h.predict_video(str(clip), None, 70, None, 1, 100, False, progress=NoProgress())
    assert np.load(npz)["depth"].shape[0] == 4 and summary["cut_to_frames"] == 4 and "cut to its first 4" in text


def test_a_bad_clip_is_a_readable_gradio_error(vitt_service, tmp_path):
    bad = tmp_path / "broken.webm"
    bad.write_bytes(b"nope" * 100)
    h = VideoHandlers(vitt_service, runner=VideoHandlers(vitt_service)._run)
    with pytest.raises(gr.Error) as e:
        h.predict_video(str(bad), None, 70, None, 1, 0, True, progress=NoProgress())
    assert "broken.webm: not a readable video" in e.value.message
    with pytest.raises(gr.Error, match="no video given"):
        h.predict_video(None, None, 70, None, 1, 0, True, progress=NoProgress())


def test_named_endpoint(vitt_service):
    demo = build_app(make_services(vitt_service))
    api = demo.get_api_info()["named_endpoints"]
    params = [p["parameter_name"] for p in api["/predict_video"]["parameters"]]
    assert params == ["video", "model", "input_size", "cmap", "stride", "max_frames", "align"]
    assert len(api["/predict_video"]["returns"]) == 5
    fn = next(f for f in demo.fns.values() if f.api_name == "predict_video")
    assert fn.concurrency_id == "gpu"


def test_summary_text_for_metric_and_untrained():
    s = {"frames": 3, "width": 4, "height": 2, "fps": 10.0, "kind": "metric_depth", "aligned": True,
         "untrained": True}
    text = format_video_summary(s)
    assert text.startswith("**UNTRAINED") and "depth in metres, each frame as predicted" in text


@pytest.mark.parametrize("args, message", [
    ((70, -1, 0), "frame stride must be a whole number from 1 to 1000"),
    ((70, 1, "lots"), "max frames must be a whole number"),
    ((71, 1, 0), "input size must be a whole number from 14 to 1036, a multiple of 14"),
    ((70, 1e9, 0), "frame stride must be"),
])
def test_every_number_is_range_checked_by_the_service(vitt_service, clip, args, message):
    """An API client can send any number: the service refuses what is out of range in one line."""
    h = VideoHandlers(vitt_service, runner=VideoHandlers(vitt_service)._run)
    input_size, stride, max_frames = args
    with pytest.raises(gr.Error) as e:
        h.predict_video(str(clip), None, input_size, None, stride, max_frames, True, progress=NoProgress())
    assert message in e.value.message and "\n" not in e.value.message
