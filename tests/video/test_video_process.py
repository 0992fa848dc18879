"""Depth for clips: `python -m pipeline predict clip.mp4` and pipeline.video.process, checked by value."""
from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import torch
from skimage.data import astronaut

from pipeline import cli
from pipeline.config import ModelConfig
from pipeline.files.depth_png import read_depth_png
from pipeline.predictor import Predictor
from pipeline.video import synthetic
from pipeline.video.align import AlignParams
from pipeline.video.io import VideoReader
from pipeline.video.process import VideoOptions, predict_video
from pipeline.weights.loading import save_checkpoint, untrained_model

SIZE = 70                     # network input: tiny and fast


@pytest.fixture(scope="module")
def vitt(tmp_path_factory):
    torch.manual_seed(0)
    return save_checkpoint(untrained_model(ModelConfig(encoder="vitt")).model,
                           tmp_path_factory.mktemp("vitt") / "vitt.safetensors", model_id="tiny-vitt")


@pytest.fixture(scope="module")
def predictor(vitt):
    return Predictor.from_checkpoint(vitt, device="cpu", input_size=SIZE)


@pytest.fixture(scope="module")
def clip48(tmp_path_factory):
    """48 frames, 64x48, 24 fps: a slow pan across a real photo under a changing light."""
    photo = astronaut()[::4, ::4]                                                   # (128, 128, 3)
    gains = synthetic.light_gains(48, 0.8, 1.1)
    frames = (np.clip(f * g, 0, 255).astype(np.uint8)
              for f, g in zip(synthetic.pan_frames(photo, 48, (48, 64), step=1, y0=30), gains, strict=True))
    return synthetic.write_clip(tmp_path_factory.mktemp("clips") / "walk.mp4", frames, fps=24)


def test_cli_on_a_48_frame_clip_writes_video_and_npz_equal_to_single_image_predictions(
        clip48, vitt, predictor, tmp_path, capsys):
    out = tmp_path / "out"
    rc = cli.main(["predict", str(clip48), "--out", str(out), "--checkpoint", str(vitt), "--input-size", str(SIZE),
                   "--device", "cpu", "--batch-size", "3"])
    err = capsys.readouterr().err
    assert rc == 0, err
    assert "walk.mp4: 48 frames 64x48 at 24 fps" in err and "frames/s inference" in err
    with VideoReader(out / "walk_depth.mp4") as r:
        assert (r.info.fps, r.info.width, r.info.height) == (24.0, 64, 48)
        assert sum(1 for _ in r.frames()) == 48
    z = np.load(out / "walk.npz")                                           # no pickle needed
    depth, scale, shift = z["depth"], z["scale"], z["shift"]
    assert depth.shape == (48, 48, 64) and depth.dtype == np.float32
    assert (float(z["fps"]), str(z["kind"]), str(z["unit"])) == (24.0, "disparity", "relative disparity")
    np.testing.assert_allclose(z["times"], np.arange(48) / 24, atol=1e-6)
    assert scale[0] == 1.0 and shift[0] == 0.0 and np.ptp(scale) > 0.01        # the alignment did something
    with VideoReader(clip48) as r:
        for t, frame in enumerate(r.frames()):
            single = predictor.predict(frame.rgb).array
            np.testing.assert_allclose(depth[t], scale[t] * single + shift[t], rtol=1e-4,
                                       atol=1e-4 * float(np.abs(depth[t]).max()))


def test_stride_max_frames_side_by_side_and_png_frames(clip48, predictor, tmp_path):
    opts = VideoOptions(stride=3, max_frames=5, side_by_side=True, depth_format="png", align=False, cmap="magma")
    result = predict_video(predictor, clip48, tmp_path, options=opts)
    assert result.frames == 5 and result.fps == 8.0
    with VideoReader(result.files["side_by_side"]) as r:
        frames = list(r.frames())
        assert (len(frames), r.info.width, r.info.height, r.info.fps) == (5, 128, 48, 8.0)
    z = np.load(result.files["npz"])
    assert "depth" not in z.files and list(z["frame_index"]) == [0, 3, 6, 9, 12]
    assert list(z["scale"]) == [1.0] * 5                                           # --no-align
    pngs = sorted(result.files["depth_frames"].glob("*.png"))
    assert len(pngs) == 5
    with VideoReader(clip48) as r:
        inputs = list(r.frames(stride=3, max_frames=5))
    np.testing.assert_allclose(np.abs(frames[2].rgb[:, :64].astype(float) - inputs[2].rgb).mean(), 0, atol=6)
    for png, frame in zip(pngs, inputs, strict=True):
        want = predictor.predict(frame.rgb).array
        np.testing.assert_allclose(read_depth_png(png), want, atol=float(np.ptp(want)) / 65535 + 1e-6)


def test_one_colour_range_for_the_whole_clip(clip48, predictor, tmp_path):
    result = predict_video(predictor, clip48, tmp_path, options=VideoOptions(max_frames=12))
    z = np.load(result.files["npz"])
    lo = min(np.percentile(d[::4, ::4], 1) for d in z["depth"])
    hi = max(np.percentile(d[::4, ::4], 99) for d in z["depth"])
    assert (float(z["vmin"]), float(z["vmax"])) == pytest.approx((lo, hi), rel=1e-5)


def test_metric_models_stay_in_metres(clip48, tmp_path):
    torch.manual_seed(0)
    metric = Predictor(untrained_model(ModelConfig(encoder="vitt", metric=True, max_depth=20.0)), device="cpu",
                       input_size=SIZE)
    result = predict_video(metric, clip48, tmp_path, options=VideoOptions(max_frames=4))
    z = np.load(result.files["npz"])
    assert str(z["unit"]) == "m" and list(z["scale"]) == [1.0] * 4 and list(z["shift"]) == [0.0] * 4


def _peak_bytes(predictor, path, out) -> int:
    tracemalloc.start()
    try:
        # keyframes every 2nd frame: the aligner's window (4 recent + 3 keyframes) is full after 6 frames
        predict_video(predictor, path, out, options=VideoOptions(batch_size=2,
                                                                align_params=AlignParams(keyframe_every=2)))
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_peak_memory_does_not_grow_with_the_clip(tmp_path, predictor):
    """numpy's allocations are traced: holding the clip's frames would add 240 KB per 4 frames of 160x96."""
    photo = astronaut()[::2, ::2]
    short = synthetic.write_clip(tmp_path / "short.mp4", synthetic.pan_frames(photo, 10, (96, 160), 3))
    long = synthetic.write_clip(tmp_path / "long.mp4", synthetic.pan_frames(photo, 30, (96, 160), 3))
    _peak_bytes(predictor, short, tmp_path)                                       # warm-up (lazy imports)
    p_short, p_long = _peak_bytes(predictor, short, tmp_path), _peak_bytes(predictor, long, tmp_path)
    frame_bytes = 160 * 96 * 4
    assert p_long < p_short + 4 * frame_bytes, (p_short, p_long)             # 20 more frames held would be 20x


def test_a_bad_video_among_good_inputs_is_reported_and_skipped(clip48, vitt, tmp_path, capsys):
    bad = tmp_path / "broken.mov"
    bad.write_bytes(b"\x00" * 1000)
    rc = cli.main(["predict", str(bad), str(clip48), "--out", str(tmp_path / "o"), "--checkpoint", str(vitt),
                   "--input-size", str(SIZE), "--device", "cpu", "--max-frames", "2"])
    err = capsys.readouterr().err
    assert rc == 1 and "skipped broken.mov: not a readable video" in err
    assert (tmp_path / "o" / "walk_depth.mp4").exists() and not (tmp_path / "o" / "broken.npz").exists()


def test_an_inference_error_stops_the_decoding_thread_first(clip48, predictor, tmp_path, monkeypatch):
    import threading

    def boom(*a, **k):
        raise RuntimeError("out of memory")
    monkeypatch.setattr(predictor, "predict_many", boom)
    with pytest.raises(RuntimeError, match="out of memory"):
        predict_video(predictor, clip48, tmp_path)
    assert not [t for t in threading.enumerate() if t.name == "video-decode"]
    assert list(tmp_path.iterdir()) == []                         # the temporary float file is gone
