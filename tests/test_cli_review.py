"""`python -m pipeline accept / reject / reopen / tag` by filter, and `export` of nothing (in-process main)."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from pipeline.cli import main
from pipeline.store import Store


def png(seed: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (6, 8, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture
def db(tmp_path):
    """Six labelled images (confidence 0.0 .. 0.5, kitchen / street names) and one without a label."""
    path = tmp_path / "s.db"
    store = Store(path)
    for i in range(6):
        rec, _ = store.add_image(png(i), f"{'kitchen' if i % 2 else 'street'}_{i}.png", width=8, height=6)
        store.add_prediction(rec.id, "m", "disparity", np.ones((6, 8), np.float32), confidence=i / 10)
    store.add_image(png(9), "kitchen_raw.png", width=8, height=6)
    return path


def statuses(path) -> list[str]:
    return [r[0] for r in Store(path).db.execute("SELECT status FROM images ORDER BY id")]


def test_accept_by_confidence_with_a_dry_run_first(db, capsys):
    assert main(["accept", "--db", str(db), "--min-confidence", "0.3", "--dry-run"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[:3] == ["#4 kitchen_3.png: pending -> accepted (dry run)", "#5 street_4.png: pending -> accepted (dry run)",
                       "#6 kitchen_5.png: pending -> accepted (dry run)"]
    assert out[3] == "would set 3 image(s) to accepted; 0 already accepted; 0 skipped (dry run: nothing written)"
    assert statuses(db) == ["pending"] * 7
    assert main(["accept", "--db", str(db), "--min-confidence", "0.3"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "set 3 image(s) to accepted; 0 already accepted; 0 skipped"
    assert statuses(db) == ["pending"] * 3 + ["accepted"] * 3 + ["pending"]


def test_reject_by_name_glob_skips_the_unlabelled_and_reopen_undoes_it(db, capsys):
    assert main(["reject", "--db", str(db), "--name", "kitchen_*"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "skipped #7 kitchen_raw.png: no label yet" in out and out[-1].startswith("set 3 image(s) to rejected")
    assert statuses(db) == ["pending", "rejected"] * 3 + ["pending"]
    assert main(["reopen", "--db", str(db), "--id", "2", "4", "6"]) == 0
    assert statuses(db) == ["pending"] * 7


def test_tags_then_accept_by_tag(db, capsys):
    assert main(["tag", "indoor", "--db", str(db), "--name", "kitchen_*", "--max-confidence", "0.3"]) == 0
    assert capsys.readouterr().out.strip() == "2 image(s) matched; 2 tag(s) added (indoor)"
    assert main(["accept", "--db", str(db), "--tag", "indoor"]) == 0
    assert statuses(db) == ["pending", "accepted", "pending", "accepted", "pending", "pending", "pending"]
    assert main(["tag", "indoor", "--remove", "--db", str(db), "--id", "2"]) == 0
    assert Store(db).tags_of(2) == [] and Store(db).tags_of(4) == ["indoor"]


def test_nothing_matched_or_a_bad_filter_exits_non_zero_saying_why(db, capsys):
    assert main(["accept", "--db", str(db), "--name", "garden*"]) == 1
    assert "nothing matched (status=pending, name=garden*) among the labelled images; the store holds 7 pending" \
        in capsys.readouterr().out
    assert main(["accept", "--db", str(db), "--min-confidence", "2"]) == 2
    assert "--min-confidence is a confidence from 0 to 1" in capsys.readouterr().err
    assert main(["accept", "--db", str(db), "--id", "1", "--tag", "x"]) == 2
    assert main(["accept", "--db", str(db / "missing.db")]) == 2


def test_export_of_nothing_exits_non_zero_with_the_reason(db, tmp_path, capsys):
    assert main(["export", "--db", str(db), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "nothing to export: no image has status accepted or corrected (the store holds 7 pending)" in err
    assert "python -m pipeline accept" in err and not (tmp_path / "out").exists()
    main(["accept", "--db", str(db), "--id", "1"])
    assert main(["export", "--db", str(db), "--out", str(tmp_path / "out")]) == 0
    assert "1 images, 1 labels" in capsys.readouterr().out
