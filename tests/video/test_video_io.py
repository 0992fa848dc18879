"""pipeline.video.io: reading and writing clips with PyAV, by value (frames, times, sizes, errors)."""
from __future__ import annotations

from fractions import Fraction

import av
import numpy as np
import pytest
from PIL import Image

from pipeline.errors import VideoError
from pipeline.video.io import VideoReader, VideoWriter, is_video_file


def pattern(t: int, h: int = 48, w: int = 64) -> np.ndarray:
    """A frame whose content says which frame it is: a bright bar at column 4 * t."""
    img = np.full((h, w, 3), 60, np.uint8)
    img[:, :w // 2, 0] = 200
    img[5:20, (4 * t) % (w - 6):(4 * t) % (w - 6) + 6] = 255
    return img


def encode(path, frames, *, codec="libx264", rate=24, pix_fmt="yuv420p", rotation=None, pts=None,
           time_base=None, audio=False):
    """Write a clip with PyAV directly (the reader must not depend on our writer)."""
    with av.open(str(path), "w") as c:
        s = c.add_stream(codec, rate=rate)
        s.width, s.height, s.pix_fmt = frames[0].shape[1], frames[0].shape[0], pix_fmt
        if time_base is not None:
            s.codec_context.time_base = time_base
        if rotation is not None:
            s.set_display_rotation(rotation)
        a = c.add_stream("aac", rate=16000) if audio else None
        for i, img in enumerate(frames):
            f = av.VideoFrame.from_ndarray(img, format="rgb24")
            if pts is not None:
                f.pts, f.time_base = pts[i], time_base
            for p in s.encode(f):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
        if a is not None:
            samples = np.zeros((1, 16000), np.float32)
            frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
            frame.sample_rate = 16000
            for p in a.encode(frame):
                c.mux(p)
            for p in a.encode():
                c.mux(p)
    return path


def close(a: np.ndarray, b: np.ndarray, tol: float = 6.0) -> bool:
    return a.shape == b.shape and float(np.abs(a.astype(float) - b.astype(float)).mean()) < tol


def test_writer_and_reader_round_trip_frames_times_and_rate(tmp_path):
    frames = [pattern(t) for t in range(12)]
    with VideoWriter(tmp_path / "a.mp4", 24, 64, 48) as w:
        for f in frames:
            w.write(f)
    with VideoReader(tmp_path / "a.mp4") as r:
        assert (r.info.width, r.info.height, r.info.fps, r.info.frame_count) == (64, 48, 24.0, 12)
        got = list(r.frames())
    assert [g.index for g in got] == list(range(12))
    np.testing.assert_allclose([g.time_s for g in got], np.arange(12) / 24, atol=1e-6)
    assert all(close(g.rgb, f) for g, f in zip(got, frames, strict=True))
    assert not close(got[0].rgb, frames[5])                  # the frames are told apart


@pytest.mark.parametrize("suffix, codec, pix_fmt", [(".webm", "libvpx-vp9", "yuv420p"), (".mkv", "libx264", "yuv420p"),
                                                    (".avi", "mpeg4", "yuv420p"), (".mov", "libx264", "yuv420p")])
def test_containers_and_codecs(tmp_path, suffix, codec, pix_fmt):
    frames = [pattern(t) for t in range(6)]
    path = encode(tmp_path / f"clip{suffix}", frames, codec=codec, pix_fmt=pix_fmt)
    assert is_video_file(path)
    with VideoReader(path) as r:
        got = list(r.frames())
    assert len(got) == 6 and all(close(g.rgb, f, 10) for g, f in zip(got, frames, strict=True))


def test_rotation_metadata_gives_upright_frames(tmp_path):
    frames = [pattern(t) for t in range(3)]
    path = encode(tmp_path / "phone.mp4", frames, rotation=90)
    with VideoReader(path) as r:
        assert (r.info.width, r.info.height, r.info.rotation) == (48, 64, 90)
        got = list(r.frames())
    assert all(close(g.rgb, np.rot90(f, 1)) for g, f in zip(got, frames, strict=True))


def test_variable_frame_rate_keeps_each_frames_time(tmp_path):
    pts = [0, 40, 120, 130, 300, 340]                         # milliseconds, irregular
    frames = [pattern(t) for t in range(len(pts))]
    path = encode(tmp_path / "vfr.mkv", frames, rate=25, pts=pts, time_base=Fraction(1, 1000))
    with VideoReader(path) as r:
        got = list(r.frames())
    np.testing.assert_allclose([g.time_s for g in got], np.array(pts) / 1000, atol=2e-3)


def test_audio_is_ignored(tmp_path):
    frames = [pattern(t) for t in range(5)]
    path = encode(tmp_path / "talk.mp4", frames, audio=True)
    with av.open(str(path)) as c:
        assert len(c.streams.audio) == 1
    with VideoReader(path) as r:
        assert len(list(r.frames())) == 5


def test_stride_and_max_frames(tmp_path):
    path = encode(tmp_path / "a.mp4", [pattern(t) for t in range(10)])
    with VideoReader(path) as r:
        assert [f.index for f in r.frames(stride=3)] == [0, 3, 6, 9]
    with VideoReader(path) as r:
        assert [f.index for f in r.frames(stride=2, max_frames=2)] == [0, 2]


def test_folder_of_frames_in_natural_order(tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    for t in (1, 2, 10):
        Image.fromarray(pattern(t)).save(folder / f"f{t}.png")
    with VideoReader(folder, fps=10) as r:
        got = list(r.frames())
    assert [g.index for g in got] == [0, 1, 2] and r.info.fps == 10
    np.testing.assert_array_equal(got[2].rgb, pattern(10))   # f10 after f2
    np.testing.assert_allclose([g.time_s for g in got], [0, 0.1, 0.2])
    Image.fromarray(pattern(3, h=40)).save(folder / "f11.png")
    with VideoReader(folder) as r, pytest.raises(VideoError, match=r"frames: frame 3 \(f11.png\) is 64x40"):
        list(r.frames())


def test_truncated_file_names_the_file_and_the_frame(tmp_path):
    path = tmp_path / "whole.mp4"
    with VideoWriter(path, 24, 64, 48) as w:                 # index at the front (faststart), like phone videos
        for t in range(30):
            w.write(np.random.default_rng(t).integers(0, 255, (48, 64, 3), np.uint8))
    data = path.read_bytes()
    with av.open(str(path)) as c:             # find where the last packets start: cut inside them
        offsets = [p.pos for p in c.demux(video=0) if p.pos is not None and p.pos > 0]
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[:offsets[20]])
    with pytest.raises(VideoError, match=r"cut.mp4: .*frame (1\d|20)\b"):
        with VideoReader(cut) as r:
            list(r.frames())
    no_index = encode(tmp_path / "tail.mp4", [pattern(t) for t in range(5)])       # index at the end: cut off
    (tmp_path / "tail_cut.mp4").write_bytes(no_index.read_bytes()[:-200])
    with pytest.raises(VideoError, match=r"tail_cut.mp4: not a readable video, or damaged or truncated \(\w"):
        VideoReader(tmp_path / "tail_cut.mp4")


@pytest.mark.parametrize("content, message", [(b"", "empty"), (b"not a video" * 50, "not a readable video")])
def test_bad_files_name_the_file(tmp_path, content, message):
    path = tmp_path / "bad.mp4"
    path.write_bytes(content)
    with pytest.raises(VideoError, match=f"bad.mp4: .*{message}"):
        VideoReader(path)
    with pytest.raises(VideoError, match="missing.mp4: file not found"):
        VideoReader(tmp_path / "missing.mp4")


def test_audio_only_file_is_refused(tmp_path):
    path = tmp_path / "sound.m4a"
    with av.open(str(path), "w", format="mp4") as c:
        a = c.add_stream("aac", rate=16000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 16000), np.float32), format="fltp", layout="mono")
        frame.sample_rate = 16000
        for p in [*a.encode(frame), *a.encode()]:
            c.mux(p)
    with pytest.raises(VideoError, match="sound.m4a: has no video stream"):
        VideoReader(path)


def test_odd_sizes_are_padded_to_even_by_the_writer(tmp_path):
    img = pattern(0, h=47, w=63)
    with VideoWriter(tmp_path / "odd.mp4", 10, 63, 47) as w:
        w.write(img)
    with VideoReader(tmp_path / "odd.mp4") as r:
        got = next(r.frames()).rgb
    assert got.shape == (48, 64, 3) and close(got[:47, :63], img)
