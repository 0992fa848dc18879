"""Videos into the label store: frames at a chosen rate, grouped by clip and time; the gallery's clip filter."""
from __future__ import annotations

import io
import zipfile
from fractions import Fraction

import av
import numpy as np
import pytest
from PIL import Image

from pipeline import cli
from pipeline.errors import ConfigError
from pipeline.intake.images import import_paths, import_uploads
from pipeline.intake.video import import_video
from pipeline.store import Store
from pipeline.store.schema import migrate
from pipeline.video import synthetic
from pipeline.video.io import VideoReader


def frame(t: int) -> np.ndarray:
    rng = np.random.default_rng(t)
    return rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)


@pytest.fixture
def clip(tmp_path):
    """20 frames at 10 fps: 2 seconds."""
    return synthetic.write_clip(tmp_path / "walk.mp4", (frame(t) for t in range(20)), fps=10)


def decoded(path):
    with VideoReader(path) as r:
        return [f.rgb for f in r.frames()]


def test_frames_at_a_rate_grouped_by_clip_and_time(store, clip):
    report = import_paths(store, [clip], video_rate=2.5, author="ann")
    assert report.summary() == "5 added, 0 duplicate(s), 0 rejected"         # t = 0, 0.4, 0.8, 1.2, 1.6 s
    page = store.list_images(sort="time", clip=report.added[0].clip)
    assert [r.frame_time for r in page.items] == pytest.approx([0.0, 0.4, 0.8, 1.2, 1.6])
    assert [r.frame_index for r in page.items] == [0, 4, 8, 12, 16]
    rec = page.items[1]
    assert rec.name == "walk_t00000.400s.png" and rec.source == "cli" and (rec.width, rec.height) == (32, 24)
    assert rec.clip.startswith("walk.mp4#") and len(rec.clip) == len("walk.mp4#") + 12
    frames = decoded(clip)
    stored = np.asarray(Image.open(io.BytesIO(store.image_bytes(rec.id))))
    np.testing.assert_array_equal(stored, frames[4])                         # lossless: the decoded frame itself
    assert store.clips() == [(rec.clip, 5)]
    again = import_paths(store, [clip], video_rate=2.5)
    assert again.summary() == "0 added, 5 duplicate(s), 0 rejected"


def test_variable_frame_rate_is_sampled_by_time(store, tmp_path):
    path = tmp_path / "vfr.mkv"
    pts = [0, 100, 200, 900, 950, 1000, 1500, 2100]                           # ms
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=10)
        s.width, s.height, s.pix_fmt = 32, 24, "yuv420p"
        s.codec_context.time_base = Fraction(1, 1000)
        for i, p in enumerate(pts):
            f = av.VideoFrame.from_ndarray(frame(i), format="rgb24")
            f.pts, f.time_base = p, Fraction(1, 1000)
            for pkt in s.encode(f):
                c.mux(pkt)
        for pkt in s.encode():
            c.mux(pkt)
    report = import_paths(store, [path], video_rate=1.0)
    assert sorted(r.frame_time for r in report.added) == pytest.approx([0.0, 1.0, 2.1], abs=2e-3)


def test_uploads_zips_and_images_mixed(store, clip, tmp_path, make_png):
    zpath = tmp_path / "bundle.zip"
    with zipfile.ZipFile(zpath, "w") as z:
        z.write(clip, "inside/walk2.mp4")
        z.writestr("photo.png", make_png(seed=9))
    (tmp_path / "a.png").write_bytes(make_png(seed=3))
    report = import_uploads(store, [str(tmp_path / "a.png"), ("bundle.zip", str(zpath))], video_rate=1.0)
    assert report.summary() == "4 added, 0 duplicate(s), 0 rejected"       # a.png, photo.png, frames at 0 s and 1 s
    (clip_name, n), = store.clips()
    assert clip_name.startswith("walk2.mp4#") and n == 2
    by_clip = store.list_images(clip=clip_name, sort="time").items
    assert [r.frame_time for r in by_clip] == pytest.approx([0.0, 1.0])
    assert {r.source for r in by_clip} == {"zip:bundle.zip"}
    assert store.list_images().total == 4


def test_a_broken_video_is_rejected_with_its_frame_and_keeps_what_was_added(store, tmp_path):
    good = synthetic.write_clip(tmp_path / "long.mp4", (frame(t) for t in range(30)), fps=10)
    with av.open(str(good)) as c:
        cut_at = [p.pos for p in c.demux(video=0) if p.pos][24]
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(good.read_bytes()[:cut_at])
    (tmp_path / "junk.avi").write_bytes(b"junk" * 10)
    report = import_paths(store, [cut, tmp_path / "junk.avi"], video_rate=2)
    assert len(report.added) >= 3                                            # frames before the damage stay
    reasons = dict(report.rejected)
    assert "frame" in reasons["cut.mp4"] and "truncated" in reasons["cut.mp4"]
    assert reasons["junk.avi"].startswith("not a readable video")
    with pytest.raises(ConfigError, match="must be positive"):
        import_video(store, good, report, rate=0)


def test_cli_import_with_frame_rate(tmp_path, clip, capsys):
    db = tmp_path / "cli.db"
    rc = cli.main(["import", str(clip), "--db", str(db), "--frame-rate", "5", "--quiet"])
    assert rc == 0 and "10 added" in capsys.readouterr().out
    assert Store(db).clips()[0][1] == 10


def test_migration_5_adds_empty_clip_columns_to_an_existing_store(tmp_path, make_png):
    import sqlite3
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path, isolation_level=None)
    migrate(conn, target=4)
    conn.execute("INSERT INTO images (sha256, name, ext, nbytes, width, height, status, created_at, updated_at) "
                 "VALUES ('ab', 'old.png', '.png', 3, 2, 2, 'pending', 't', 't')")
    conn.close()
    store = Store(path)
    (rec,) = store.list_images().items
    assert (rec.name, rec.clip, rec.frame_time, rec.frame_index) == ("old.png", None, None, None)
    assert store.clips() == [] and store.list_images(clip="x#1").total == 0


def test_the_clip_filter_pages_by_keyset_with_status_and_neighbours(store, clip, tmp_path):
    """The keyset gallery (gallery.py) narrowed to one clip: pages, totals, neighbours and jumps
    see only that clip's frames, in time order, whatever else the store holds."""
    other = synthetic.write_clip(tmp_path / "other.mp4", (frame(100 + t) for t in range(20)), fps=10)
    name = import_paths(store, [clip], video_rate=5).added[0].clip                 # 10 frames
    import_paths(store, [other], video_rate=5)                                     # 10 more, another clip
    frames = store.list_images(sort="time", clip=name, limit=100).items
    assert len(frames) == 10 and [r.frame_index for r in frames] == list(range(0, 20, 2))
    store.set_status(frames[3].id, "accepted", author="ann")
    store.set_status(frames[7].id, "accepted", author="ann")
    walked, page = [], store.list_images(sort="time", clip=name, limit=3)
    while True:
        walked += [r.id for r in page.items]
        if page.next_cursor is None:
            break
        page = store.list_images(sort="time", clip=name, limit=3, after=page.next_cursor)
    assert walked == [r.id for r in frames] and page.total == 10
    back = store.list_images(sort="time", clip=name, limit=3, before=page.prev_cursor)
    assert [r.id for r in back.items] == [r.id for r in frames[6:9]]               # the page before the last
    jump = store.list_images(sort="time", clip=name, limit=3, offset=6)
    assert [r.id for r in jump.items] == [r.id for r in frames[6:9]]
    accepted = store.list_images(status="accepted", sort="time", clip=name)
    assert [r.id for r in accepted.items] == [frames[3].id, frames[7].id] and accepted.total == 2
    assert store.count_images(clip=name) == 10 and store.count_images("accepted", clip=name) == 2
    loc = store.locate(frames[5].id, sort="time", clip=name)
    assert (loc.index, loc.total, loc.previous_id, loc.next_id) == (5, 10, frames[4].id, frames[6].id)
    assert store.neighbours(frames[7].id, status="accepted", sort="time", clip=name) == (frames[3].id, None)
    outside = store.list_images(sort="time", limit=100).items[-1]                  # a frame of the other clip
    assert store.locate(outside.id, sort="time", clip=name).index is None
