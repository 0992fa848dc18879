"""pipeline.services.depth_batch and the studio's batch panel: several images, a gallery, one zip; bad files skipped."""
from __future__ import annotations

import zipfile

import numpy as np
import pytest
from PIL import Image

from pipeline.errors import ConfigError, ImageError
from pipeline.services.depth_batch import run_batch


@pytest.fixture
def images(tmp_path, small_rgb, bad_inputs):
    (tmp_path / "a").mkdir()
    paths = [tmp_path / "scene.png", tmp_path / "a" / "scene.jpg", bad_inputs["not an image"], tmp_path / "flip.png"]
    Image.fromarray(small_rgb).save(paths[0])
    Image.fromarray(small_rgb[::-1]).save(paths[1], quality=95)
    Image.fromarray(np.ascontiguousarray(small_rgb[:, ::-1])).save(paths[3])
    return paths


def test_batch_writes_every_good_image_and_reports_the_bad_one(vitt_service, images):
    result = run_batch(vitt_service, [str(p) for p in images], input_size=70, cmap="magma")
    assert [i.name for i in result.items] == ["scene.png", "scene.jpg", "flip.png"]
    assert len(result.failures) == 1 and result.failures[0].startswith("notes.txt: ")
    single = vitt_service.run(str(images[3]), input_size=70)
    flip = result.items[2]
    assert np.array_equal(np.load(flip.files[0]), single.array)                   # the same prediction as /predict
    assert (flip.min, flip.max) == (float(single.array.min()), float(single.array.max()))
    with zipfile.ZipFile(result.zip_path) as z:
        names = sorted(z.namelist())
    assert names == sorted(f"{stem}{s}" for stem in ("scene", "scene_2", "flip")
                           for s in ("_depth.npy", "_depth16.png", "_depth_color.png"))
    assert result.summary["images"] == 3 and result.summary["kind"] == "disparity"


def test_batch_limits_and_empty_input(vitt_service, images):
    with pytest.raises(ImageError, match="no images given"):
        run_batch(vitt_service, [])
    small = vitt_service.settings.with_overrides(max_batch_images=2)
    vitt_service.settings = small
    with pytest.raises(ConfigError, match="4 images is more than the 2 a batch takes"):
        run_batch(vitt_service, images)


def test_batch_panel_returns_gallery_zip_and_report(vitt_service, images):
    from studio.depth_batch import BatchHandlers

    class NoProgress:
        def __call__(self, *a, **k):
            pass
    h = BatchHandlers(vitt_service, infer=vitt_service.infer)
    gallery, zipped, report = h.run([str(p) for p in images], None, 70, "viridis", progress=NoProgress())
    assert len(gallery) == 3 and gallery[0][1].startswith("scene.png: ") and gallery[0][1].endswith("(relative)")
    assert zipped.endswith("depth_batch.zip") and "**3 image(s)**" in report and "1 skipped" in report
