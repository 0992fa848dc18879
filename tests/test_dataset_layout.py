"""pipeline.files.dataset_layout: one owner of the image / ground-truth folder layout, used by both
training (pipeline.train.data) and evaluation (pipeline.evaluation.protocol)."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from pipeline.evaluation import data as ed
from pipeline.files import dataset_layout as layout
from pipeline.files.depth_png import write_depth_png
from pipeline.train import data as train_data

H, W = 6, 8


def _rgb(path):
    Image.fromarray(np.full((H, W, 3), 100, np.uint8)).save(path)


def _depth(k: float) -> np.ndarray:
    return (np.arange(H * W, dtype=np.float64).reshape(H, W) + 1.0) * k      # distinct per image


@pytest.fixture
def mixed(tmp_path):
    """Every documented layout in one folder; GT values differ per image so a wrong pair shows."""
    root, img = tmp_path / "data", tmp_path / "data" / "images"
    for d in ("images", "gt", "depth"):
        (root / d).mkdir(parents=True)
    gt_files = {                                            # image -> (ground-truth file, writer)
        "a.png": (root / "gt" / "a.npy", np.save),                                  # sibling gt/ folder
        "b.jpg": (img / "b_depth.npy", np.save),                                    # _depth suffix
        "c.jpg": (img / "c.png", lambda p, d: Image.fromarray((d * 10).astype(np.uint16)).save(p)),  # raw 16-bit
        "d.webp": (img / "d_gt.npy", np.save),                                      # _gt suffix
        "e.png": (root / "depth" / "e.png", lambda p, d: write_depth_png(p, d.astype(np.float32))),  # calibrated
        "f.png": (img / "f.npy", np.save),                                          # same stem .npy
        "g.png": (img / "gt" / "g.npy", np.save),                                   # gt/ inside the folder
    }
    (img / "gt").mkdir()
    for k, (name, (path, write)) in enumerate(gt_files.items(), 1):
        _rgb(img / name)
        write(path, _depth(k))
    _rgb(img / "h.png")                                                             # no ground truth
    Image.fromarray(np.full((H, W), 255, np.uint8)).save(img / "b_mask.png")
    return root


EXPECTED = {"a": 1, "b": 2, "c": 30, "d": 4, "e": 5, "f": 6, "g": 7}


def test_training_and_evaluation_find_the_same_pairs(mixed):
    train = {it.image_id: it for it in train_data.folder_items(mixed, gt_kind="depth")}
    evals = {it.name.split("/")[-1]: it for it in ed.find_items(mixed) if it.load_gt is not None}
    assert sorted(train) == sorted(evals) == sorted(EXPECTED)
    assert sorted(ed.find_items(mixed), key=lambda i: i.name)[-1].name == "images/h"   # h: evaluated, no GT
    for stem, k in EXPECTED.items():
        gt = evals[stem].load_gt()
        np.testing.assert_allclose(gt, _depth(k), rtol=1e-3, err_msg=stem)
        label = train[stem].load().label.numpy()
        np.testing.assert_allclose(label, train_data.depth_to_disparity(gt), rtol=1e-5, err_msg=stem)
    pairs = [(i.stem, g.name) for i, g in layout.image_ground_truth_pairs(mixed)]
    assert pairs == [("a", "a.npy"), ("b", "b_depth.npy"), ("c", "c.png"), ("d", "d_gt.npy"),
                     ("e", "e.png"), ("f", "f.npy"), ("g", "g.npy")]


def test_image_files_leave_out_labels_and_the_png_ground_truth_of_a_jpeg(mixed):
    names = [p.name for p in layout.image_files(mixed)]
    assert names == ["a.png", "b.jpg", "c.jpg", "d.webp", "e.png", "f.png", "g.png", "h.png"]
    assert layout.is_label_file(mixed / "images" / "b_mask.png") and layout.is_label_file(mixed / "gt" / "a.npy")
    assert layout.find_mask(mixed / "images" / "b.jpg").name == "b_mask.png"
    assert layout.find_ground_truth(mixed / "images" / "h.png") is None           # a PNG is not its own GT


def test_npy_nan_inf_and_zero_are_invalid(tmp_path):
    np.save(tmp_path / "x.npy", np.array([[np.nan, np.inf], [0.0, 2.5]]))
    gt = layout.read_ground_truth(tmp_path / "x.npy")
    assert gt.valid.tolist() == [[False, False], [False, True]]
    assert np.isnan(gt.values[~gt.valid]).all() and gt.values[1, 1] == 2.5


def test_png_calibrated_round_trip_and_raw_codes_with_zero_invalid(tmp_path):
    depth = np.array([[1.5, np.nan], [3.25, 7.0]], np.float32)
    write_depth_png(tmp_path / "ours.png", depth)
    ours = layout.read_ground_truth(tmp_path / "ours.png")
    assert ours.valid.tolist() == [[True, False], [True, True]]
    np.testing.assert_allclose(ours.values[ours.valid], depth[np.isfinite(depth)], rtol=1e-3)
    Image.fromarray(np.array([[0, 1000], [2500, 65535]], np.uint16)).save(tmp_path / "raw.png")
    raw = layout.read_ground_truth(tmp_path / "raw.png")
    assert raw.valid.tolist() == [[False, True], [True, True]] and raw.values[1, 1] == 65535


def test_unreadable_files_are_clear_errors_naming_the_file(tmp_path):
    np.save(tmp_path / "evil.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    np.save(tmp_path / "rgb.npy", np.zeros((2, 2, 3)))
    (tmp_path / "bad.png").write_bytes(b"not a png")
    for name in ("evil.npy", "rgb.npy", "bad.png"):
        with pytest.raises(layout.GroundTruthFileError, match=name):
            layout.read_ground_truth(tmp_path / name)
    with pytest.raises(train_data.TrainDataError, match="evil.npy"):
        train_data.read_ground_truth(tmp_path / "evil.npy")


def test_training_uses_the_mask_file_like_evaluation(tmp_path):
    _rgb(tmp_path / "a.jpg")
    np.save(tmp_path / "a.npy", _depth(1))
    keep = np.zeros((H, W), np.uint8)
    keep[:, : W // 2] = 255
    Image.fromarray(keep).save(tmp_path / "a_mask.png")
    (item,) = train_data.folder_items(tmp_path)
    sample = item.load()
    assert np.isfinite(sample.label.numpy()).tolist() == (keep > 0).tolist()
    assert sample.mask.numpy().tolist() == (keep > 0).tolist()
    (ev_item,) = ed.find_items(tmp_path)
    assert ev_item.load_mask().tolist() == (keep > 0).tolist()
