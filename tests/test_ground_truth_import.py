"""Importing measured depth / disparity: stored as ground truth beside the labels, never replacing them."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from pipeline.cli import main
from pipeline.intake.ground_truth import GroundTruthImportError, import_ground_truth
from pipeline.store import Store

H, W = 12, 16


def _rgb(path, seed):
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (H, W, 3), dtype=np.uint8)).save(path)


@pytest.fixture
def folder(tmp_path):
    """a: depth in mm (.npy, one invalid pixel); b: 8-bit disparity PNG (0 = unknown) with a mask;
    c: no ground truth; d: ground truth of the wrong size."""
    root = tmp_path / "set"
    root.mkdir()
    for i, name in enumerate("abcd"):
        _rgb(root / f"{name}.png", i)
    depth = np.random.default_rng(9).uniform(1000, 5000, (H, W))
    depth[0, 0] = 0.0
    np.save(root / "a_depth.npy", depth)
    disp = np.random.default_rng(8).integers(0, 200, (H, W)).astype(np.uint8)
    Image.fromarray(disp).save(root / "b_disparity.png")
    mask = np.ones((H, W), np.uint8) * 255
    mask[:, :4] = 0
    Image.fromarray(mask).save(root / "b_mask.png")
    np.save(root / "d_depth.npy", np.ones((H + 1, W)))
    return root, depth, disp


def test_folder_becomes_ground_truth_revisions_beside_the_labels(tmp_path, folder):
    root, depth, disp = folder
    store = Store(tmp_path / "s.db")
    data = (root / "a.png").read_bytes()
    existing, _ = store.add_image(data, "a.png", width=W, height=H)
    store.add_prediction(existing.id, "teacher", "disparity", np.ones((H, W), np.float32))
    head = store.head(existing.id)
    report = import_ground_truth(store, root, kind="depth", source="lidar", scale=0.001, author="ann")
    assert [n for n, _ in report.imported] == ["a.png", "b.png"] and report.images_added == 2    # b and d are new
    assert report.rejected == [("d.png", report.rejected[0][1])] and "13" in report.rejected[0][1]
    assert store.head(existing.id) == head                                   # the training label is untouched
    gt = store.ground_truth(existing.id)
    assert (gt.source, gt.kind, gt.author) == ("ground_truth:lidar", "metric_depth", "ann")
    values, valid = store.load_label(gt).depth, store.valid_pixels(gt)
    assert not valid[0, 0] and valid.sum() == H * W - 1
    np.testing.assert_allclose(values[valid], (depth * 0.001)[valid], rtol=1e-6)
    again = import_ground_truth(store, root, kind="depth", source="lidar", scale=0.001, author="ann")
    assert (again.imported, len(again.unchanged), again.images_added) == ([], 2, 0)


def test_disparity_with_a_mask(tmp_path, folder):
    root, _, disp = folder
    store = Store(tmp_path / "s.db")
    import_ground_truth(store, root, kind="disparity", source="stereo", author="ann")
    b = next(r for r in store.list_images(sort="name").items if r.name == "b.png")
    gt = store.ground_truth(b.id)
    valid = store.valid_pixels(gt)
    assert gt.kind == "disparity" and not valid[:, :4].any()
    assert np.array_equal(valid[:, 4:], disp[:, 4:] > 0)
    assert store.evidence(b.id).ground_truth == gt and store.head(b.id) is None   # no label yet: none is made


def test_bad_requests_are_one_line_errors(tmp_path, folder):
    store = Store(tmp_path / "s.db")
    with pytest.raises(GroundTruthImportError, match="depth .metres. or disparity"):
        import_ground_truth(store, folder[0], kind="metres", source="x")
    with pytest.raises(GroundTruthImportError, match="no image / ground-truth pairs"):
        import_ground_truth(store, tmp_path, kind="depth", source="x")
    with pytest.raises(GroundTruthImportError, match="source 'two words'"):
        import_ground_truth(store, folder[0], kind="depth", source="two words")
    assert store.list_images().total == 0                                 # refused before anything was added


def test_the_command(tmp_path, folder, capsys):
    db = tmp_path / "s.db"
    code = main(["import-ground-truth", str(folder[0]), "--kind", "depth", "--source", "lidar", "--scale", "0.001",
                 "--db", str(db), "--quiet"])
    out = capsys.readouterr().out
    assert code == 1 and "rejected: d.png" in out and "2 ground truth(s) imported" in out
    assert main(["import-ground-truth", str(tmp_path / "nope"), "--kind", "depth", "--source", "x", "--db",
                 str(db)]) == 2
    assert "is not a folder" in capsys.readouterr().err
