"""The depth tab's handlers and the page composition, without a browser or a server."""
from __future__ import annotations

import json
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
from PIL import Image

from studio import banner
from studio.app import Services, build_app, launch_kwargs, tab_modules
from studio.depth_tab import DepthHandlers, example_images
from studio.summary import format_summary


class NoProgress:
    def __call__(self, *a, **k):
        pass


@pytest.fixture
def handlers(vitt_service):
    return DepthHandlers(vitt_service, infer=vitt_service.infer)


def predict(handlers, image, **kw):
    args = dict(model=None, input_size=70, cmap="Spectral_r", focal_px=0, voxel_size=0, remove_outliers=False)
    args.update(kw)
    return handlers.predict(image, *args.values(), progress=NoProgress())


def test_predict_returns_slider_pair_files_and_summary(handlers, tmp_path, small_rgb):
    path = tmp_path / "scene.png"
    Image.fromarray(small_rgb).save(path)
    (inp, color), png16, npy, ply, summary, view = predict(handlers, str(path), cmap="viridis")
    assert np.array_equal(np.asarray(Image.open(inp)).shape, small_rgb.shape)
    assert Path(color).name == "scene_depth_color.png" and Path(png16).name == "scene_depth16.png"
    arr = np.load(npy)
    assert arr.shape == (60, 80) and summary["min"] == float(arr.min())
    assert Path(ply).stat().st_size > 60 * 80 * 12
    json.dumps(summary)                                       # the API returns it as JSON
    gray, color2, cloud, banner_update, text = handlers.show(view)
    assert color2 == color and cloud == ply and Path(gray).exists()
    assert banner_update["visible"] is False
    assert "Relative disparity" in text and "80×60" in text


def test_bad_upload_becomes_a_readable_gradio_error(handlers, bad_inputs):
    with pytest.raises(gr.Error) as e:
        predict(handlers, str(bad_inputs["not an image"]))
    assert "notes.txt" in e.value.message and "Traceback" not in e.value.message
    assert e.value.title == "Cannot compute depth"


def test_untrained_result_shows_the_banner(handlers):
    view = {"files": dict.fromkeys(("gray", "color", "ply"), "x"),
            "summary": {"notice": "Weights for X are missing", "untrained": True, "min": 0, "max": 1,
                        "width": 2, "height": 2}}
    *_, banner_update, text = handlers.show(view)
    assert banner_update["visible"] is True and "Weights for X are missing" in banner_update["value"]
    assert text.startswith("**UNTRAINED weights")


def test_model_info_names_the_licence(settings, vitt_checkpoint):
    from pipeline.depth_service import DepthService, registry_choices
    service = DepthService(settings, sources=[registry_choices], default=str(vitt_checkpoint))
    h = DepthHandlers(service, infer=service.infer)
    assert "licence: **CC-BY-NC-4.0**" in h.model_info("depth-anything-v2-base")
    assert "Depth-Anything-V2-Base" in h.model_info("depth-anything-v2-base")
    assert "unknown model" in h.model_info("nope")


def test_inspect_prefills_the_exif_focal(handlers, tmp_path, small_rgb):
    from pipeline.image_io import decode_image
    exif = Image.Exif()
    exif.get_ifd(0x8769)[0xA405] = 50                       # FocalLengthIn35mmFilm = 50 mm
    path = tmp_path / "camera.jpg"
    Image.fromarray(small_rgb).save(path, exif=exif.tobytes())
    expected = decode_image(path).focal_px
    assert expected and expected > 0
    focal, text = handlers.inspect(str(path))
    assert focal == round(expected, 2) and "EXIF focal length" in text
    assert handlers.inspect(None) == (0, "")
    focal, text = handlers.inspect(str(tmp_path / "missing.png"))
    assert focal == 0 and text.startswith("**Cannot use this image:**")


def test_page_has_named_endpoints_and_the_banner(vitt_service):
    demo = build_app(Services(settings=vitt_service.settings, depth=vitt_service))
    api = demo.get_api_info()["named_endpoints"]
    assert {"/predict", "/model_info", "/inspect"} <= set(api)
    params = [p["parameter_name"] for p in api["/predict"]["parameters"]]
    assert params == ["image", "model", "input_size", "cmap", "focal_px", "voxel_size", "remove_outliers"]
    assert len(api["/predict"]["returns"]) == 5                # slider, 16-bit PNG, .npy, .ply, summary
    predict_fn = next(f for f in demo.fns.values() if f.api_name == "predict")
    assert predict_fn.concurrency_id == "gpu"


def test_tabs_compose_from_modules_and_skip_absent_ones(vitt_service):
    names = [m.TITLE for m in tab_modules(("depth_tab", "no_such_tab"))]
    assert names == ["Depth"]
    demo = build_app(Services(settings=vitt_service.settings), tabs=("depth_tab",))   # no depth service
    assert "/predict" not in demo.get_api_info()["named_endpoints"]


def test_launch_serves_only_page_outputs_and_caps_uploads(settings):
    kw = launch_kwargs(settings.with_overrides(max_upload_mb=3))
    data = settings.data_dir.resolve()
    assert kw["allowed_paths"] == [str(data / "tmp"), str(data / "curate"), str(data / "exports")]
    assert str(settings.database.resolve()) in kw["blocked_paths"]
    assert str(data / "runs") in kw["blocked_paths"]
    assert kw["max_file_size"] == 3 * 1024 * 1024
    assert "studio-warning" in kw["css"]


def test_examples_ship_with_their_licences():
    examples = example_images()
    assert len(examples) >= 3
    licences = (Path(examples[0]).parent / "LICENSES.md").read_text()
    for e in examples:
        assert Path(e).name in licences
        assert Image.open(e).size[0] >= 300


def test_banner_escapes_html_and_hides_when_empty():
    assert banner.banner_html(None) == ""
    html = banner.banner_html("a <b> c\n\nsecond")
    assert "&lt;b&gt;" in html and html.count("<p>") == 2


def test_summary_text_for_metric_depth():
    s = {"kind": "metric_depth", "unit": "m", "min": 0.5, "max": 12.25, "width": 640, "height": 480,
         "model_title": "M", "device": "cpu", "backend": "openvino", "input_size": 518, "points": 1234, "focal_px": 500.0,
         "focal_source": "exif", "timings_ms": {"inference": 900.0, "total": 1000.0}, "untrained": False}
    text = format_summary(s)
    assert "Depth in metres**: 0.5 to 12.25 m" in text and "1,234 points" in text
    assert "inference 900 ms · total 1000 ms" in text
    assert "device **cpu** · backend **openvino**" in text


def test_unknown_model_over_the_api_names_the_choices(handlers, small_rgb):
    with pytest.raises(gr.Error, match="unknown model 'v9-huge'; choose one of: file:"):
        predict(handlers, small_rgb, model="v9-huge")


def test_refreshing_the_picker_lists_new_choices(settings, vitt_checkpoint):
    from pipeline.depth_service import DepthService, ModelChoice
    extra = []
    service = DepthService(settings, sources=[lambda: list(extra)], default=str(vitt_checkpoint))
    h = DepthHandlers(service, infer=service.infer)
    extra.append(ModelChoice("trained:7", "student", "Apache-2.0", str(vitt_checkpoint), "trained"))
    update = h.refresh_models("trained:7")
    assert ("student (Apache-2.0)", "trained:7") in update["choices"] and update["value"] == "trained:7"
