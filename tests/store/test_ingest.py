"""Importing: dedupe, rejections with reasons, EXIF size, zip-slip and caps, allowed-root escapes, CLI."""
from __future__ import annotations

import argparse
import io
import os
import zipfile

import pytest
from PIL import Image

from pipeline.cli import import_images
from pipeline.intake import images as ingest
from pipeline.intake.images import (
    Duplicate,
    IngestError,
    import_paths,
    import_server_folder,
    import_uploads,
    import_zip,
)


def test_folder_import_adds_dedupes_and_rejects_with_reasons(store, tmp_path, make_png):
    src = tmp_path / "photos"
    (src / "sub").mkdir(parents=True)
    (src / "a.png").write_bytes(make_png(seed=1))
    (src / "sub" / "b.jpg").write_bytes(make_png(seed=2, fmt="JPEG"))
    (src / "sub" / "a-copy.png").write_bytes(make_png(seed=1))
    (src / "notes.txt").write_text("not an image")
    (src / "broken.png").write_bytes(make_png(seed=3)[:60])
    (src / ".hidden.png").write_bytes(make_png(seed=4))
    report = import_paths(store, [src, tmp_path / "missing.jpg"], author="ann")
    assert [r.name for r in report.added] == ["a.png", "b.jpg"]
    assert [(r.width, r.height, r.source) for r in report.added] == [(8, 6, f"folder:{src}")] * 2
    assert report.duplicates == [Duplicate("photos/sub/a-copy.png", report.added[0].id, "a.png")]
    reasons = dict(report.rejected)
    assert set(reasons) == {"photos/broken.png", "photos/notes.txt", str(tmp_path / "missing.jpg")}
    assert "not an image" in reasons["photos/notes.txt"]
    assert "corrupt or truncated" in reasons["photos/broken.png"] or "cannot read" in reasons["photos/broken.png"]
    assert reasons[str(tmp_path / "missing.jpg")] == "no such file or folder"
    assert report.summary() == "2 added, 1 duplicate(s), 3 rejected"
    # importing again: everything is a duplicate
    again = import_paths(store, [src / "a.png", src / "sub" / "b.jpg"])
    assert (again.added, [d.image_id for d in again.duplicates]) == ([], [r.id for r in report.added])


def test_stored_size_follows_exif_orientation(store, tmp_path):
    im = Image.new("RGB", (8, 6), (200, 10, 10))
    exif = Image.Exif()
    exif[0x0112] = 6                                        # rotate 90: shown as 6 x 8
    buf = io.BytesIO()
    im.save(buf, format="JPEG", exif=exif)
    report = import_uploads(store, [("rot.jpg", buf.getvalue())])
    assert [(r.width, r.height) for r in report.added] == [(6, 8)]
    assert store.image_bytes(report.added[0].id) == buf.getvalue()      # original bytes kept


def _zip(path, members: dict[str, bytes]):
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def test_zip_slip_members_are_rejected_unread_and_nothing_is_extracted(store, tmp_path, make_png):
    z = _zip(tmp_path / "up.zip", {"ok/x.png": make_png(seed=1), "../evil.png": make_png(seed=2),
                                   "/abs.png": make_png(seed=3), "a/../../b.png": make_png(seed=4),
                                   "__MACOSX/._x.png": b"junk"})
    before = sorted(p.name for p in tmp_path.parent.iterdir())
    report = import_zip(store, z)
    assert [r.name for r in report.added] == ["x.png"] and report.added[0].source == "zip:up.zip"
    assert sorted(report.rejected) == sorted([
        ("up.zip//abs.png", "unsafe path in the zip (absolute or with '..'); not read"),
        ("up.zip/../evil.png", "unsafe path in the zip (absolute or with '..'); not read"),
        ("up.zip/a/../../b.png", "unsafe path in the zip (absolute or with '..'); not read")])
    assert sorted(p.name for p in tmp_path.parent.iterdir()) == before
    assert store.count_by_status()["pending"] == 1


def test_zip_caps_per_file_total_and_count(store, tmp_path, make_png):
    members = {f"{i}.png": make_png(seed=i) for i in range(3)}
    size = max(len(b) for b in members.values())
    report = ingest.ImportReport()
    with zipfile.ZipFile(_zip(tmp_path / "z.zip", members)) as zf:
        entries = ingest.zip_entries(zf, "z.zip", report, max_file=size, max_total=2 * size)
        ingest.import_entries(store, entries, report)
    assert len(report.added) == 2
    assert report.rejected == [("z.zip/2.png", "cannot be read: the zip's limit of "
                                f"{2 * size / 1024 ** 2:g} MB decompressed in total is used up")]
    small = ingest.ImportReport()
    with zipfile.ZipFile(tmp_path / "z.zip") as zf:
        entries = ingest.zip_entries(zf, "z.zip", small, max_file=10)
        ingest.import_entries(store, entries, small)
    assert all("limit per file" in r for _, r in small.rejected) and len(small.rejected) == 3
    many = ingest.ImportReport()
    with zipfile.ZipFile(tmp_path / "z.zip") as zf:
        assert ingest.zip_entries(zf, "z.zip", many, max_members=2) == []
    assert many.rejected == [("z.zip", "the zip holds 3 files; the limit is 2 - split it into smaller zips")]


def test_not_a_zip_is_rejected(store):
    report = import_uploads(store, [("fake.zip", b"PK not really")])
    assert report.rejected[0][0] == "fake.zip" and "not a readable zip" in report.rejected[0][1]


def test_server_folder_must_stay_under_the_allowed_root(store, tmp_path, make_png):
    root = tmp_path / "allowed"
    (root / "set1" / "inner").mkdir(parents=True)
    outside = tmp_path / "secret"
    outside.mkdir()
    (outside / "s.png").write_bytes(make_png(seed=9))
    (root / "set1" / "a.png").write_bytes(make_png(seed=1))
    (root / "set1" / "inner" / "b.png").write_bytes(make_png(seed=2))
    os.symlink(outside / "s.png", root / "set1" / "link.png")          # file link escaping the root
    os.symlink(outside, root / "set1" / "linkdir")                      # folder link: not walked
    os.symlink(root / "set1" / "a.png", root / "set1" / "inside.png")  # link inside the root: fine (dup)
    for bad in ("../secret", str(outside), "set1/../../secret", str(root / "linkdir")):
        with pytest.raises(IngestError, match="outside the allowed import folder|is not a folder"):
            import_server_folder(store, bad, allowed_root=root)
    os.symlink(outside, root / "escape")
    with pytest.raises(IngestError, match="outside the allowed import folder"):
        import_server_folder(store, "escape", allowed_root=root)
    report = import_server_folder(store, "set1", allowed_root=root)
    assert sorted(r.name for r in report.added) == ["a.png", "b.png"]
    assert dict(report.rejected) == {"set1/link.png": "symbolic link that leads outside the allowed folder; not read",
                                     "set1/linkdir": "symbolic link to a folder; not followed"}
    assert [d.name for d in report.duplicates] == ["set1/inside.png"]
    assert store.find_image(__import__("hashlib").sha256(make_png(seed=9)).hexdigest()) is None


def test_cli_import_prints_the_report(store, tmp_path, make_png, capsys):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.png").write_bytes(make_png(seed=1))
    (tmp_path / "in" / "b.txt").write_text("x")
    parser = argparse.ArgumentParser()
    import_images.add_arguments(parser)
    args = parser.parse_args([str(tmp_path / "in"), "--db", str(store.path), "--quiet", "--author", "cli"])
    assert import_images.run(args) == 1
    out = capsys.readouterr().out
    assert "rejected: in/b.txt: not an image" in out
    assert f"1 added, 0 duplicate(s), 1 rejected -> {store.path}" in out
    assert store.audit_log()[0].actor == "cli"
    args = parser.parse_args([str(tmp_path / "in" / "a.png"), "--db", str(store.path), "--quiet"])
    assert import_images.run(args) == 0
    assert "duplicate: a.png (same bytes as image 1, a.png)" in capsys.readouterr().out


def test_upload_size_cap(store, tmp_path, make_png):
    big = make_png(width=64, height=64, seed=1)
    (tmp_path / "big.png").write_bytes(big)
    report = import_uploads(store, [("a.png", big), str(tmp_path / "big.png"), ("ok.png", make_png(seed=2))],
                            max_file_bytes=1000)
    limit = "cannot be read: larger than the 0.000953674 MB limit per file"
    assert report.rejected == [("a.png", limit), ("big.png", limit)]
    assert [r.name for r in report.added] == ["ok.png"]


@pytest.mark.slow
def test_import_and_export_commands_end_to_end(tmp_path, make_png):
    """The real `python -m pipeline` dispatcher (imports every command, so torch: slow)."""
    import subprocess
    import sys
    (tmp_path / "in").mkdir()
    for i in range(3):
        (tmp_path / "in" / f"{i}.png").write_bytes(make_png(seed=i))
    db = tmp_path / "s.db"
    run = subprocess.run([sys.executable, "-m", "pipeline", "import", str(tmp_path / "in"), "--db", str(db)],
                         capture_output=True, text=True)
    assert run.returncode == 0 and "3 added, 0 duplicate(s), 0 rejected" in run.stdout
    run = subprocess.run([sys.executable, "-m", "pipeline", "export", "--db", str(db), "--out",
                          str(tmp_path / "out"), "--status", "pending"], capture_output=True, text=True)
    assert run.returncode == 0 and run.stdout.startswith("3 images, 0 labels")
    run = subprocess.run([sys.executable, "-m", "pipeline", "export", "--db", str(db), "--out",
                          str(tmp_path / "o2"), "--status", "finished"], capture_output=True, text=True)
    assert run.returncode == 2 and "unknown status 'finished'" in run.stderr and "Traceback" not in run.stderr


# ---------------------------------------------------------------------------- hardening (issue 12)
def test_a_symlink_swapped_in_between_listing_and_open_is_not_followed(store, tmp_path, make_png, monkeypatch):
    """Time of check / time of use: the folder is listed while a.png is a plain file; before it is read,
    it is replaced by a link to a file outside the root. The opened file itself is checked."""
    root = tmp_path / "allowed"
    (root / "set").mkdir(parents=True)
    outside = tmp_path / "secret"
    outside.mkdir()
    (outside / "s.png").write_bytes(make_png(seed=9))
    (root / "set" / "a.png").write_bytes(make_png(seed=1))
    (root / "set" / "b.png").write_bytes(make_png(seed=2))
    real_entries = ingest.folder_entries

    def listed_then_swapped(*args, **kwargs):
        entries = real_entries(*args, **kwargs)
        (root / "set" / "a.png").unlink()
        os.symlink(outside / "s.png", root / "set" / "a.png")
        return entries
    monkeypatch.setattr(ingest, "folder_entries", listed_then_swapped)
    report = import_server_folder(store, "set", allowed_root=root)
    assert [r.name for r in report.added] == ["b.png"]
    reasons = dict(report.rejected)
    assert "outside the allowed folder" in reasons["set/a.png"]
    assert store.find_image(__import__("hashlib").sha256(make_png(seed=9)).hexdigest()) is None


def test_a_folder_swapped_for_a_link_between_listing_and_open_is_not_followed(store, tmp_path, make_png,
                                                                             monkeypatch):
    root = tmp_path / "allowed"
    (root / "set" / "inner").mkdir(parents=True)
    outside = tmp_path / "secret"
    outside.mkdir()
    (outside / "x.png").write_bytes(make_png(seed=9))
    (root / "set" / "inner" / "x.png").write_bytes(make_png(seed=1))
    real_entries = ingest.folder_entries

    def listed_then_swapped(*args, **kwargs):
        entries = real_entries(*args, **kwargs)
        os.rename(root / "set" / "inner", tmp_path / "moved")
        os.symlink(outside, root / "set" / "inner")
        return entries
    monkeypatch.setattr(ingest, "folder_entries", listed_then_swapped)
    report = import_server_folder(store, "set", allowed_root=root)
    assert report.added == [] and "outside the allowed folder" in dict(report.rejected)["set/inner/x.png"]


@pytest.mark.timeout(20)
def test_fifos_and_other_non_regular_files_are_rejected_without_hanging(store, tmp_path, make_png):
    root = tmp_path / "allowed"
    (root / "set").mkdir(parents=True)
    (root / "set" / "a.png").write_bytes(make_png(seed=1))
    os.mkfifo(root / "set" / "pipe.png")                            # opening it for reading would block
    import socket
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(root / "set" / "sock.png"))
    try:
        report = import_server_folder(store, "set", allowed_root=root)
        cli_report = import_paths(store, [root / "set" / "pipe.png"])
    finally:
        sock.close()
    assert [r.name for r in report.added] == ["a.png"]
    reasons = dict(report.rejected)
    assert "not a regular file" in reasons["set/pipe.png"] and "not read" in reasons["set/pipe.png"]
    assert "set/sock.png" in reasons
    assert "not a regular file" in dict(cli_report.rejected)["pipe.png"]


def _bomb(path, n: int, member_bytes: int):
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for i in range(n):
            zf.writestr(f"{i:02d}.png", b"\0" * member_bytes)
    return path


def test_the_zip_budget_charges_members_rejected_for_size_and_stops(store, tmp_path, monkeypatch):
    """Members over the per-file cap used to be decompressed up to that cap without being charged, so
    the total budget never triggered (a 20.8 MB zip made the server decompress 4.5 GB)."""
    kb = 1024
    z = _bomb(tmp_path / "bomb.zip", 10, 1024 * kb)                # 10 x 1 MB of zeros, ~10 kB on disk
    decompressed = {"bytes": 0}
    real_read = zipfile.ZipExtFile.read

    def counting_read(self, n=-1):
        data = real_read(self, n)
        decompressed["bytes"] += len(data)
        return data
    monkeypatch.setattr(zipfile.ZipExtFile, "read", counting_read)
    report = ingest.ImportReport()
    with zipfile.ZipFile(z) as zf:
        entries = ingest.zip_entries(zf, "bomb.zip", report, max_file=100 * kb, max_total=350 * kb)
        ingest.import_entries(store, entries, report)
    reasons = [why for _, why in report.rejected]
    assert len(reasons) == 10 and report.added == []
    assert all("limit per file" in why for why in reasons[:3])
    assert all("decompressed in total is used up" in why for why in reasons[3:])
    assert decompressed["bytes"] <= 350 * kb + 1                   # the budget, whatever the members claim


def test_a_zip_may_not_expand_beyond_its_ratio(store, tmp_path):
    """Uploads: the total budget is also at most MAX_ZIP_RATIO x the zip's own size."""
    z = _bomb(tmp_path / "bomb.zip", 3, 4 * 1024 ** 2)
    size = z.stat().st_size
    report = import_uploads(store, [("bomb.zip", z.read_bytes())], max_file_bytes=50 * 1024 ** 2)
    reasons = [why for _, why in report.rejected]
    assert any("decompressed in total is used up" in why for why in reasons), reasons
    assert f"{ingest.MAX_ZIP_RATIO}×" in reasons[-1] and size * ingest.MAX_ZIP_RATIO < 12 * 1024 ** 2


@pytest.mark.parametrize("swap", ["file", "folder"])
def test_without_proc_every_component_is_opened_without_following_links(store, tmp_path, make_png, monkeypatch,
                                                                       swap):
    monkeypatch.setattr(ingest, "PROC_FD", tmp_path / "no-proc")
    root = tmp_path / "allowed"
    (root / "set" / "inner").mkdir(parents=True)
    outside = tmp_path / "secret"
    outside.mkdir()
    (outside / "x.png").write_bytes(make_png(seed=9))
    (root / "set" / "inner" / "x.png").write_bytes(make_png(seed=1))
    (root / "set" / "ok.png").write_bytes(make_png(seed=2))
    real_entries = ingest.folder_entries

    def listed_then_swapped(*args, **kwargs):
        entries = real_entries(*args, **kwargs)
        if swap == "file":
            (root / "set" / "inner" / "x.png").unlink()
            os.symlink(outside / "x.png", root / "set" / "inner" / "x.png")
        else:
            os.rename(root / "set" / "inner", tmp_path / "moved")
            os.symlink(outside, root / "set" / "inner")
        return entries
    monkeypatch.setattr(ingest, "folder_entries", listed_then_swapped)
    report = import_server_folder(store, "set", allowed_root=root)
    assert [r.name for r in report.added] == ["ok.png"]
    assert "symbolic link" in dict(report.rejected)["set/inner/x.png"]
