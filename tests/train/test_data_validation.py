"""Issue 12: an image the network cannot take (a 2000x8 strip) is dropped at data validation, before the run
starts, and listed with its reason in the run's log and its checkpoint's data summary, instead of failing the
job mid-run."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from train_helpers import one_thread, scenes_dir_fixture, tiny_config  # noqa: F401

from pipeline.errors import ImageError
from pipeline.train.augment import Sample, check_trainable, resize_short_side
from pipeline.train.data import folder_items, validate_items
from pipeline.train.errors import TrainDataError
from pipeline.train.recipe import gather_items, train
from pipeline.weights.loading import project_metadata


def _with_strip(scenes_dir, tmp_path, h=8, w=2000):
    data = tmp_path / "data"
    shutil.copytree(scenes_dir, data)
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(data / "strip.png")
    np.save(data / "strip.npy", np.full((h, w), 3.0, np.float32))
    return data


def test_the_strip_would_fail_the_training_resize_and_check_trainable_says_so_first():
    """Without the check, the run's own resize refuses the strip when the sampler first draws it."""
    strip = Sample(torch.zeros(3, 8, 2000), torch.ones(8, 2000), torch.ones(8, 2000, dtype=torch.bool))
    with pytest.raises(ImageError, match="network input"):
        resize_short_side(strip, 518)
    with pytest.raises(ImageError, match="2000×8"):
        check_trainable(8, 2000, 518)
    with pytest.raises(ImageError, match="250:1"):                    # at a small crop: the aspect bound
        check_trainable(8, 2000, 28)
    check_trainable(48, 48, 518)                                       # ordinary images pass
    check_trainable(400, 6000, 518)                                    # a 15:1 panorama still trains


def test_validation_drops_the_strip_with_its_reason(tmp_path, scenes_dir):
    data = _with_strip(scenes_dir, tmp_path)
    dropped: list[dict] = []
    items = gather_items(tiny_config(tmp_path / "run", data), dropped)
    assert sorted(it.image_id for it in items) == sorted(p.stem for p in scenes_dir.glob("*.png"))
    assert [(d["image_id"], d["source"]) for d in dropped] == [("strip", "folder")]
    assert "2000×8" in dropped[0]["reason"] and "crop it into pieces" in dropped[0]["reason"]
    # the size comes from the file header: the strip's image is never decoded to decide
    strip = next(it for it in folder_items(data) if it.image_id == "strip")
    strip.load = lambda: pytest.fail("decoded the strip")
    assert validate_items([strip, *items], input_size=28, dropped=[]) == items
    with pytest.raises(TrainDataError, match="only 0 usable training images.*2000×8"):
        validate_items([strip], input_size=28)


def test_a_run_with_a_strip_trains_on_the_rest_and_lists_it(tmp_path, scenes_dir, one_thread):  # noqa: F811
    data = _with_strip(scenes_dir, tmp_path)
    lines: list[str] = []
    result = train(tiny_config(tmp_path / "run", data, steps=2, save_every=2), log=lines.append)
    assert result.status == "finished" and result.step == 2
    note = [ln for ln in lines if ln.startswith("left out of training")]
    assert len(note) == 1 and "folder image strip" in note[0] and "2000×8" in note[0]
    snapshot = project_metadata(result.checkpoint)["meta"]["data"]
    assert snapshot["count"] == 8 and "strip" not in {r["image_id"] for r in snapshot["items"]}
    assert [d["image_id"] for d in snapshot["dropped"]] == ["strip"] and "2000×8" in snapshot["dropped"][0]["reason"]
