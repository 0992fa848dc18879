"""The depth tab's handlers and the page composition, without a browser or a server."""
from __future__ import annotations

import json
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
from PIL import Image
from services import make_services

from studio import banner, depth_tab
from studio.app import build_app, launch_kwargs
from studio.depth_handlers import DepthHandlers
from studio.depth_tab import example_images
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


def test_predict_returns_the_picture_the_values_and_the_summary_and_show_fills_the_page(handlers, tmp_path, small_rgb):
    path = tmp_path / "scene.png"
    Image.fromarray(small_rgb).save(path)
    color, npy, summary, view = predict(handlers, str(path), cmap="viridis")       # the API's /predict: two files
    assert Path(color).name == "scene_depth_color.png"
    with Image.open(color) as picture:                                      # palette PNG of the map's colours
        assert picture.mode == "P" and np.asarray(picture.convert("RGB")).shape == small_rgb.shape
    arr = np.load(npy)
    assert arr.shape == (60, 80) and summary["min"] == float(arr.min())
    json.dumps(summary)                                       # the API returns it as JSON
    (inp, slid_color), picture, cloud, banner_update, text, legend, downloads, info, pending, mode, zipped, request = \
        handlers.show(view)
    assert np.array_equal(np.asarray(Image.open(inp)).shape, small_rgb.shape)
    assert slid_color == picture == color and request == summary["request"] and zipped is None
    assert Path(cloud).name == "scene_points.ply" and Path(cloud).stat().st_size > 60 * 80 * 12
    assert banner_update["visible"] is False and pending == [] and mode == "points"
    assert "Relative disparity" in text and "80×60" in text and "field of view 60.0°" in text
    assert 'data-grid="' in legend and "80×60 grid, every pixel" in legend
    assert sorted(Path(f).name for f in downloads) == sorted(
        f"scene{s}" for s in ("_input.jpg", "_depth_color.png", "_depth16.png", "_depth.npy", "_points.ply"))


def test_a_failed_prediction_clears_every_output(vitt_service):
    """The failure step empties what predict and show fill, so no earlier result stays beside the error."""
    demo = build_app(make_services(vitt_service), tabs=(depth_tab,))
    config = demo.get_config_file()
    deps = config["dependencies"]
    predict = next(d for d in deps if d.get("api_name") == "predict")
    show = next(d for d in deps if d.get("trigger_after") == predict["id"] and d.get("trigger_only_on_success"))
    failure = next(d for d in deps if d.get("trigger_after") == predict["id"] and d.get("trigger_only_on_failure"))
    assert set(failure["outputs"]) == set(predict["outputs"]) | set(show["outputs"])
    h = DepthHandlers(vitt_service, infer=vitt_service.infer)
    cleared = h.cleared()
    assert len(cleared) == len(failure["outputs"])
    assert cleared[:4] == (None,) * 4 and cleared[4:7] == (None,) * 3        # files, summary, view; slider, picture, cloud
    assert len(h.show(None)) == len(show["outputs"])


def test_clicks_measure_on_the_saved_prediction(metric_service, small_rgb):
    h = DepthHandlers(metric_service, infer=metric_service.infer)
    *_, view = predict(h, small_rgb, focal_px=90)
    first = gr.SelectData(None, {"index": [5, 7], "value": None})
    picture, pending, text = h.click(view, [], first)
    assert pending == [[5, 7]] and "now click point B" in text and picture.shape == (60, 80, 3)
    picture, pending, text = h.click(view, pending, gr.SelectData(None, {"index": [70, 50], "value": None}))
    expected = h.measure(view["request"], 5, 7, 70, 50)["distance_m"]
    assert pending == [[5, 7], [70, 50]] and f"distance {expected:.3f} m" in text
    _, pending, _ = h.click(view, pending, gr.SelectData(None, {"index": [1, 1], "value": None}))
    assert pending == [[1, 1]]                                              # a third click starts over
    with pytest.raises(gr.Error, match="compute depth first"):
        h.click(None, [], first)


def test_relative_clicks_say_why_there_is_no_distance(handlers, small_rgb):
    *_, view = predict(handlers, small_rgb)
    handlers.click(view, [], gr.SelectData(None, {"index": [5, 7], "value": None}))
    _, _, text = handlers.click(view, [[5, 7]], gr.SelectData(None, {"index": [60, 40], "value": None}))
    assert "**No distance:** This is a relative model" in text and "(relative)" in text


def test_recolour_export_and_mesh_view(handlers, small_rgb):
    *_, view = predict(handlers, small_rgb)
    picture, (inp, color), legend, view2, info, pending = handlers.recolour(view, "magma", 0.1, None)
    assert picture == color and "clipped range" in legend and pending == []
    with pytest.raises(gr.Error, match="lower limit below its upper one"):
        handlers.recolour(view, "magma", 5, 1)
    files, zipped = handlers.export(view["request"], ["exr", "normals"], progress=NoProgress())
    names = {Path(f).name for f in files}
    assert {"array_depth.exr", "array_normals.png", "array_normals.npy"} <= names and zipped.endswith("_all.zip")
    assert handlers.cloud_view(view, "mesh", progress=NoProgress()).endswith("array_mesh.glb")
    assert handlers.cloud_view(view, "points") == view["files"]["ply"]
    with pytest.raises(gr.Error, match="compute depth first"):
        handlers.export("", ["exr"], progress=NoProgress())
    with pytest.raises(gr.Error, match="is not a request id"):
        handlers.export("../../etc", ["exr"], progress=NoProgress())


def test_bad_upload_becomes_a_readable_gradio_error(handlers, bad_inputs):
    with pytest.raises(gr.Error) as e:
        predict(handlers, str(bad_inputs["not an image"]))
    assert "notes.txt" in e.value.message and "Traceback" not in e.value.message
    assert e.value.title == "Cannot compute depth"


def test_untrained_result_shows_the_banner(handlers, small_rgb):
    *_, view = predict(handlers, small_rgb)
    view["summary"].update(notice="Weights for X are missing: it runs untrained.\n\nWhy\n\nHow", untrained=True)
    _, _, _, banner_update, text, *_ = handlers.show(view)
    assert banner_update["visible"] is True and "Weights for X are missing" in banner_update["value"]
    assert text.startswith("**UNTRAINED weights")


def test_model_info_names_the_licence_and_missing_weights(settings, vitt_checkpoint, monkeypatch, tmp_path):
    import huggingface_hub.constants as hc

    from pipeline.services.depth_models import registry_choices
    from pipeline.services.depth_service import DepthService
    monkeypatch.setattr(hc, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    service = DepthService(settings, sources=[registry_choices], default=str(vitt_checkpoint))
    h = DepthHandlers(service, infer=service.infer)
    text = h.model_info("depth-anything-v2-base")
    assert "licence: **CC-BY-NC-4.0**" in text and "Depth-Anything-V2-Base" in text
    assert "**Weights missing (not cached, and the Hub is offline (HF_HUB_OFFLINE is set)): this model would run " \
           "untrained.**" in text
    assert "Weights missing" not in h.model_info(f"file:{vitt_checkpoint.name}")
    assert "unknown model" in h.model_info("nope")


def test_inspect_prefills_the_exif_focal(handlers, tmp_path, small_rgb):
    from pipeline.files.image_io import decode_image
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
    demo = build_app(make_services(vitt_service))
    api = demo.get_api_info()["named_endpoints"]
    assert {"/predict", "/model_info", "/inspect"} <= set(api)
    params = [p["parameter_name"] for p in api["/predict"]["parameters"]]
    assert params == ["image", "model", "input_size", "cmap", "focal_px", "voxel_size", "remove_outliers",
                      "vmin", "vmax"]                            # new ones last, with defaults: old calls still work
    assert [r["label"] for r in api["/predict"]["returns"]] == ["colour depth picture (.png)", "float32 .npy", "Summary"]
    assert [p["parameter_name"] for p in api["/export"]["parameters"]] == ["request", "formats"]
    assert [p["parameter_name"] for p in api["/measure"]["parameters"]] == ["request", "ax", "ay", "bx", "by"]
    assert {"/predict_batch", "/predict_video"} <= set(api)
    predict_fn = next(f for f in demo.fns.values() if f.api_name == "predict")
    assert predict_fn.concurrency_id == "gpu"


def test_the_page_is_its_tab_modules_in_order_and_every_service_is_required(vitt_service):
    from studio import app, curate_tab, train_tab
    assert app.TABS == (depth_tab, curate_tab, train_tab)          # module objects: a broken tab fails the import
    services = make_services(vitt_service)
    with pytest.raises(AttributeError):
        services.depth = None                                      # frozen: what a tab gets is what app.py built
    assert services.settings is vitt_service.settings
    with pytest.raises(TypeError, match="missing: curation, training"):
        app.Services(depth=vitt_service, curation=None, training=None)
    with pytest.raises(TypeError):
        app.Services(depth=vitt_service)                           # no defaults: every field is named
    demo = build_app(services)
    tabs = [b.label for b in demo.blocks.values() if isinstance(b, gr.Tab) and b.parent.parent is demo]
    assert tabs == ["Depth", "Curate", "Train"]
    api = demo.get_api_info()["named_endpoints"]
    assert {"/predict", "/curate_open", "/train_start"} <= set(api)


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


def test_banner_is_one_line_with_a_details_fold():
    assert banner.banner_html(None) == ""
    html = banner.banner_html("a <b> c\n\nsecond\n\nthird")
    assert '<span class="studio-warning-line">a &lt;b&gt; c</span>' in html
    assert html.count("<details>") == 1 and html.count("<p>") == 2 and html.index("second") > html.index("<details>")
    assert "<details>" not in banner.banner_html("only a line")


def test_summary_text_for_metric_depth():
    s = {"kind": "metric_depth", "unit": "m", "min": 0.5, "max": 12.25, "width": 640, "height": 480,
         "model_title": "M", "device": "cpu", "backend": "openvino", "input_size": 518, "points": 1234, "focal_px": 500.0,
         "focal_source": "exif", "timings_ms": {"inference": 900.0, "total": 1000.0}, "untrained": False}
    s.update(point_stride=2, fov_deg={"horizontal_deg": 65.2, "vertical_deg": 51.3})
    text = format_summary(s)
    assert "Depth in metres**: 0.5 to 12.25 m" in text and "1,234 points (every 2nd pixel" in text
    assert "focal 500.0 px (exif), field of view 65.2° × 51.3°" in text
    assert "inference 900 ms · total 1000 ms" in text
    assert "device **cpu** · backend **openvino**" in text


def test_unknown_model_over_the_api_names_the_choices(handlers, small_rgb):
    with pytest.raises(gr.Error, match="unknown model 'v9-huge'; choose one of: file:"):
        predict(handlers, small_rgb, model="v9-huge")


def test_refreshing_the_picker_lists_new_choices(settings, vitt_checkpoint):
    from pipeline.services.depth_models import ModelChoice
    from pipeline.services.depth_service import DepthService
    extra = []
    service = DepthService(settings, sources=[lambda: list(extra)], default=str(vitt_checkpoint))
    h = DepthHandlers(service, infer=service.infer)
    extra.append(ModelChoice("trained:7", "student", "Apache-2.0", str(vitt_checkpoint), "trained"))
    update = h.refresh_models("trained:7")
    assert ("student (Apache-2.0)", "trained:7") in update["choices"] and update["value"] == "trained:7"
